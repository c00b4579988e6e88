//! Linux: opens a chat window as the session's user, on that user's screen
//! ([`DesktopOpener`]).
//!
//! The agent runs as a system service (root); a browser must run as the user, in the user's
//! session environment. The opener asks logind for the session (its user, uid, X display,
//! leader), builds that environment, and runs `xdg-open URL` through `runuser -u USER` (or
//! directly when the agent already runs as that user). The environment is built from scratch:
//! nothing of the service's (such as its enrollment token) reaches the user's processes.
//!
//! The environment: `XDG_RUNTIME_DIR=/run/user/UID`, the user's D-Bus (`/run/user/UID/bus`), the
//! session's X `DISPLAY` from logind and a Wayland socket found in the runtime directory; then
//! the display variables (`DISPLAY`, `WAYLAND_DISPLAY`, `XAUTHORITY`, `XDG_CURRENT_DESKTOP`, …)
//! of the first process of the session that has a display, which are the desktop's own.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use natter_actors::protocol::ChatUser;

use super::SessionSource;
use super::logind::{LogindSession, LogindSessions};
use crate::Opener;

/// The variables copied from a process of the user's desktop session.
const DESKTOP_VARS: [&str; 8] = [
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_CURRENT_DESKTOP",
    "XDG_SESSION_DESKTOP",
    "DESKTOP_SESSION",
    "DBUS_SESSION_BUS_ADDRESS",
    "LANG",
];

/// How long the opener waits for `xdg-open` to say whether it worked; one still running after
/// this has started a browser that has the URL (some browsers keep `xdg-open` waiting until
/// they are closed).
pub const OPEN_WAIT: Duration = Duration::from_secs(3);

/// The environment a program needs to show a window in session `s`.
///
/// `runtime_dir`: the names in the user's `/run/user/UID`; `session_envs`: the environments
/// of the session's processes (`KEY=VALUE` each), in process order.
pub fn session_env(
    s: &LogindSession,
    runtime_dir: &[String],
    session_envs: &[Vec<String>],
) -> Vec<(String, String)> {
    let run = format!("/run/user/{}", s.uid);
    let mut env: Vec<(String, String)> = vec![
        ("XDG_RUNTIME_DIR".into(), run.clone()),
        ("XDG_SESSION_ID".into(), s.id.clone()),
        ("XDG_SESSION_TYPE".into(), s.kind.clone()),
    ];
    let set = |env: &mut Vec<(String, String)>, key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    if runtime_dir.iter().any(|n| n == "bus") {
        set(
            &mut env,
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={run}/bus"),
        );
    }
    if !s.display.is_empty() {
        set(&mut env, "DISPLAY", s.display.clone());
    }
    let mut wayland: Vec<&String> = (runtime_dir.iter())
        .filter(|n| n.starts_with("wayland-") && !n.ends_with(".lock"))
        .collect();
    wayland.sort();
    if s.kind == "wayland"
        && let Some(socket) = wayland.first()
    {
        set(&mut env, "WAYLAND_DISPLAY", socket.to_string());
    }
    fn has(vars: &[String], prefixes: &[&str]) -> bool {
        vars.iter()
            .any(|v| prefixes.iter().any(|p| v.starts_with(p)))
    }
    // A process with a display has the desktop's variables; without one (GNOME on Wayland keeps
    // its shell outside the session's scope), the session's own desktop name still helps
    // xdg-open pick the desktop's way of opening a URL.
    let desktop = (session_envs.iter())
        .find(|vars| has(vars, &["DISPLAY=", "WAYLAND_DISPLAY="]))
        .or_else(|| (session_envs.iter()).find(|vars| has(vars, &["XDG_CURRENT_DESKTOP="])));
    for var in desktop.into_iter().flatten() {
        if let Some((key, value)) = var.split_once('=')
            && DESKTOP_VARS.contains(&key)
        {
            set(&mut env, key, value.to_string());
        }
    }
    env
}

