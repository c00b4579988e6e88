//! `natter-agent`: one or more agents (a demo fleet runs several in one process).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use natter_agent::desktop::SessionSource;
use natter_agent::{AgentConfig, AgentHandle, CommandOpener, Opener, Presence, PrintOpener};
use tokio_util::sync::CancellationToken;

#[cfg(windows)]
mod service;

/// Opens chat windows unless `--opener` says otherwise: on Windows the built-in opener into the
/// user's desktop session, elsewhere `xdg-open`.
const DEFAULT_OPENER: &str = if cfg!(windows) { "desktop" } else { "xdg-open" };

#[derive(Parser)]
#[command(
    name = "natter-agent",
    version,
    about = "Natter agent for managed machines"
)]
struct Cli {
    /// NATS server URL.
    #[arg(long, env = "NATTER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// CA certificate (PEM) that signed the NATS server's certificate: trust it and require
    /// TLS. Without it a `tls://` URL trusts the system's roots.
    #[arg(long, env = "NATTER_AGENT_NATS_CA")]
    nats_ca: Option<std::path::PathBuf>,
    /// Where this machine's secret key lives (created on first start, mode 600). With several
    /// --machine, include `{machine}` in the path: each machine has its own key.
    #[arg(
        long,
        env = "NATTER_AGENT_KEY_FILE",
        required_unless_present = "simulate"
    )]
    key_file: Option<String>,
    /// Enrollment token from `natter admin enroll-token`, needed on the first connect only
    /// (once the node has bound the machine to its key, the key is enough).
    #[arg(
        long,
        env = "NATTER_AGENT_ENROLL_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    enroll_token: String,
    /// Password of the `natter-simulator` NATS user (--simulate only).
    #[arg(
        long,
        env = "NATTER_NATS_SIMULATOR_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    simulator_password: String,
    /// `print` (show the URL; for machines without a browser), `desktop` (the agent run as a
    /// service: the chat user's browser in that user's desktop session — Linux: `xdg-open` as
    /// that user, the session found through systemd-logind; Windows: the default browser) or a
    /// command that opens a URL, such as `xdg-open`.
    #[arg(long, default_value = DEFAULT_OPENER)]
    opener: String,
    /// Who is logged on: `given` (in --machine's `=USERS`, else `$USER`) or `os` (asked of the
    /// OS every 10 s — systemd-logind on Linux, the WTS API on Windows: each desktop session,
    /// its user and idle time). Default: `os` on Windows for a --machine without `=USERS`,
    /// otherwise `given`.
    #[arg(long, value_parser = ["given", "os"])]
    users: Option<String>,
    /// The `loginctl` that --users os and --opener desktop run (Linux).
    #[arg(long, env = "NATTER_LOGINCTL", default_value = "loginctl")]
    loginctl: String,
    /// How often --users os asks the OS (tests ask more often).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, hide = true)]
    users_poll: Duration,
    /// Check-in interval.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Machine ID, optionally with its logged-on user: `pc1.sales.acme=carol`
    /// (`pc1.sales.acme=` = nobody logged on), or several user sessions (a terminal server):
    /// `ts1.sales.acme=carol@console,dave@rdp-tcp#3` (a user without `@SESSION` gets its
    /// position, `1`, `2`, …). Repeat to run several agents.
    #[arg(long = "machine", required_unless_present = "simulate")]
    machines: Vec<String>,
    /// Run a simulated fleet of this many agents instead (same protocol code, shared
    /// connections, users logging on and off).
    #[arg(long)]
    simulate: Option<usize>,
    /// Operating system to report.
    #[arg(long, default_value = std::env::consts::OS)]
    os: String,
    /// IP address to report.
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// The local control socket `natter-agent chat` talks to (a Unix socket, mode 0660; on
    /// Windows a named pipe named after it, for SYSTEM, Administrators and logged-on users).
    /// Default: the key file's path with `.sock` added. With several --machine, include
    /// `{machine}`.
    #[arg(long, env = "NATTER_AGENT_CONTROL_SOCKET")]
    control_socket: Option<String>,
}

