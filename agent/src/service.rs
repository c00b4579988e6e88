//! Windows: the agent as a service (`natter-agent service install|uninstall|run`), so it runs
//! from boot, as LocalSystem (which may open windows in users' sessions), restarted by Windows
//! when it fails.
//!
//! `install AGENT-ARGS…` checks the arguments, makes `%ProgramData%\Natter` (readable by
//! SYSTEM and Administrators only: it holds the machine's key), registers the service
//! `natter-agent` to run `natter-agent.exe service run AGENT-ARGS…` at boot with restarts on
//! failure, and starts it. `uninstall` stops and removes it (the key stays). `run` is what the
//! service manager starts; it logs to `agent.log` next to the key file.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::Cli;

/// The service's name (`sc query natter-agent`).
pub const SERVICE_NAME: &str = "natter-agent";
const DISPLAY_NAME: &str = "Natter agent";
const DESCRIPTION: &str =
    "Checks this machine in with Natter and opens operators' chat windows for its users.";

/// The agent arguments `run` was started with (the service entry point gets only the
/// service's start parameters).
static AGENT_ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

const USAGE: &str =
    "usage: natter-agent service install AGENT-ARGS… | uninstall | sessions | run AGENT-ARGS…
  install    register and start the service `natter-agent` (run as Administrator), e.g.
             natter-agent service install --nats-url tls://natter.acme.example:4222
                 --machine pc1.sales.acme --enroll-token TOKEN
             (--key-file defaults to %ProgramData%\\Natter\\{machine}.nk)
  uninstall  stop and remove the service (the key file stays)
  sessions   print the user sessions Windows reports (what the agent sees)
  run        what the service manager starts";

/// `natter-agent service …` with the arguments after `service`.
pub fn main(mut args: Vec<OsString>) -> ExitCode {
    let command = if args.is_empty() {
        String::new()
    } else {
        args.remove(0).to_string_lossy().into_owned()
    };
    let result = match command.as_str() {
        "install" => install(args),
        "uninstall" => uninstall(),
        "sessions" => print_sessions(),
        "run" => {
            let _ = AGENT_ARGS.set(args);
            service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
                format!(
                    "not started by the service manager ({}); use `natter-agent service install`",
                    os_reason(e)
                )
            })
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter-agent service {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A service call's error with Windows' own message (the crate's says only "IO error in
/// winapi call").
fn os_reason(e: windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// `%ProgramData%\Natter`, where the service keeps its key and log.
fn data_dir() -> PathBuf {
    let base = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
    PathBuf::from(base).join("Natter")
}

/// The agent's command line for the service: `args`, with the key under [`data_dir`] unless
/// one was given.
fn service_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let has_key = (args.iter().map(|a| a.to_string_lossy()))
        .any(|a| a == "--key-file" || a.starts_with("--key-file="));
    if !has_key {
        args.push("--key-file".into());
        args.push(data_dir().join("{machine}.nk").into());
    }
    args
}

/// The agent's settings from `args` (clap's message when they are wrong).
fn parse(args: &[OsString]) -> Result<Cli, String> {
    Cli::try_parse_from(
        std::iter::once(OsStr::new("natter-agent")).chain(args.iter().map(|a| a.as_os_str())),
    )
    .map_err(|e| e.to_string())
}

/// Where the service logs (`agent.log`): next to its key (install made its folder), as the
/// service's own %ProgramData% may differ from the installer's (Wine gives services
/// C:\users\Public).
fn log_dir(cli: &Cli) -> PathBuf {
    (cli.key_file.as_deref())
        .and_then(|k| std::path::Path::new(k).parent().map(PathBuf::from))
        .unwrap_or_else(data_dir)
}

/// Makes [`data_dir`], readable and writable by SYSTEM and Administrators only (no inherited
/// rights: the key in it is the machine's identity). `icacls` with SIDs, so it works in every
/// Windows language.
fn make_data_dir() -> Result<PathBuf, String> {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let status = std::process::Command::new("icacls")
        .arg(&dir)
        .args(["/inheritance:r", "/grant:r"])
        .arg("*S-1-5-18:(OI)(CI)F") // SYSTEM
        .arg("*S-1-5-32-544:(OI)(CI)F") // Administrators
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("run icacls: {e}"))?;
    if !status.success() {
        return Err(format!(
            "icacls could not restrict {}: {status}",
            dir.display()
        ));
    }
    Ok(dir)
}

fn install(args: Vec<OsString>) -> Result<(), String> {
    let args = service_args(args);
    let log_dir = log_dir(&parse(&args)?);
    let dir = make_data_dir()?;
    let exe = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| {
        format!(
            "open the service manager (run as Administrator): {}",
            os_reason(e)
        )
    })?;
    let mut launch: Vec<OsString> = vec!["service".into(), "run".into()];
    launch.extend(args);
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: launch,
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .map_err(|e| {
            format!(
                "create the service (already installed? uninstall first): {}",
                os_reason(e)
            )
        })?;
    let _ = service.set_description(DESCRIPTION);
    // Restart 10 s after a failure, every time; the count resets after a day without one.
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(10),
    };
    // A warning, not a failure: the service runs without it (Wine has no failure actions).
    if let Err(e) = service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart.clone(), restart.clone(), restart]),
        })
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true))
    {
        let e = os_reason(e);
        eprintln!("natter-agent service install: warning: no restart on failure: {e}");
    }
    // Registered but not running: say so, and where to look (the service may still start at
    // the next boot).
    start(&service).map_err(|e| {
        format!(
            "the service is installed but did not start: {e}; see agent.log in {}, \
             or remove it with `natter-agent service uninstall`",
            log_dir.display()
        )
    })?;
    println!(
        "installed and started the service {SERVICE_NAME}; key and log in {}",
        dir.display()
    );
    Ok(())
}

