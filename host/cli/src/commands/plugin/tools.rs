//! Finding the build tools on PATH, and what to run when one is missing.

use anyhow::bail;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The componentize-py release `stratus plugin build` is tested with (scripts/install-deps.sh).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The componentize-js release `stratus plugin build` is tested with (scripts/install-deps.sh).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// A tool a build runs, with the command that installs it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub install: &'static str,
}

pub const CARGO: Tool = Tool {
    program: "cargo",
    install: "curl https://sh.rustup.rs -sSf | sh, then rustup target add wasm32-wasip2",
};
pub const RUSTC: Tool = Tool {
    program: "rustc",
    install: "curl https://sh.rustup.rs -sSf | sh, then rustup target add wasm32-wasip2",
};
pub const COMPONENTIZE_PY: Tool = Tool {
    program: "componentize-py",
    install: "pip install componentize-py==0.25.1",
};
pub const COMPONENTIZE_JS: Tool = Tool {
    program: "componentize-js",
    install: "npm install -g @bytecodealliance/componentize-js@0.23.0",
};

impl Tool {
    /// The executable file of that name first on PATH, or an error giving the install command.
    pub fn find(self) -> anyhow::Result<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .map(|dir| dir.join(self.program))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            });
        match found {
            Some(p) => Ok(p),
            None => bail!(
                "{} is not on PATH; install it with: {}",
                self.program,
                self.install
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_commands_and_install_deps_pin_the_tested_versions() {
        assert!(COMPONENTIZE_PY.install.ends_with(COMPONENTIZE_PY_VERSION));
        assert!(COMPONENTIZE_JS.install.ends_with(COMPONENTIZE_JS_VERSION));
        let script = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-deps.sh"),
        )
        .unwrap();
        assert!(script.contains(&format!(
            "componentize_py_version={COMPONENTIZE_PY_VERSION}\n"
        )));
        assert!(script.contains(&format!(
            "componentize_js_version={COMPONENTIZE_JS_VERSION}\n"
        )));
    }

    #[test]
    fn a_missing_tool_names_its_install_command() {
        let tool = Tool {
            program: "stratus-no-such-tool",
            install: "apt-get install stratus-no-such-tool",
        };
        let e = tool.find().unwrap_err().to_string();
        assert_eq!(
            e,
            "stratus-no-such-tool is not on PATH; install it with: apt-get install \
             stratus-no-such-tool"
        );
    }
}
