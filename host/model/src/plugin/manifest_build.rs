//! `[build]` in `plugin.toml`: which language a package is written in and which source file
//! `stratus plugin build` hands to that language's component tool. The agent never reads it;
//! it only says how `plugin.wasm` is made.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

/// The `[build]` table; absent means a Rust package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    #[serde(default)]
    pub language: Language,
    /// The source module, relative to the package (Python and JavaScript only).
    pub entry: Option<String>,
}

/// The languages `stratus plugin build` knows how to componentize.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// `cargo build --target wasm32-wasip2` of the package's crate.
    #[default]
    Rust,
    /// componentize-py over the module `entry` (default `app.py`).
    Python,
    /// componentize-js over the ES module `entry` (default `plugin.js`).
    Javascript,
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Javascript => "javascript",
        })
    }
}

impl Language {
    /// The entry a package of this language uses when `[build]` names none.
    pub fn default_entry(self) -> Option<&'static str> {
        match self {
            Language::Rust => None,
            Language::Python => Some("app.py"),
            Language::Javascript => Some("plugin.js"),
        }
    }

    /// The file name endings an entry of this language may have.
    fn entry_suffixes(self) -> &'static [&'static str] {
        match self {
            Language::Rust => &[],
            Language::Python => &[".py"],
            Language::Javascript => &[".js", ".mjs"],
        }
    }
}

impl Build {
    /// The entry module, the language's default when the manifest names none; `None` for Rust.
    pub fn entry(&self) -> Option<&str> {
        self.entry
            .as_deref()
            .or_else(|| self.language.default_entry())
    }

    /// Refuses an entry that a Rust package has no use for, or that is not a relative file of
    /// the language's kind inside the package.
    pub(super) fn validate(&self) -> Result<(), String> {
        let Some(entry) = &self.entry else {
            return Ok(());
        };
        if self.language == Language::Rust {
            return Err(format!(
                "build.entry `{entry}` is only for python and javascript packages; a rust \
                 package is built from its Cargo.toml"
            ));
        }
        let path = Path::new(entry);
        if entry.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!(
                "build.entry `{entry}` must be a relative path inside the package"
            ));
        }
        let suffixes = self.language.entry_suffixes();
        if !suffixes.iter().any(|s| entry.ends_with(s)) {
            return Err(format!(
                "build.entry `{entry}` of a {} package must end in {}",
                self.language,
                suffixes.join(" or ")
            ));
        }
        if self.language == Language::Python {
            python_module(path)?;
        }
        Ok(())
    }
}

/// The module name componentize-py imports for a `.py` entry: its file stem, which must be a
/// plain identifier (componentize-py takes a module name, not a path).
pub fn python_module(entry: &Path) -> Result<&str, String> {
    let stem = entry.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let identifier = stem
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier {
        Ok(stem)
    } else {
        Err(format!(
            "build.entry `{}` must name a Python module: letters, digits and `_`, not starting \
             with a digit",
            entry.display()
        ))
    }
}