/// Windows' "service already running" and "service database locked" (the service manager is
/// busy, e.g. just after boot).
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_SERVICE_DATABASE_LOCKED: i32 = 1055;

/// Starts the service; a busy service manager gets up to 5 more tries, 2 s apart.
fn start(service: &windows_service::service::Service) -> Result<(), String> {
    let mut tries = 5;
    loop {
        let code = match service.start(&[] as &[&OsStr]) {
            Ok(()) => return Ok(()),
            Err(windows_service::Error::Winapi(e)) => e.raw_os_error(),
            Err(e) => return Err(os_reason(e)),
        };
        match code {
            Some(ERROR_SERVICE_ALREADY_RUNNING) => return Ok(()),
            Some(ERROR_SERVICE_DATABASE_LOCKED) if tries > 0 => {
                tries -= 1;
                std::thread::sleep(Duration::from_secs(2));
            }
            _ => {
                let e = std::io::Error::from_raw_os_error(code.unwrap_or_default());
                return Err(e.to_string());
            }
        }
    }
}

fn uninstall() -> Result<(), String> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| {
            format!(
                "open the service manager (run as Administrator): {}",
                os_reason(e)
            )
        })?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(|e| format!("open the service (is it installed?): {}", os_reason(e)))?;
    // Marked for deletion first: Windows removes it once it has stopped.
    service
        .delete()
        .map_err(|e| format!("remove the service: {}", os_reason(e)))?;
    if service
        .query_status()
        .is_ok_and(|s| s.current_state != ServiceState::Stopped)
    {
        let _ = service.stop();
    }
    println!(
        "removed the service {SERVICE_NAME}; the machine's key stays in {}",
        data_dir().display()
    );
    Ok(())
}

/// One line per user session of the WTS source: user, session id, state, idle time, remote.
fn print_sessions() -> Result<(), String> {
    use natter_agent::desktop::SessionSource;
    let sessions = natter_agent::desktop::wts::WtsSessions.sessions()?;
    if sessions.is_empty() {
        println!("nobody is logged on");
    }
    for s in sessions {
        let idle = s.idle_secs.map_or("?".into(), |i| format!("{i}s"));
        let state = if s.active { "active" } else { "inactive" };
        let place = if s.remote { "remote" } else { "local" };
        println!(
            "{} session={} {state} {place} idle={idle}",
            s.user, s.session
        );
    }
    Ok(())
}

windows_service::define_windows_service!(ffi_service_main, service_main);

/// The service: the agent, stopped by the service manager's Stop or Shutdown.
fn service_main(_start_parameters: Vec<OsString>) {
    let stop = CancellationToken::new();
    let handler = {
        let stop = stop.clone();
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                stop.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let Ok(status) = service_control_handler::register(SERVICE_NAME, handler) else {
        return;
    };
    let report = |state, exit_code| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::from_secs(5),
            process_id: None,
        });
    };
    report(ServiceState::Running, ServiceExitCode::NO_ERROR);
    let args = AGENT_ARGS.get().cloned().unwrap_or_default();
    let code = match parse(&args) {
        Ok(cli) => {
            let log = std::fs::File::create(log_dir(&cli).join("agent.log")).ok();
            crate::run_agents(cli, stop, log)
        }
        Err(_) => ExitCode::from(2),
    };
    let failed = code != ExitCode::SUCCESS;
    // A service-specific exit code makes the service manager apply the restart actions.
    report(
        ServiceState::Stopped,
        if failed {
            ServiceExitCode::ServiceSpecific(1)
        } else {
            ServiceExitCode::NO_ERROR
        },
    );
}