/// Opens chat windows in the user's desktop session, found through logind.
pub struct DesktopOpener {
    pub sessions: LogindSessions,
    /// The program that opens a URL as the user (`xdg-open`), with its arguments before the URL.
    pub program: Vec<String>,
    /// Whether systemd runs this machine (then windows open through `systemd-run`).
    pub systemd: bool,
}

impl DesktopOpener {
    pub fn new(sessions: LogindSessions) -> Self {
        DesktopOpener {
            sessions,
            program: vec!["xdg-open".into()],
            systemd: super::logind::logind_running(),
        }
    }

    /// The session a window for `user` goes to: that session, or (the machine's only user)
    /// the active desktop session.
    fn target(&self, user: Option<&ChatUser>) -> Result<LogindSession, String> {
        if let Some(u) = user {
            let s = self.sessions.session(&u.session)?;
            if s.name != u.name {
                return Err(format!(
                    "session {} is {}'s, not {}'s",
                    u.session, s.name, u.name
                ));
            }
            return Ok(s);
        }
        let desktops = self.sessions.sessions()?;
        let chosen = (desktops.iter().find(|d| d.active))
            .or(desktops.first())
            .ok_or("nobody is logged on to a desktop")?;
        self.sessions.session(&chosen.session)
    }

    /// How this agent becomes `s`'s user.
    fn launch(&self, s: &LogindSession) -> Result<Launch, String> {
        let uid = effective_uid();
        if uid == Some(s.uid) {
            Ok(Launch::Direct)
        } else if uid != Some(0) {
            Err(format!(
                "the agent runs as uid {} and cannot open a window for {}: run it as root (as its service does)",
                uid.map_or("?".into(), |u| u.to_string()),
                s.name
            ))
        } else if self.systemd {
            Ok(Launch::SystemdRun)
        } else {
            Ok(Launch::Runuser)
        }
    }
}

/// How the opener becomes the session's user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// The agent already runs as the user.
    Direct,
    /// A transient system service with the user's uid (`systemd-run --uid`; root under
    /// systemd): started by systemd itself, so the browser is outside the agent service's
    /// sandbox (`ProtectSystem=strict` would leave it a read-only disk) and cgroup (restarting
    /// the agent would close it).
    SystemdRun,
    /// `runuser -u USER` (root without systemd).
    Runuser,
}

/// The PATH a browser gets.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command line (program first) that opens `url` with `program` as `s`'s user, and the
/// environment to run it with (the command's own: for `systemd-run` it is passed in `-E`).
pub fn launch_command(
    launch: Launch,
    s: &LogindSession,
    env: &[(String, String)],
    program: &[String],
    url: &str,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), PATH.into()),
        ("USER".into(), s.name.clone()),
        ("LOGNAME".into(), s.name.clone()),
    ];
    vars.extend(env.iter().cloned());
    let mut argv: Vec<String> = Vec::new();
    match launch {
        Launch::Direct => {
            if let Some(home) = std::env::var_os("HOME") {
                vars.push(("HOME".into(), home.to_string_lossy().into_owned()));
            }
        }
        Launch::Runuser => {
            argv.extend(["runuser".into(), "-u".into(), s.name.clone(), "--".into()])
        }
        Launch::SystemdRun => {
            argv.extend([
                "systemd-run".into(),
                "--quiet".into(),
                "--wait".into(),
                "--collect".into(),
                format!("--uid={}", s.name),
                format!("--unit=natter-chat-{}-{}", s.id, unique()),
                "--property=WorkingDirectory=~".into(),
            ]);
            argv.extend(vars.iter().map(|(k, v)| format!("--setenv={k}={v}")));
            argv.push("--".into());
            vars = vec![("PATH".into(), PATH.into())];
        }
    }
    argv.extend(program.iter().cloned());
    argv.push(url.to_string());
    (argv, vars)
}

/// A number that differs for every window this process opens (unit and file names).
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// What `xdg-open`'s exit status says (its manual's list).
fn xdg_open_status(code: Option<i32>) -> &'static str {
    match code {
        Some(1) => "error in command line syntax",
        Some(2) => "one of the files passed on the command line did not exist",
        Some(3) => "a required tool could not be found (no browser?)",
        Some(4) => "the action failed",
        _ => "",
    }
}

