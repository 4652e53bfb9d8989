//! Copies the WIT contract (`<repo>/wit`) into `.wit/` for `wit_bindgen::generate!`. Shared by
//! `stratus-plugin-sdk` and `stratus-plugin-proxy-bindings`; the copy is verbatim.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // Find `<repo>/wit` from either crate (plugins/sdk or plugins/sdk/proxy-bindings).
    let src = manifest
        .ancestors()
        .map(|dir| dir.join("wit"))
        .find(|dir| dir.join("types.wit").is_file())
        .expect("the repository's wit/ directory");
    let dst = manifest.join(".wit");
    println!("cargo:rerun-if-changed={}", src.display());
    std::fs::create_dir_all(&dst).expect("create .wit");
    for entry in std::fs::read_dir(&src).expect("read wit/") {
        let path = entry.expect("wit entry").path();
        if path.extension().is_none_or(|e| e != "wit") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("read wit file");
        let out = dst.join(path.file_name().expect("file name"));
        if std::fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&out, text).expect("write .wit copy");
        }
    }
}