/// `natter-agent chat`: ask the running agent to open the start page, where the machine's user
/// picks an operator to chat with (allowed only if the machine's role has that right).
#[derive(Parser)]
#[command(name = "natter-agent chat")]
struct ChatCli {
    /// The running agent's control socket (as given to it). Without it and --key-file: the
    /// service's, `/run/natter-agent/control.sock` (Linux).
    #[arg(long, env = "NATTER_AGENT_CONTROL_SOCKET")]
    control_socket: Option<String>,
    /// Without --control-socket: the agent's key file (its socket is that path + `.sock`).
    #[arg(long, env = "NATTER_AGENT_KEY_FILE")]
    key_file: Option<String>,
    /// The machine, when the paths contain `{machine}`.
    #[arg(long, default_value = "")]
    machine: String,
}

/// The control socket of `machine`: `--control-socket`, else the key file's path + `.sock`
/// (`{machine}` replaced in either).
fn control_socket_path(
    control_socket: Option<&str>,
    key_file: Option<&str>,
    machine: &str,
) -> Option<std::path::PathBuf> {
    let pattern = match control_socket {
        Some(p) => p.to_string(),
        None => format!("{}.sock", key_file?),
    };
    Some(pattern.replace("{machine}", machine).into())
}

/// The control socket of the agent's service (`dist/natter-agent.service`), where it runs.
fn service_control_socket() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/run/natter-agent/control.sock");
    (cfg!(target_os = "linux") && path.exists()).then_some(path)
}

