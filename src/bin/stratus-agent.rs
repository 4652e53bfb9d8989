//! `stratus-agent`: a server's agent without the control plane and the CLI around it.
fn main() -> std::process::ExitCode {
    stratus_cli::agent_main()
}
