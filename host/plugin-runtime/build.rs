//! Copies the WIT contract (`/wit`) to `.wit/` for `bindgen!`. The committed contract
//! declares `process-state` both as a type and as a function of `host`, which WIT rejects;
//! until it is fixed upstream the function is bound as `query-process` (the name the guest
//! SDK uses). When the contract is valid the copy is verbatim.

use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    let src = Path::new(&manifest).join("../../wit");
    let dst = Path::new(&manifest).join(".wit");
    println!("cargo:rerun-if-changed={}", src.display());
    std::fs::create_dir_all(&dst).expect("create .wit");
    for entry in std::fs::read_dir(&src).expect("read wit/") {
        let path = entry.expect("wit entry").path();
        if path.extension().is_some_and(|e| e == "wit") {
            println!("cargo:rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path).expect("read wit file");
            let clash =
                text.contains("variant process-state") && text.contains("process-state: func");
            let text = if clash {
                text.replace("process-state: func", "query-process: func")
            } else {
                text
            };
            let out = dst.join(path.file_name().expect("file name"));
            if std::fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&out, text).expect("write .wit copy");
            }
        }
    }
}
