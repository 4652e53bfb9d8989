//! The `stratus` binary: everything lives in `stratus-cli`; this keeps `CARGO_BIN_EXE_stratus`
//! available to the integration tests under `tests/`.
fn main() -> std::process::ExitCode {
    stratus_cli::main()
}
