//! `{{ key }}` templates: the only syntax is a placeholder, and every placeholder must name a
//! known variable, so a typo fails the hook instead of writing a broken config file.

use std::collections::BTreeMap;
use std::fmt;

/// Why a template could not be rendered; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A placeholder names a variable the context does not have.
    UnknownKey { key: String, line: usize },
    /// `{{` without a closing `}}` on the same line.
    Unclosed { line: usize },
    /// `{{ }}` with no key inside.
    EmptyKey { line: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::UnknownKey { key, line } => {
                write!(f, "line {line}: unknown template variable `{key}`")
            }
            TemplateError::Unclosed { line } => write!(f, "line {line}: `{{{{` without `}}}}`"),
            TemplateError::EmptyKey { line } => write!(f, "line {line}: empty `{{{{ }}}}`"),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Replaces every `{{ key }}` in `template` with `vars[key]`.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for (index, line) in template.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(TemplateError::Unclosed { line: line_no })?;
            let key = after[..end].trim();
            if key.is_empty() {
                return Err(TemplateError::EmptyKey { line: line_no });
            }
            let value = vars.get(key).ok_or_else(|| TemplateError::UnknownKey {
                key: key.to_string(),
                line: line_no,
            })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replaces_placeholders_with_and_without_spaces() {
        let v = vars(&[("a", "1"), ("b.c", "two")]);
        let got = render("x={{a}} y={{ b.c }}\nz={{  a  }}{{a}}\n", &v).unwrap();
        assert_eq!(got, "x=1 y=two\nz=11\n");
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let text = "plain } text { with braces\nand no final newline";
        assert_eq!(render(text, &BTreeMap::new()).unwrap(), text);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = render("ok\nport={{ port.http.private }}\n", &vars(&[])).unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownKey {
                key: "port.http.private".into(),
                line: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "line 2: unknown template variable `port.http.private`"
        );
    }

    #[test]
    fn unclosed_and_empty_placeholders_are_errors() {
        assert_eq!(
            render("a\nb\n{{ x\n}}", &vars(&[("x", "1")])).unwrap_err(),
            TemplateError::Unclosed { line: 3 }
        );
        assert_eq!(
            render("{{ }}", &BTreeMap::new()).unwrap_err(),
            TemplateError::EmptyKey { line: 1 }
        );
    }

    #[test]
    fn values_are_not_re_expanded() {
        let v = vars(&[("a", "{{b}}"), ("b", "no")]);
        assert_eq!(render("{{a}}", &v).unwrap(), "{{b}}");
    }
}
