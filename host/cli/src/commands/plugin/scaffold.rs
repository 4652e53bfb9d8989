//! The files `stratus plugin new` writes: one skeleton per language and world, kept as text
//! under `host/cli/scaffold/` and embedded in the binary, with `__NAME__`-style placeholders.

use anyhow::Context;
use clap::ValueEnum;
use std::path::PathBuf;
use stratus_model::context::World;
use stratus_model::plugin::manifest::Language;

/// The languages `plugin new` writes skeletons in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(alias = "javascript")]
    Js,
}

impl Lang {
    fn language(self) -> Language {
        match self {
            Lang::Rust => Language::Rust,
            Lang::Python => Language::Python,
            Lang::Js => Language::Javascript,
        }
    }
}

/// The worlds `plugin new` has skeletons for (a scaler has no SDK: see the scaler section of
/// docs/writing-a-plugin.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NewWorld {
    Service,
    Proxy,
    Cm,
}

impl NewWorld {
    pub fn world(self) -> World {
        match self {
            NewWorld::Service => World::Service,
            NewWorld::Proxy => World::Proxy,
            NewWorld::Cm => World::Cm,
        }
    }
}

const PLUGIN_TOML: &str = include_str!("../../../scaffold/plugin.toml");
const TEMPLATE_CONF: &str = include_str!("../../../scaffold/template.conf");
const GITIGNORE: &str = include_str!("../../../scaffold/gitignore");
const README: &str = include_str!("../../../scaffold/README.md");
const RUST_CARGO_TOML: &str = include_str!("../../../scaffold/rust/Cargo.toml");
const RUST_CARGO_CONFIG: &str = include_str!("../../../scaffold/rust/cargo-config.toml");
const RUST_SERVICE_HOOKS: &str = include_str!("../../../scaffold/rust/service_hooks.rs");
const RUST_SERVICE: &str = include_str!("../../../scaffold/rust/service.rs");
const RUST_PROXY: &str = include_str!("../../../scaffold/rust/proxy.rs");
const RUST_CM: &str = include_str!("../../../scaffold/rust/cm.rs");
const PYTHON_SERVICE_HOOKS: &str = include_str!("../../../scaffold/python/service_hooks.py");
const PYTHON_SERVICE: &str = include_str!("../../../scaffold/python/service.py");
const PYTHON_PROXY: &str = include_str!("../../../scaffold/python/proxy.py");
const PYTHON_CM: &str = include_str!("../../../scaffold/python/cm.py");
const JS_SERVICE_HOOKS: &str = include_str!("../../../scaffold/js/service_hooks.js");
const JS_SERVICE: &str = include_str!("../../../scaffold/js/service.js");
const JS_PROXY: &str = include_str!("../../../scaffold/js/proxy.js");
const JS_CM: &str = include_str!("../../../scaffold/js/cm.js");

/// Where the Rust SDK was when this binary was built. It is not published on crates.io yet,
/// so a Rust skeleton depends on it by path; a binary used on another machine says so.
const RUST_SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");

/// A skeleton to write.
pub struct Skeleton<'a> {
    pub name: &'a str,
    pub lang: Lang,
    pub world: NewWorld,
}

