//! `stratus serve` and `stratus agent`: the two long-running roles of the binary.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The control plane's configuration file (TOML): the options below that take a value
    /// (listen, advertise, files-listen, http, tls-cert, tls-key, agent-tls-cert,
    /// agent-tls-key, cloud-files) and `[providers.NAME]` tables every deployment may name.
    /// A flag given on the command line wins over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Exit once no deployment is active (used when `stratus launch` starts the control plane).
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Where the HTTP API listens [default: 127.0.0.1:0, an OS-chosen port recorded in
    /// control.json]. A non-loopback address needs --tls-cert/--tls-key or --insecure-http.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// PEM certificate chain for the HTTP API (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTP API (with --tls-cert).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve the HTTP API in clear text on a non-loopback address (the token crosses the
    /// network unprotected).
    #[arg(long)]
    pub insecure_http: bool,
    /// Where the control port (agents and the CLI) listens [default: 127.0.0.1, on the port
    /// this state directory had before, else an OS-chosen one, recorded in control.json].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The control-port address agents are told to dial, HOST:PORT with a host name or an IP
    /// address (a name is resolved by each agent, and put in a generated certificate)
    /// [default: the --listen address; 127.0.0.1 when that is 0.0.0.0].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<stratus_protocol::DialAddress>,
    /// Where the file endpoint (cloud files over HTTPS) listens, a fixed port for firewalls
    /// [default: a new port of the --listen address at each start; agents learn it when they
    /// connect]. Agents reach it at the advertised host.
    #[arg(long, value_name = "ADDR:PORT")]
    pub files_listen: Option<SocketAddr>,
    /// PEM certificate chain for the control port (with --agent-tls-key) [default: the one in
    /// <state>/tls/, generated at first start]. Agents pin its fingerprint.
    #[arg(long, value_name = "FILE")]
    pub agent_tls_cert: Option<PathBuf>,
    /// PEM private key for the control port (with --agent-tls-cert).
    #[arg(long, value_name = "FILE")]
    pub agent_tls_key: Option<PathBuf>,
    /// Speak plaintext on the control port (loopback only; refused on any other address): to
    /// measure what TLS costs, never for production.
    #[arg(long, conflicts_with_all = ["agent_tls_cert", "agent_tls_key"])]
    pub agent_plaintext: bool,
    /// Where cloud files (packages, data sources) are kept [default: <state>/cloud-files]: a
    /// directory, or an S3-compatible bucket `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&
    /// allow_http=true]` whose credentials come from the environment (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY), never from this setting.
    #[arg(long, value_name = "SETTING", env = "STRATUS_CLOUD_FILES")]
    pub cloud_files: Option<String>,
    /// Do not hand local agents the shared compiled-code cache: each compiles the plugins it
    /// loads, as an agent on another machine does (slower launches; for testing that path).
    #[arg(long, env = "STRATUS_NO_AGENT_CODE_CACHE")]
    pub no_agent_code_cache: bool,
}

/// How long a control plane that is exiting waits for its ended servers' disks to be deleted.
const DISK_REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

