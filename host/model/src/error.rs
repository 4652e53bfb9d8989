//! Errors in a deployment file, each located at `file:line:column` of the offending value.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a deployment file. Line and column are 1-based; the column counts
/// characters, not bytes, so editors land on the right spot in non-ASCII lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file as the caller named it (not canonicalized), so messages stay short and stable.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl SpecError {
    /// An error at byte offset `span.start` of `text`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, span.start);
        SpecError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A TOML syntax or shape error of `text`, where the parser found it.
    pub fn from_toml(file: &Path, text: &str, e: &toml::de::Error) -> Self {
        SpecError::at(file, text, e.span().unwrap_or(0..0), e.message().trim_end())
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in a deployment file, in file order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// Sorts by position so that output reads top to bottom and snapshots are stable.
    pub(crate) fn sorted(mut errors: Vec<SpecError>) -> SpecErrors {
        errors.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
        errors.dedup();
        SpecErrors(errors)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> SpecErrors {
        SpecErrors(vec![e])
    }
}

impl IntoIterator for SpecErrors {
    type Item = SpecError;
    type IntoIter = std::vec::IntoIter<SpecError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a SpecError;
    type IntoIter = std::slice::Iter<'a, SpecError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One error per line, as a compiler prints them.
impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\ncdé f\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        // `é` is two bytes; `f` is the 5th character of line 2.
        assert_eq!(line_column(text, 8), (2, 5));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn display_is_file_line_column_message() {
        let e = SpecError::at(Path::new("d.toml"), "x\n  y", 4..5, "expected z");
        assert_eq!(e.to_string(), "d.toml:2:3: expected z");
        let all = SpecErrors::sorted(vec![
            e.clone(),
            SpecError {
                line: 1,
                ..e.clone()
            },
        ]);
        assert_eq!(
            all.to_string(),
            "d.toml:1:3: expected z\nd.toml:2:3: expected z"
        );
    }
}
