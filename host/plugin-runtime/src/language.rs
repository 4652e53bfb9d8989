//! Which language a component was written in, read from its bytes: the `producers` custom
//! sections its tools leave (ComponentizeJS names itself and JavaScript; rustc, or in a
//! stripped build wit-bindgen-rust, names Rust) and, for componentize-py, whose sections name
//! only the tools it ran, the Python runtime library its core modules import from. Only shown
//! to people (progress lines), never trusted.

use stratus_model::plugin::manifest::Language;
use wasmparser::{Imports, KnownCustom, Parser, Payload};

/// The core-module import prefix of componentize-py's runtime (`libcomponentize_py_runtime.so`).
const PYTHON_RUNTIME: &str = "libcomponentize_py_runtime";

/// What the component's sections say about its language, or `None` when they say nothing
/// known (or the bytes are not WebAssembly).
pub fn language_of(bytes: &[u8]) -> Option<Language> {
    let mut seen = Seen::default();
    for payload in Parser::new(0).parse_all(bytes) {
        // What was read before a section it cannot parse still counts.
        let Ok(payload) = payload else { break };
        match payload {
            Payload::CustomSection(c) => {
                if let KnownCustom::Producers(fields) = c.as_known() {
                    seen.producers(fields);
                }
            }
            Payload::ImportSection(imports) => seen.imports(imports),
            _ => {}
        }
    }
    seen.language()
}

#[derive(Default)]
struct Seen {
    javascript: bool,
    python: bool,
    rust: bool,
}

impl Seen {
    fn producers(&mut self, fields: wasmparser::ProducersSectionReader<'_>) {
        for field in fields.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                match (field.name, value.name) {
                    ("language", "JavaScript") | ("processed-by", "ComponentizeJS") => {
                        self.javascript = true
                    }
                    ("language", "Python") | ("processed-by", "componentize-py") => {
                        self.python = true
                    }
                    // A stripped release build keeps only the bindings generator's name.
                    ("language", "Rust")
                    | ("processed-by", "rustc")
                    | ("processed-by", "wit-bindgen-rust") => self.rust = true,
                    _ => {}
                }
            }
        }
    }

    fn imports(&mut self, imports: wasmparser::ImportSectionReader<'_>) {
        for group in imports.into_iter().flatten() {
            let module = match group {
                Imports::Single(_, import) => import.module,
                Imports::Compact1 { module, .. } | Imports::Compact2 { module, .. } => module,
            };
            self.python |= module.starts_with(PYTHON_RUNTIME);
        }
    }

    /// The interpreters are themselves partly written in Rust, so they win over it.
    fn language(&self) -> Option<Language> {
        match self {
            Seen { python: true, .. } => Some(Language::Python),
            Seen {
                javascript: true, ..
            } => Some(Language::Javascript),
            Seen { rust: true, .. } => Some(Language::Rust),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module holding one `producers` section with `field` = [`value`].
    fn module_with_producer(field: &str, value: &str) -> Vec<u8> {
        let mut body = vec![1u8, field.len() as u8];
        body.extend_from_slice(field.as_bytes());
        body.push(1);
        for s in [value, "1.0"] {
            body.push(s.len() as u8);
            body.extend_from_slice(s.as_bytes());
        }
        let mut section = vec![b"producers".len() as u8];
        section.extend_from_slice(b"producers");
        section.extend_from_slice(&body);
        let mut bytes = b"\0asm\x01\x00\x00\x00".to_vec();
        bytes.push(0);
        bytes.push(section.len() as u8);
        bytes.extend_from_slice(&section);
        bytes
    }

    #[test]
    fn producers_name_the_language() {
        let js = module_with_producer("processed-by", "ComponentizeJS");
        assert_eq!(language_of(&js), Some(Language::Javascript));
        let rust = module_with_producer("language", "Rust");
        assert_eq!(language_of(&rust), Some(Language::Rust));
        let stripped = module_with_producer("processed-by", "wit-bindgen-rust");
        assert_eq!(language_of(&stripped), Some(Language::Rust));
        let c = module_with_producer("language", "C11");
        assert_eq!(language_of(&c), None);
        assert_eq!(language_of(b"not wasm"), None);
    }

    #[test]
    fn an_import_from_the_python_runtime_reads_as_python() {
        let module = b"libcomponentize_py_runtime.so";
        let mut section = vec![1u8, module.len() as u8];
        section.extend_from_slice(module);
        section.extend_from_slice(&[1, b'f', 0, 0]);
        let mut bytes = b"\0asm\x01\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&[2, section.len() as u8]);
        bytes.extend_from_slice(&section);
        assert_eq!(language_of(&bytes), Some(Language::Python));
    }

    #[test]
    fn the_shipped_rust_plugins_read_as_rust() {
        let hello = stratus_plugin_artifacts::package_dir("hello");
        let bytes = std::fs::read(hello.join("plugin.wasm")).unwrap();
        assert_eq!(language_of(&bytes), Some(Language::Rust));
    }
}