impl Skeleton<'_> {
    /// Every file of the skeleton: its path relative to the package and its text.
    pub fn files(&self) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let (source, code) = self.source()?;
        let mut files = vec![
            (PathBuf::from("plugin.toml"), self.fill(PLUGIN_TOML)),
            (PathBuf::from(".gitignore"), GITIGNORE.to_string()),
            (PathBuf::from("README.md"), self.readme(&source)),
            (PathBuf::from(&source), code),
        ];
        if self.world != NewWorld::Cm {
            let template = format!("cfg/{}.conf", self.name);
            files.push((PathBuf::from(template), self.fill(TEMPLATE_CONF)));
        }
        if self.lang == Lang::Rust {
            files.push((PathBuf::from("Cargo.toml"), self.cargo_toml()?));
            let config = RUST_CARGO_CONFIG.to_string();
            files.push((PathBuf::from(".cargo/config.toml"), config));
        }
        Ok(files)
    }

    /// The source file's path and text, with the service hooks put into the world's file.
    fn source(&self) -> anyhow::Result<(String, String)> {
        let (path, hooks, world_file) = match self.lang {
            Lang::Rust => (
                "src/lib.rs",
                RUST_SERVICE_HOOKS,
                self.pick(RUST_SERVICE, RUST_PROXY, RUST_CM),
            ),
            Lang::Python => (
                "app.py",
                PYTHON_SERVICE_HOOKS,
                self.pick(PYTHON_SERVICE, PYTHON_PROXY, PYTHON_CM),
            ),
            Lang::Js => (
                "plugin.js",
                JS_SERVICE_HOOKS,
                self.pick(JS_SERVICE, JS_PROXY, JS_CM),
            ),
        };
        let code = world_file.replace("__SERVICE_HOOKS__", hooks);
        Ok((path.to_string(), self.fill(&code)))
    }

    fn pick(&self, service: &'static str, proxy: &'static str, cm: &'static str) -> &'static str {
        match self.world {
            NewWorld::Service => service,
            NewWorld::Proxy => proxy,
            NewWorld::Cm => cm,
        }
    }

    fn cargo_toml(&self) -> anyhow::Result<String> {
        let sdk = std::fs::canonicalize(RUST_SDK_DIR).with_context(|| {
            format!(
                "the Rust plugin SDK is not published yet and this stratus binary finds it only \
                 where it was built, {RUST_SDK_DIR}, which is not there; use a stratus built \
                 from a checkout of the repository on this machine"
            )
        })?;
        // A JSON string is a valid TOML basic string, whatever the path holds.
        let sdk = serde_json::to_string(&sdk.to_string_lossy())?;
        let krate = self.name.replace('.', "-");
        Ok(self
            .fill(RUST_CARGO_TOML)
            .replace("__CRATE__", &krate)
            .replace("__SDK__", &sdk))
    }

    fn readme(&self, source: &str) -> String {
        let language = self.lang.language();
        let tool_note = match self.lang {
            Lang::Rust => {
                "This runs `cargo build --release --target wasm32-wasip2` (install the \
                target with `rustup target add wasm32-wasip2`) in this directory, where \
                `.cargo/config.toml` links a 64 KiB stack so that a hook call's memory stays \
                resident between calls."
            }
            Lang::Python => {
                "This runs componentize-py (`pip install componentize-py==0.25.1`) \
                with the Python SDK `stratus_plugin` and the WIT files, which it writes into \
                `.stratus/`."
            }
            Lang::Js => {
                "This runs componentize-js (`npm install -g \
                @bytecodealliance/componentize-js@0.23.0`) with the JavaScript SDK, which it \
                writes to `.stratus/stratus_plugin.js` with the WIT files."
            }
        };
        let (hook, result, used_as, template) = match self.world {
            NewWorld::Cm => (
                "prepare",
                format!(
                    "`prepare` writes `./.stratus-call/work/{}.conf`.",
                    self.name
                ),
                "tier's `launch = { cm = { package = … } }` (or a personality's component)",
                String::new(),
            ),
            _ => (
                "configure",
                format!(
                    "`configure` renders `cfg/{0}.conf` into `./.stratus-call/a1/{0}.conf`.",
                    self.name
                ),
                "service's `package`",
                format!(
                    "- `cfg/{}.conf`: the template `configure` renders (`{{{{ variable }}}}`);\n",
                    self.name
                ),
            ),
        };
        self.fill(README)
            .replace("__LANGUAGE__", &language.to_string())
            .replace("__SOURCE__", source)
            .replace("__TEMPLATE_LINE__", &template)
            .replace("__TOOL_NOTE__", tool_note)
            .replace("__HOOK__", hook)
            .replace("__RESULT_NOTE__", &result)
            .replace("__USE__", used_as)
    }

    /// The placeholders every file may hold.
    fn fill(&self, text: &str) -> String {
        let language = self.lang.language();
        let build = match language.default_entry() {
            Some(entry) => format!("language = \"{language}\"\nentry = \"{entry}\""),
            None => format!("language = \"{language}\""),
        };
        // The interpreters of Python and JavaScript components need more memory than Rust's.
        let memory = if self.lang == Lang::Rust { "32" } else { "128" };
        let dirs = match self.world {
            NewWorld::Cm => "{ dir = \"work-dir\", access = \"read-write\" }",
            _ => "{ dir = \"service\", access = \"read-write\" }",
        };
        text.replace("__NAME__", self.name)
            .replace("__WORLD__", &self.world.world().to_string())
            .replace("__BUILD__", &build)
            .replace("__MEMORY__", memory)
            .replace("__DIRS__", dirs)
    }
}
