//! `{{ key }}` templates: the only syntax is a placeholder, and every placeholder must name a
//! known variable, so a typo fails the hook instead of writing a broken config file. The host
//! renders them for plugins of every language (`render-template` in `wit/host.wit`), so the
//! rules and the error texts are the same everywhere.

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
    /// The rendered text would exceed `limit` bytes (a hostile template can repeat a long
    /// value many times).
    TooLarge { limit: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::UnknownKey { key, line } => {
                write!(f, "line {line}: unknown template variable `{key}`")
            }
            TemplateError::Unclosed { line } => write!(f, "line {line}: `{{{{` without `}}}}`"),
            TemplateError::EmptyKey { line } => write!(f, "line {line}: empty `{{{{ }}}}`"),
            TemplateError::TooLarge { limit } => {
                write!(f, "the rendered text exceeds {limit} bytes")
            }
        }
    }
}

impl std::error::Error for TemplateError {}

/// How values are escaped as they are inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Escaping {
    /// As they are.
    #[default]
    None,
    /// For a TOML basic string: `\\`, `"` and control characters escaped.
    TomlString,
    /// For a JSON string: `\\`, `"` and control characters escaped.
    JsonString,
}

impl Escaping {
    /// `value` escaped for its destination.
    pub fn apply(self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        self.append(&mut out, value, usize::MAX)
            .expect("no limit to exceed");
        out
    }

    /// Appends `value`, escaped, to `out`, stopping as soon as `out` would exceed `limit`
    /// bytes: the work is bounded by the limit, not by the value (escaping can make a value
    /// six times longer).
    fn append(self, out: &mut String, value: &str, limit: usize) -> Result<(), TemplateError> {
        let too_large = TemplateError::TooLarge { limit };
        let is_special = |c: char| c == '\\' || c == '"' || c.is_control();
        if self == Escaping::None || !value.contains(is_special) {
            if out.len() + value.len() > limit {
                return Err(too_large);
            }
            out.push_str(value);
            return Ok(());
        }
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                // JSON allows DEL as it is; TOML does not, so it is escaped for both.
                c if c.is_control() => {
                    use std::fmt::Write;
                    let _ = write!(out, "\\u{:04X}", c as u32);
                }
                c => out.push(c),
            }
            if out.len() > limit {
                return Err(too_large);
            }
        }
        Ok(())
    }
}

/// Replaces every `{{ key }}` in `template` with `vars[key]`.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    render_bounded(template, vars, usize::MAX)
}

/// [`render`], refusing to produce more than `limit` bytes.
pub fn render_bounded(
    template: &str,
    vars: &BTreeMap<String, String>,
    limit: usize,
) -> Result<String, TemplateError> {
    render_escaped(template, vars, Escaping::None, limit)
}

/// [`render_bounded`], escaping every inserted value with `escaping`.
pub fn render_escaped(
    template: &str,
    vars: &BTreeMap<String, String>,
    escaping: Escaping,
    limit: usize,
) -> Result<String, TemplateError> {
    let too_large = TemplateError::TooLarge { limit };
    if template.len() > limit {
        return Err(too_large);
    }
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
            escaping.append(&mut out, value, limit)?;
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if out.len() > limit {
        return Err(too_large);
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
    fn values_are_escaped_for_toml_and_json_strings() {
        let v = vars(&[("a", "q\"b\\c\nd\u{1}e\u{7f}é")]);
        let render = |e| render_escaped("x = \"{{a}}\"", &v, e, usize::MAX).unwrap();
        assert_eq!(render(Escaping::None), "x = \"q\"b\\c\nd\u{1}e\u{7f}é\"");
        let escaped = "x = \"q\\\"b\\\\c\\nd\\u0001e\\u007Fé\"";
        assert_eq!(render(Escaping::TomlString), escaped);
        assert_eq!(render(Escaping::JsonString), escaped);
        let toml: toml::Value = toml::from_str(&render(Escaping::TomlString)).unwrap();
        assert_eq!(toml["x"].as_str(), Some("q\"b\\c\nd\u{1}e\u{7f}é"));
        let json: serde_json::Value = serde_json::from_str(&format!(
            "{{{}}}",
            render(Escaping::JsonString).replace("x =", "\"x\":")
        ))
        .unwrap();
        assert_eq!(json["x"].as_str(), Some("q\"b\\c\nd\u{1}e\u{7f}é"));
    }

    #[test]
    fn output_over_the_limit_is_refused() {
        let v = vars(&[("a", "0123456789")]);
        assert_eq!(render_bounded("{{a}}{{a}}", &v, 20).unwrap().len(), 20);
        let err = render_bounded("{{a}}{{a}}{{a}}", &v, 20).unwrap_err();
        assert_eq!(err, TemplateError::TooLarge { limit: 20 });
        assert_eq!(err.to_string(), "the rendered text exceeds 20 bytes");
    }

    #[test]
    fn values_are_not_re_expanded() {
        let v = vars(&[("a", "{{b}}"), ("b", "no")]);
        assert_eq!(render("{{a}}", &v).unwrap(), "{{b}}");
    }
}