/// Runs `natter-agent chat`: prints the agent's answer; fails unless the page was opened.
async fn chat(cli: ChatCli) -> ExitCode {
    let Some(path) = control_socket_path(
        cli.control_socket.as_deref(),
        cli.key_file.as_deref(),
        &cli.machine,
    )
    .or_else(service_control_socket) else {
        eprintln!("natter-agent chat: give --control-socket (or --key-file)");
        return ExitCode::from(2);
    };
    match natter_agent::control::ask_chat(&path).await {
        Ok(answer) => {
            println!("{answer}");
            if answer == "opened" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("natter-agent chat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The seed of `machine`'s key, from (or created in) its key file.
fn machine_key(cli: &Cli, machine: &str) -> Result<String, String> {
    let pattern = cli.key_file.as_deref().unwrap_or_default();
    if cli.machines.len() > 1 && !pattern.contains("{machine}") {
        return Err("with several --machine, --key-file must contain {machine}".into());
    }
    let path = std::path::PathBuf::from(pattern.replace("{machine}", machine));
    natter_agent::identity::load_or_create(&path).map_err(|e| e.to_string())
}

/// How long the agents get to stop after a signal; each of their steps is bounded by
/// [`natter_agent::SHUTDOWN_STEP`], this bounds the whole so the process exits within 5 s
/// whatever NATS does.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// How long tasks still running at exit (a DNS lookup, a connect) may delay it.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// The systemd unit that runs the agent as a service (`natter-agent service-unit`).
const SERVICE_UNIT: &str = include_str!("../dist/natter-agent.service");

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("service-unit") {
        print!("{SERVICE_UNIT}");
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("chat") {
        let args = std::env::args().enumerate().filter(|(i, _)| *i != 1);
        let cli = ChatCli::parse_from(args.map(|(_, a)| a));
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("natter-agent: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        return runtime.block_on(chat(cli));
    }
    #[cfg(windows)]
    if std::env::args().nth(1).as_deref() == Some("service") {
        return service::main(std::env::args_os().skip(2).collect());
    }
    run_agents(Cli::parse(), CancellationToken::new(), None)
}

/// Runs the agents of `cli` until a signal, `stop` or an agent that gave up; logs to stderr, or
/// to `log_file` (a service has no stderr).
fn run_agents(cli: Cli, stop: CancellationToken, log_file: Option<std::fs::File>) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    match log_file {
        Some(file) => tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(filter)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
        None => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("natter-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli, stop));
    // Dropping a runtime waits for its blocking tasks without limit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

async fn run(cli: Cli, stop: CancellationToken) -> ExitCode {
    let opener = match opener(&cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("natter-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let sessions = if users_from_os(&cli) {
        match os_sessions(&cli) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("natter-agent: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(agents) = cli.simulate {
        tasks.spawn(natter_agent::simulate::simulate(
            natter_agent::simulate::Simulation {
                nats_url: cli.nats_url.clone(),
                nats_ca: cli.nats_ca.clone(),
                nats_user: "natter-simulator".into(),
                nats_password: cli.simulator_password.clone(),
                agents,
                interval: cli.interval,
                per_connection: 1000,
            },
            shutdown.clone(),
        ));
    }
    if cli.machines.len() > 1
        && cli
            .control_socket
            .as_deref()
            .is_some_and(|p| !p.contains("{machine}"))
    {
        eprintln!(
            "natter-agent: with several --machine, --control-socket must contain {{machine}}"
        );
        return ExitCode::from(2);
    }
    for spec in &cli.machines {
        let (config, presence) = match agent_config(&cli, spec) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("natter-agent: {e}");
                return ExitCode::from(2);
            }
        };
        let handle = AgentHandle::new(presence);
        if let Some(source) = &sessions {
            handle.set_presence(first_presence(source).await);
            tokio::spawn(natter_agent::desktop::follow(
                source.clone(),
                handle.clone(),
                cli.users_poll,
                shutdown.clone(),
            ));
        }
        let socket = control_socket_path(
            cli.control_socket.as_deref(),
            cli.key_file.as_deref(),
            &config.machine,
        );
        if let Some(path) = socket {
            match natter_agent::control::bind(&path) {
                Ok(listener) => {
                    tracing::info!(machine = %config.machine, socket = %path.display(), "control socket ready");
                    tokio::spawn(natter_agent::control::serve(
                        listener,
                        path,
                        handle.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    eprintln!("natter-agent: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        tasks.spawn(natter_agent::run(
            config,
            handle,
            opener.clone(),
            shutdown.clone(),
        ));
    }
    let failed = match wait_for_stop(&mut tasks, &stop).await {
        Ok(failed) => failed,
        Err(e) => {
            eprintln!("natter-agent: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    shutdown.cancel();
    let stopped = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, stopped)
        .await
        .is_err()
    {
        tracing::warn!("agents did not stop within {SHUTDOWN_DEADLINE:?}; exiting anyway");
        tasks.abort_all();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The opener named on the command line (`print`, `desktop`, or a command).
fn opener(cli: &Cli) -> Result<Arc<dyn Opener>, String> {
    match cli.opener.as_str() {
        "print" => Ok(Arc::new(PrintOpener)),
        #[cfg(target_os = "linux")]
        "desktop" => Ok(Arc::new(
            natter_agent::desktop::linux_open::DesktopOpener::new(
                natter_agent::desktop::logind::LogindSessions::new(&cli.loginctl),
            ),
        )),
        #[cfg(windows)]
        "desktop" => Ok(Arc::new(natter_agent::desktop::wts_open::DesktopOpener)),
        #[cfg(not(any(target_os = "linux", windows)))]
        "desktop" => Err("--opener desktop is not available on this OS yet".into()),
        spec => CommandOpener::parse(spec)
            .map(|o| Arc::new(o) as Arc<dyn Opener>)
            .ok_or_else(|| "--opener must not be empty".into()),
    }
}

/// Whether the users come from the OS (`--users os`, or on Windows by default for a
/// `--machine` without `=USERS`).
fn users_from_os(cli: &Cli) -> bool {
    match cli.users.as_deref() {
        Some(u) => u == "os",
        None => cfg!(windows) && cli.machines.iter().all(|m| !m.contains('=')),
    }
}

/// Where --users os learns who is logged on.
fn os_sessions(cli: &Cli) -> Result<Arc<dyn SessionSource>, String> {
    if cli.machines.iter().any(|m| m.contains('=')) {
        return Err("--users os reads the users from the OS: give --machine without =USERS".into());
    }
    if cli.machines.len() > 1 {
        return Err("--users os is for one --machine (this machine)".into());
    }
    #[cfg(target_os = "linux")]
    {
        Ok(Arc::new(
            natter_agent::desktop::logind::LogindSessions::new(&cli.loginctl),
        ))
    }
    #[cfg(windows)]
    {
        let _ = cli;
        Ok(Arc::new(natter_agent::desktop::wts::WtsSessions))
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = cli;
        Err("--users os is not available on this OS yet".into())
    }
}

/// Who is logged on at start, so the first check-in is right: the OS's answer, or nobody
/// (logged with the reason) when it cannot be asked.
async fn first_presence(source: &Arc<dyn SessionSource>) -> Presence {
    let asked = Arc::clone(source);
    match tokio::task::spawn_blocking(move || asked.sessions()).await {
        Ok(Ok(sessions)) => natter_agent::desktop::presence_of(&sessions),
        Ok(Err(why)) => {
            tracing::warn!(%why, "cannot learn from the OS who is logged on; reporting nobody until it answers");
            Presence::user(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "asking the OS who is logged on failed");
            Presence::user(None)
        }
    }
}

/// Who is logged on, from `--machine`'s `=…` part: one user (`carol`, as agents always
/// reported), or several user sessions (`carol@console,dave@rdp-tcp#3`).
fn logged_on(users: &str) -> Presence {
    if !users.contains(',') && !users.contains('@') {
        return Presence::user(Some(users).filter(|u| !u.is_empty()));
    }
    let users: Vec<(String, String)> = (users.split(','))
        .filter(|u| !u.trim().is_empty())
        .enumerate()
        .map(|(i, u)| match u.split_once('@') {
            Some((name, session)) => (name.trim().to_string(), session.trim().to_string()),
            None => (u.trim().to_string(), (i + 1).to_string()),
        })
        .collect();
    let pairs: Vec<(&str, &str)> = (users.iter())
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    Presence::users(&pairs)
}

/// One `--machine ID[=USERS]`: its configuration (with its key, created on first start) and who
/// is logged on (`USERS`, else `$USER`; `ID=` means nobody).
fn agent_config(cli: &Cli, spec: &str) -> Result<(AgentConfig, Presence), String> {
    let (machine, presence) = match spec.split_once('=') {
        Some((m, u)) => (m.to_string(), logged_on(u)),
        None => (
            spec.to_string(),
            Presence::user(std::env::var("USER").ok().as_deref()),
        ),
    };
    let seed = machine_key(cli, &machine)?;
    let config = AgentConfig {
        nats_url: cli.nats_url.clone(),
        nats_ca: cli.nats_ca.clone(),
        nats_user: machine.clone(),
        nats_password: cli.enroll_token.clone(),
        nkey_seed: Some(seed),
        machine,
        interval: cli.interval,
        os: cli.os.clone(),
        ip: cli.ip.clone(),
    };
    Ok((config, presence))
}

/// SIGTERM (Unix).
#[cfg(unix)]
fn terminated() -> std::io::Result<impl std::future::Future<Output = std::io::Result<bool>>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        term.recv().await;
        Ok(false)
    })
}

/// Windows: the console closing or the system shutting down (a service's stop request comes
/// through the service control handler, issue 14).
#[cfg(windows)]
fn terminated() -> std::io::Result<impl std::future::Future<Output = std::io::Result<bool>>> {
    let mut close = tokio::signal::windows::ctrl_close()?;
    let mut shutdown = tokio::signal::windows::ctrl_shutdown()?;
    Ok(async move {
        tokio::select! {
            _ = close.recv() => {}
            _ = shutdown.recv() => {}
        }
        Ok(false)
    })
}

/// Waits for Ctrl-C, SIGTERM, `stop` (the Windows service's Stop) or an agent that gave up;
/// returns whether one failed.
async fn wait_for_stop(
    tasks: &mut tokio::task::JoinSet<Result<(), natter_agent::AgentError>>,
    stop: &CancellationToken,
) -> std::io::Result<bool> {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(false),
        _ = stop.cancelled() => Ok(false),
        r = terminated()? => r,
        Some(result) = tasks.join_next() => match result {
            Ok(Err(e)) => {
                eprintln!("natter-agent: {e}");
                Ok(true)
            }
            _ => Ok(false),
        },
    }
}