pub fn serve(args: ServeArgs, state_dir: PathBuf) -> anyhow::Result<ExitCode> {
    crate::control_process::tune_malloc();
    let args = with_config(args)?;
    // Refused before anything starts, so a wrong flag never leaves a half-started plane.
    let http = stratus_http::HttpConfig::from_flags(
        args.http,
        args.tls_cert,
        args.tls_key,
        args.insecure_http,
    )?;
    let agent_tls = match (args.agent_tls_cert, args.agent_tls_key) {
        (Some(cert), Some(key)) => stratus_control::server::AgentTls::Given { cert, key },
        _ if args.agent_plaintext => stratus_control::server::AgentTls::Plaintext,
        _ => stratus_control::server::AgentTls::Generated,
    };
    agent_tls.check(args.listen, args.advertise.as_ref())?;
    // Its diagnostics go to a size-bounded file; stderr (`control.out`) keeps only panics.
    let log_dir = state_dir.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    log_to(&log_dir.join("control.log"))?;
    let program = std::env::current_exe()?;
    let scalers = std::sync::Arc::new(crate::scalers::RuntimeScalers::new(state_dir.clone()));
    let paths = stratus_control::paths::StatePaths::new(&state_dir);
    let precompiler = std::sync::Arc::new(crate::precompile::RuntimePrecompiler::new(
        paths.cache(),
        paths.keys().join(stratus_control::paths::CACHE_KEY),
    ));
    let cloud_drivers = crate::cloud_drivers::factory(&state_dir, &paths.keys())?;
    let ssh = crate::ssh_provider::factory(&state_dir, &paths.keys(), program.clone())?;
    let options = stratus_control::server::ServeOptions {
        state_dir: state_dir.clone(),
        agent_program: stratus_provider::AgentProgram::beside(&program, env!("CARGO_PKG_VERSION")),
        exit_when_idle: args.exit_when_idle,
        scalers: Some(scalers),
        precompiler: Some(precompiler),
        provider_factories: vec![cloud_drivers, ssh],
        http: Some(Box::new(move |ctx| {
            Box::pin(async move {
                stratus_http::start(ctx, http)
                    .await
                    .map(|addr| addr.to_string())
                    .map_err(|e| e.to_string())
            })
        })),
        listen: args.listen,
        advertise: args.advertise,
        files_listen: args.files_listen,
        agent_tls,
        cloud_files: args.cloud_files,
        agent_code_cache: !args.no_agent_code_cache,
        control_providers: args.providers,
    };
    let rt = crate::control_process::runtime()?;
    crate::control_process::release_freed_memory();
    stratus_provider::resume_disk_removals(&state_dir);
    let served = rt.block_on(stratus_control::server::serve(options));
    if !stratus_provider::finish_disk_removals(DISK_REMOVAL_GRACE) {
        tracing::warn!(
            "some ended servers' disks are left to delete in the state directory's removing/: the next control plane deletes them"
        );
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The serve options with the configuration file's values where no flag gave one, and its
/// providers; refused before anything starts.
struct Options {
    exit_when_idle: bool,
    http: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_http: bool,
    listen: Option<SocketAddr>,
    advertise: Option<stratus_protocol::DialAddress>,
    files_listen: Option<SocketAddr>,
    agent_tls_cert: Option<PathBuf>,
    agent_tls_key: Option<PathBuf>,
    agent_plaintext: bool,
    cloud_files: Option<String>,
    no_agent_code_cache: bool,
    providers: stratus_control::config::ControlProviders,
}

fn with_config(args: ServeArgs) -> anyhow::Result<Options> {
    let config = match &args.config {
        Some(file) => stratus_control::config::ControlConfig::read(file)?,
        None => Default::default(),
    };
    let options = Options {
        exit_when_idle: args.exit_when_idle,
        http: args.http.or(config.http),
        tls_cert: args.tls_cert.or(config.tls_cert),
        tls_key: args.tls_key.or(config.tls_key),
        insecure_http: args.insecure_http,
        listen: args.listen.or(config.listen),
        advertise: args.advertise.or(config.advertise),
        files_listen: args.files_listen.or(config.files_listen),
        agent_tls_cert: args.agent_tls_cert.or(config.agent_tls_cert),
        agent_tls_key: args.agent_tls_key.or(config.agent_tls_key),
        agent_plaintext: args.agent_plaintext,
        cloud_files: args.cloud_files.or(config.cloud_files),
        no_agent_code_cache: args.no_agent_code_cache,
        providers: config.providers,
    };
    if options.agent_tls_cert.is_some() != options.agent_tls_key.is_some() {
        anyhow::bail!("--agent-tls-cert and --agent-tls-key come together (flags or config)");
    }
    if options.agent_plaintext && options.agent_tls_cert.is_some() {
        anyhow::bail!("--agent-plaintext cannot be used with --agent-tls-cert/--agent-tls-key");
    }
    Ok(options)
}

/// Started by a cloud provider on a server, never by hand.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The server's bootstrap file (JSON: the control plane's address and the fingerprint of
    /// its certificate, this server's identity and credential; mode 0600).
    #[arg(long, value_name = "FILE")]
    pub bootstrap: PathBuf,
    /// The server's root directory.
    #[arg(long)]
    pub root: PathBuf,
    /// Dial the control plane without TLS: only to a control plane on loopback started with
    /// --agent-plaintext.
    #[arg(long)]
    pub plaintext: bool,
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[arg(long)]
    pub cache_key_file: Option<PathBuf>,
    /// Largest plugin component the agent loads, in bytes.
    #[arg(long, default_value_t = stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES)]
    pub max_component_bytes: u64,
    /// Who the programs plugins start run as when the agent is root: `<uid>`, `<uid>:<gid>`
    /// or a user name, not root. The local provider passes each server's own uid; set by the
    /// operator (STRATUS_PROGRAM_USER), one user is shared by every server [default without
    /// either: 65534:65534, nobody:nogroup].
    #[arg(long, env = "STRATUS_PROGRAM_USER")]
    pub program_user: Option<stratus_plugin_runtime::ProgramUser>,
}

pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    crate::agent_process::tune_malloc();
    crate::agent_process::name_process();
    // The agent log is a file in the server's root, one per server.
    let log_dir = args.root.join("agent");
    std::fs::create_dir_all(&log_dir)?;
    log_to(&log_dir.join("agent.log"))?;
    let bootstrap = match stratus_protocol::Bootstrap::read(&args.bootstrap) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "agent not started");
            return Err(e.into());
        }
    };
    let span = tracing::info_span!("agent", deployment = %bootstrap.deployment,
        server = %bootstrap.server_id);
    let _g = span.enter();
    let rt = crate::agent_process::runtime()?;
    let result = rt.block_on(stratus_agent::run(stratus_agent::AgentConfig {
        address: bootstrap.address.clone(),
        bootstrap,
        bootstrap_file: args.bootstrap,
        plaintext: args.plaintext,
        root: args.root,
        cache_dir: args.cache_dir,
        cache_key_file: args.cache_key_file,
        max_component_bytes: args.max_component_bytes,
        program_user: args.program_user,
    }));
    if let Err(e) = &result {
        tracing::error!(error = %e, "agent stopped");
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Sends this process's tracing to `path`, rotated by size (`RotatingFile`: 10 MiB × 3), with
/// every line of a record after its first indented: records carry plugins' text (a refused
/// path, a log message), which must not pass for a record of its own.
fn log_to(path: &std::path::Path) -> anyhow::Result<()> {
    let file = stratus_engine::logs::RotatingFile::open(path)?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(stratus_engine::logs::ContinuedLines(
            file,
        )))
        .with_ansi(false)
        .with_env_filter(filter())
        .try_init();
    Ok(())
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG").unwrap_or_else(|_| "info".into())
}