impl Opener for DesktopOpener {
    fn open(&self, machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String> {
        let opened = self.open_in_session(user, url);
        match &opened {
            Ok(session) => tracing::info!(machine, session, "chat window opened"),
            Err(why) => tracing::warn!(machine, %why, "could not open a chat window"),
        }
        opened.map(|_| ())
    }
}

impl DesktopOpener {
    /// Opens `url` for `user`; the session it went to, or why not.
    fn open_in_session(&self, user: Option<&ChatUser>, url: &str) -> Result<String, String> {
        let s = self.target(user)?;
        let launch = self.launch(&s)?;
        let run = format!("/run/user/{}", s.uid);
        let env = session_env(&s, &dir_names(Path::new(&run)), &process_envs(s.leader));
        if !env
            .iter()
            .any(|(k, _)| k == "DISPLAY" || k == "WAYLAND_DISPLAY")
        {
            return Err(format!(
                "session {} of {} has no display to open a window on",
                s.id, s.name
            ));
        }
        let (argv, vars) = launch_command(launch, &s, &env, &self.program, url);
        // Its messages go to a file, not a pipe: a browser that keeps running must never block
        // on a pipe nobody reads, nor die of one whose reader (this agent) restarted.
        let errors_path = std::env::temp_dir().join(format!("natter-open-{}", unique()));
        let errors = (std::fs::OpenOptions::new().write(true).create_new(true))
            .mode(0o600)
            .open(&errors_path)
            .map_err(|e| format!("cannot make {}: {e}", errors_path.display()))?;
        let reader = std::fs::File::open(&errors_path);
        let _ = std::fs::remove_file(&errors_path);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(vars)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors)
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", argv[0]))?;
        let started = Instant::now();
        while started.elapsed() < OPEN_WAIT {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(s.id),
                Ok(Some(status)) => {
                    let mut why = String::new();
                    if let Ok(mut r) = reader {
                        let _ = std::io::Read::read_to_string(&mut r, &mut why);
                    }
                    let mut why = why.trim().to_string();
                    let meaning = xdg_open_status(status.code());
                    if self.program[0].ends_with("xdg-open") && !meaning.is_empty() {
                        why = [why.as_str(), meaning].join(if why.is_empty() { "" } else { "; " });
                    }
                    if launch == Launch::SystemdRun && why.is_empty() {
                        why = "its messages are in the journal (journalctl -t xdg-open)".into();
                    }
                    return Err(format!(
                        "{} for {} failed ({status}): {why}",
                        self.program[0], s.name
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for {}: {e}", argv[0])),
            }
        }
        // Still running: a browser that has the URL. Reap it whenever it ends.
        std::thread::spawn(move || child.wait());
        Ok(s.id)
    }
}

/// The agent's effective uid (the owner of its `/proc/self`).
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The names in `dir` (none when it cannot be read).
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The environments of the processes in the cgroup of `leader` (the session's scope), the
/// leader's first.
fn process_envs(leader: u32) -> Vec<Vec<String>> {
    let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{leader}/cgroup")) else {
        return Vec::new();
    };
    // cgroup v2: one line `0::/user.slice/user-1000.slice/session-2.scope`.
    // Only a session's own scope: another cgroup (the root one, a service's) holds processes
    // that are not the session's.
    let Some(path) = (cgroup.lines())
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.ends_with(".scope") && p.contains("/session-"))
    else {
        return Vec::new();
    };
    let procs =
        std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.procs")).unwrap_or_default();
    let mut pids: Vec<u32> = procs
        .lines()
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    pids.retain(|p| *p != leader);
    pids.insert(0, leader);
    pids.iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
        .map(|environ| {
            (environ.split(|b| *b == 0))
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(kind: &str, display: &str) -> LogindSession {
        LogindSession {
            id: "2".into(),
            name: "carol".into(),
            uid: 1000,
            class: "user".into(),
            kind: kind.into(),
            state: "active".into(),
            active: true,
            display: display.into(),
            leader: 1234,
            ..LogindSession::default()
        }
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn argv_and_vars(launch: Launch) -> (Vec<String>, Vec<(String, String)>) {
        let env = vec![("DISPLAY".to_string(), ":1".to_string())];
        launch_command(
            launch,
            &session("x11", ":1"),
            &env,
            &["xdg-open".to_string()],
            "http://n/m/S/#t=1",
        )
    }

    #[test]
    fn root_under_systemd_opens_through_a_transient_service_of_the_user() {
        let (argv, vars) = argv_and_vars(Launch::SystemdRun);
        assert_eq!(
            argv[..5],
            [
                "systemd-run",
                "--quiet",
                "--wait",
                "--collect",
                "--uid=carol"
            ]
        );
        assert!(argv[5].starts_with("--unit=natter-chat-2-"), "{argv:?}");
        for wanted in [
            "--setenv=DISPLAY=:1",
            "--setenv=USER=carol",
            "--property=WorkingDirectory=~",
        ] {
            assert!(argv.contains(&wanted.to_string()), "{wanted} in {argv:?}");
        }
        let dashes = argv.iter().position(|a| a == "--").expect("--");
        assert_eq!(argv[dashes + 1..], ["xdg-open", "http://n/m/S/#t=1"]);
        assert_eq!(vars, [("PATH".to_string(), PATH.to_string())]);
    }

    #[test]
    fn root_without_systemd_opens_through_runuser() {
        let (argv, vars) = argv_and_vars(Launch::Runuser);
        assert_eq!(
            argv,
            [
                "runuser",
                "-u",
                "carol",
                "--",
                "xdg-open",
                "http://n/m/S/#t=1"
            ]
        );
        assert_eq!(get(&vars, "DISPLAY"), Some(":1"));
        assert_eq!(get(&vars, "LOGNAME"), Some("carol"));
    }

    #[test]
    fn a_wayland_session_gets_its_socket_and_bus() {
        let env = session_env(
            &session("wayland", ""),
            &names(&["bus", "wayland-0.lock", "wayland-0", "pulse"]),
            &[
                names(&["PATH=/usr/bin"]),
                names(&["XDG_CURRENT_DESKTOP=GNOME", "XDG_SESSION_TYPE=wayland"]),
            ],
        );
        assert_eq!(get(&env, "XDG_CURRENT_DESKTOP"), Some("GNOME"));
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), Some("/run/user/1000"));
        assert_eq!(
            get(&env, "DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1000/bus")
        );
        assert_eq!(get(&env, "WAYLAND_DISPLAY"), Some("wayland-0"));
        assert_eq!(get(&env, "DISPLAY"), None);
        assert_eq!(get(&env, "XDG_SESSION_TYPE"), Some("wayland"));
    }

    #[test]
    fn an_x11_session_takes_its_desktop_variables_from_its_processes() {
        let envs = vec![
            // The leader (gdm-session-worker) has no display.
            names(&["PATH=/usr/bin", "USER=carol"]),
            names(&[
                "DISPLAY=:1",
                "XAUTHORITY=/run/user/1000/gdm/Xauthority",
                "XDG_CURRENT_DESKTOP=GNOME",
                "NATTER_AGENT_ENROLL_TOKEN=not-copied",
                "HOME=/home/carol",
            ]),
        ];
        let env = session_env(&session("x11", ":0"), &names(&["bus"]), &envs);
        assert_eq!(get(&env, "DISPLAY"), Some(":1"), "the desktop's own wins");
        assert_eq!(
            get(&env, "XAUTHORITY"),
            Some("/run/user/1000/gdm/Xauthority")
        );
        assert_eq!(get(&env, "XDG_CURRENT_DESKTOP"), Some("GNOME"));
        assert_eq!(get(&env, "NATTER_AGENT_ENROLL_TOKEN"), None);
        assert_eq!(get(&env, "HOME"), None, "runuser sets HOME");
        assert_eq!(env.iter().filter(|(k, _)| k == "DISPLAY").count(), 1);
    }
}
