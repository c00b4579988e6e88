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

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
    let desktop = session_envs.iter().find(|vars| {
        vars.iter()
            .any(|v| v.starts_with("DISPLAY=") || v.starts_with("WAYLAND_DISPLAY="))
    });
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
    /// `runuser`, to become the user.
    pub runuser: PathBuf,
}

impl DesktopOpener {
    pub fn new(sessions: LogindSessions) -> Self {
        DesktopOpener {
            sessions,
            program: vec!["xdg-open".into()],
            runuser: PathBuf::from("runuser"),
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

    /// The command that runs the browser as `s`'s user with `env`.
    fn command(&self, s: &LogindSession, env: &[(String, String)], url: &str) -> Command {
        let (first, rest) = self.program.split_first().expect("a program");
        let as_user = effective_uid() == Some(s.uid);
        let mut command = if as_user {
            Command::new(first)
        } else {
            let mut c = Command::new(&self.runuser);
            c.args(["-u", &s.name, "--", first]);
            c
        };
        command
            .args(rest)
            .arg(url)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("USER", &s.name)
            .env("LOGNAME", &s.name)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if as_user && let Some(home) = std::env::var_os("HOME") {
            command.env("HOME", home);
        }
        command
    }
}

impl Opener for DesktopOpener {
    fn open(&self, _machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String> {
        let s = self.target(user)?;
        let uid = effective_uid();
        if uid != Some(0) && uid != Some(s.uid) {
            return Err(format!(
                "the agent runs as uid {} and cannot open a window for {}: run it as root (as its service does)",
                uid.map_or("?".into(), |u| u.to_string()),
                s.name
            ));
        }
        let run = PathBuf::from(format!("/run/user/{}", s.uid));
        let env = session_env(&s, &dir_names(&run), &process_envs(s.leader));
        if !env.iter().any(|(k, _)| k == "DISPLAY" || k == "WAYLAND_DISPLAY") {
            return Err(format!(
                "session {} of {} has no display to open a window on",
                s.id, s.name
            ));
        }
        let mut child = (self.command(&s, &env, url).spawn())
            .map_err(|e| format!("could not run {}: {e}", self.program[0]))?;
        let started = Instant::now();
        while started.elapsed() < OPEN_WAIT {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut why = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut err, &mut why);
                    }
                    return Err(format!(
                        "{} for {} failed ({status}): {}",
                        self.program[0],
                        s.name,
                        why.trim()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for {}: {e}", self.program[0])),
            }
        }
        // Still running: a browser that has the URL. Reap it whenever it ends.
        std::thread::spawn(move || child.wait());
        Ok(())
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
    let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Vec::new();
    };
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.procs"))
        .unwrap_or_default();
    let mut pids: Vec<u32> = procs.lines().filter_map(|p| p.trim().parse().ok()).collect();
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

    #[test]
    fn a_wayland_session_gets_its_socket_and_bus() {
        let env = session_env(
            &session("wayland", ""),
            &names(&["bus", "wayland-0.lock", "wayland-0", "pulse"]),
            &[],
        );
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
