//! Linux: who is logged on, from systemd-logind through `loginctl` ([`LogindSessions`]).
//!
//! `loginctl` rather than logind's D-Bus API: it is on every systemd machine, its `Key=Value`
//! output is stable across systemd versions, and a D-Bus client crate would cost more build
//! time than the parsing it saves. The parsing is pure and tested on recorded answers.
//!
//! Which sessions count: `Class=user` (not the login screen, not background sessions such as
//! cron or `user@.service`), not `State=closing` (logged out, processes lingering), and with a
//! desktop — `Type` x11, wayland or mir, or any session with an X `Display` (xrdp and other
//! remote desktops). A text session (a console `tty` login, an SSH shell) has no desktop to
//! open a chat window in, so it is not reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{OsSession, SessionSource};

/// One logind session, with the properties the agent reads (`loginctl show-session`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogindSession {
    /// The session id (`2`, `c1`).
    pub id: String,
    /// The user's login name.
    pub name: String,
    /// The user's uid.
    pub uid: u32,
    /// `user`, `greeter`, `lock-screen`, `background`, `manager`, …
    pub class: String,
    /// `x11`, `wayland`, `mir`, `tty`, `unspecified`.
    pub kind: String,
    /// `online`, `active` or `closing`.
    pub state: String,
    /// Whether it is the active session of its seat (a remote session is always active).
    pub active: bool,
    /// The screen is locked (`LockedHint`; set by the desktop).
    pub locked: bool,
    pub remote: bool,
    /// The desktop said its user is idle.
    pub idle_hint: bool,
    /// When the idle hint last changed, µs since the epoch (0: never).
    pub idle_since_us: u64,
    /// The X display (`:0`), empty when none.
    pub display: String,
    /// The session's leader process.
    pub leader: u32,
}

/// The properties asked of `loginctl show-session`.
const PROPERTIES: [&str; 13] = [
    "Id",
    "Name",
    "User",
    "Class",
    "Type",
    "State",
    "Active",
    "LockedHint",
    "Remote",
    "IdleHint",
    "IdleSinceHint",
    "Display",
    "Leader",
];

/// The session ids in `loginctl list-sessions --no-legend` output: the first column of each
/// line (the other columns differ between systemd versions).
pub fn parse_session_ids(list: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("No sessions") {
            continue;
        }
        let mut columns = line.split_whitespace();
        let id = columns.next().unwrap_or_default();
        let uid = columns.next().unwrap_or_default();
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) || uid.parse::<u32>().is_err() {
            return Err(format!(
                "loginctl list-sessions: a line that is not a session: {line:?}"
            ));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// A session from `loginctl show-session ID -p …` output (`Key=Value` lines).
pub fn parse_session(show: &str) -> Result<LogindSession, String> {
    let mut s = LogindSession::default();
    let mut seen = Vec::new();
    for line in show.lines().filter(|l| !l.trim().is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "loginctl show-session: not a property line: {line:?}"
            ));
        };
        let yes = || match value {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(format!(
                "loginctl show-session: {key}={value:?} is not yes/no"
            )),
        };
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("loginctl show-session: {key}={value:?} is not a number"))
        };
        match key {
            "Id" => s.id = value.to_string(),
            "Name" => s.name = value.to_string(),
            "User" => {
                s.uid = u32::try_from(number()?).map_err(|_| format!("User={value} too large"))?
            }
            "Class" => s.class = value.to_string(),
            "Type" => s.kind = value.to_string(),
            "State" => s.state = value.to_string(),
            "Active" => s.active = yes()?,
            "LockedHint" => s.locked = yes()?,
            "Remote" => s.remote = yes()?,
            "IdleHint" => s.idle_hint = yes()?,
            "IdleSinceHint" => s.idle_since_us = number()?,
            "Display" => s.display = value.to_string(),
            "Leader" => {
                s.leader =
                    u32::try_from(number()?).map_err(|_| format!("Leader={value} too large"))?
            }
            _ => continue,
        }
        seen.push(key);
    }
    let missing: Vec<&str> = ["Id", "Name", "User", "Class", "Type", "Active"]
        .into_iter()
        .filter(|k| !seen.contains(k))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "loginctl show-session: no {} in its answer",
            missing.join(", ")
        ));
    }
    Ok(s)
}

/// The session as the agent reports it, or `None` when it is not a user's desktop session
/// (see the module's doc). `now_us`: the time, µs since the epoch, for the idle time.
pub fn desktop_session(s: &LogindSession, now_us: u64) -> Option<OsSession> {
    let graphical = matches!(s.kind.as_str(), "x11" | "wayland" | "mir") || !s.display.is_empty();
    if s.class != "user" || s.state == "closing" || !graphical {
        return None;
    }
    let idle_secs = match (s.idle_hint, s.idle_since_us) {
        (false, _) => Some(0),
        // Idle, but since when is not known.
        (true, 0) => None,
        (true, since) => Some(now_us.saturating_sub(since) / 1_000_000),
    };
    Some(OsSession {
        user: s.name.clone(),
        session: s.id.clone(),
        // A locked screen has nobody at it, as a switched-away session has not.
        active: s.active && !s.locked,
        idle_secs,
        remote: s.remote,
    })
}

/// The sessions systemd-logind knows, read with `loginctl`.
#[derive(Clone, Debug)]
pub struct LogindSessions {
    /// The `loginctl` to run (`loginctl` from `PATH` unless told otherwise).
    pub loginctl: PathBuf,
}

impl Default for LogindSessions {
    fn default() -> Self {
        LogindSessions {
            loginctl: PathBuf::from("loginctl"),
        }
    }
}

impl LogindSessions {
    pub fn new(loginctl: impl Into<PathBuf>) -> Self {
        LogindSessions {
            loginctl: loginctl.into(),
        }
    }

    /// Runs `loginctl ARGS`; its stdout, or why it failed (its own message).
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.loginctl)
            .args(args)
            .env("SYSTEMD_PAGER", "")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.loginctl.display()))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(format!(
                "{} {} failed ({}): {why}",
                self.loginctl.display(),
                args.first().unwrap_or(&""),
                out.status
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| {
            format!(
                "{} answered with text that is not UTF-8",
                self.loginctl.display()
            )
        })
    }

    /// Every session logind knows, with its properties. A session that ends between the list
    /// and the question about it is left out.
    pub fn all(&self) -> Result<Vec<LogindSession>, String> {
        let ids = parse_session_ids(&self.run(&["list-sessions", "--no-legend"])?)?;
        let mut sessions = Vec::new();
        for id in ids {
            match self.session(&id) {
                Ok(s) => sessions.push(s),
                Err(e) if e.contains("No session") => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(sessions)
    }

    /// One session's properties.
    pub fn session(&self, id: &str) -> Result<LogindSession, String> {
        let mut args = vec!["show-session", id];
        for p in PROPERTIES {
            args.extend(["-p", p]);
        }
        parse_session(&self.run(&args)?)
    }
}

impl SessionSource for LogindSessions {
    fn sessions(&self) -> Result<Vec<OsSession>, String> {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok((self.all()?.iter())
            .filter_map(|s| desktop_session(s, now_us))
            .collect())
    }
}

/// Whether this machine has a systemd-logind to ask (`/run/systemd/system` exists when
/// systemd is the init system; `loginctl` fails without it).
pub fn logind_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `loginctl list-sessions --no-legend` on systemd 252 (Debian 12): a GNOME session on
    /// the console, an xrdp session, an SSH shell, the login screen.
    const LIST_252: &str = "      2 1000 carol seat0 tty2\n     c1  120 gdm   seat0 tty1\n      5 1001 dave             \n      7 1000 carol            pts/1\n";
    /// The same on systemd 256, which added columns.
    const LIST_256: &str =
        "2 1000 carol seat0 tty2 active no -\n5 1001 dave - - active yes 20min ago\n";

    const NOW_US: u64 = 1_764_700_000_000_000;

    fn show(id: &str, extra: &str) -> String {
        format!(
            "Id={id}\nName=carol\nUser=1000\nClass=user\nType=wayland\nState=active\nActive=yes\nRemote=no\nIdleHint=no\nIdleSinceHint=0\nDisplay=\nLeader=1234\n{extra}"
        )
    }

    /// carol's GNOME (Wayland) session on the console, in use.
    const CAROL: &str = "Id=2\nName=carol\nUser=1000\nClass=user\nType=wayland\nState=active\nActive=yes\nRemote=no\nIdleHint=no\nIdleSinceHint=1764699000000000\nDisplay=\nLeader=1234\n";
    /// dave's xrdp session (X11, remote), idle for 20 minutes.
    const DAVE: &str = "Id=5\nName=dave\nUser=1001\nClass=user\nType=x11\nState=online\nActive=yes\nRemote=yes\nIdleHint=yes\nIdleSinceHint=1764698800000000\nDisplay=:10\nLeader=2345\n";
    /// erin's session on the console, switched away from (not active), no idle hint.
    const ERIN: &str = "Id=6\nName=erin\nUser=1002\nClass=user\nType=x11\nState=online\nActive=no\nRemote=no\nIdleHint=no\nIdleSinceHint=0\nDisplay=:1\nLeader=3456\n";
    /// carol's SSH shell.
    const SSH: &str = "Id=7\nName=carol\nUser=1000\nClass=user\nType=tty\nState=active\nActive=yes\nRemote=yes\nIdleHint=no\nIdleSinceHint=0\nDisplay=\nLeader=4567\n";
    /// The login screen.
    const GREETER: &str = "Id=c1\nName=gdm\nUser=120\nClass=greeter\nType=wayland\nState=online\nActive=no\nRemote=no\nIdleHint=no\nIdleSinceHint=0\nDisplay=\nLeader=999\n";

    fn desktop(show: &str) -> Option<OsSession> {
        desktop_session(&parse_session(show).expect("parses"), NOW_US)
    }

    #[test]
    fn session_ids_of_old_and_new_loginctl() {
        assert_eq!(parse_session_ids(LIST_252).unwrap(), ["2", "c1", "5", "7"]);
        assert_eq!(parse_session_ids(LIST_256).unwrap(), ["2", "5"]);
        assert!(parse_session_ids("").unwrap().is_empty());
        assert!(parse_session_ids("No sessions.\n").unwrap().is_empty());
    }

    #[test]
    fn two_users_one_idle_and_one_inactive() {
        let carol = desktop(CAROL).expect("carol's desktop counts");
        assert_eq!(
            carol,
            OsSession {
                user: "carol".into(),
                session: "2".into(),
                active: true,
                idle_secs: Some(0),
                remote: false,
            }
        );
        let dave = desktop(DAVE).expect("dave's remote desktop counts");
        assert_eq!((dave.idle_secs, dave.remote), (Some(1200), true));
        let erin = desktop(ERIN).expect("erin's switched-away desktop counts");
        assert!(!erin.active);

        // What the check-in reports for them: each user with their session; the inactive one
        // and the one idle for 20 minutes count as "not active for 10 minutes".
        let presence = super::super::presence_of(&[carol, dave, erin]);
        let users: Vec<_> = (presence.users.iter())
            .map(|u| (u.name.as_str(), u.session.as_str(), u.idle_secs))
            .collect();
        assert_eq!(
            users,
            [
                ("carol", "2", 0),
                ("dave", "5", 1200),
                ("erin", "6", super::super::INACTIVE_IDLE_SECS)
            ]
        );
    }

    #[test]
    fn text_sessions_the_login_screen_and_closing_sessions_are_not_desktops() {
        assert_eq!(desktop(SSH), None, "an SSH shell has no desktop");
        assert_eq!(desktop(GREETER), None, "the login screen is nobody's");
        assert_eq!(desktop(&show("3", "State=closing\n")), None);
        let locked = desktop(&show("3", "LockedHint=yes\n")).unwrap();
        assert!(!locked.active, "a locked screen is not active");
        assert_eq!(desktop(&show("3", "Class=background\n")), None);
        // A remote desktop that calls itself unspecified but has an X display counts.
        assert!(desktop(&show("4", "Type=unspecified\nDisplay=:11\n")).is_some());
    }

    #[test]
    fn idle_without_a_time_is_unknown() {
        let s = desktop(&show("3", "IdleHint=yes\nIdleSinceHint=0\n")).unwrap();
        assert_eq!(s.idle_secs, None);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = parse_session_ids("Failed to connect to bus\n").unwrap_err();
        assert!(err.contains("not a session"), "{err}");
        let err = parse_session("Id=2\nName=carol\n").unwrap_err();
        assert!(err.contains("no User, Class, Type, Active"), "{err}");
        let err = parse_session(&show("2", "Active=maybe\n")).unwrap_err();
        assert!(err.contains("Active=\"maybe\" is not yes/no"), "{err}");
        let err = parse_session("hello\n").unwrap_err();
        assert!(err.contains("not a property line"), "{err}");
        let err = parse_session(&show("2", "User=-1\n")).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
    }

    /// The real logind of this machine, where it has one: the source answers, and every
    /// session it reports is a user's desktop session logind lists.
    #[test]
    fn the_real_logind_answers() {
        if !logind_running() {
            eprintln!(
                "skipped: this machine has no systemd-logind (systemd is not its init system)"
            );
            return;
        }
        let source = LogindSessions::default();
        let all = source.all().expect("loginctl answers");
        let desktops = source.sessions().expect("loginctl answers");
        for d in &desktops {
            let s = all.iter().find(|s| s.id == d.session).expect("listed");
            assert_eq!(
                (s.name.as_str(), s.class.as_str()),
                (d.user.as_str(), "user")
            );
        }
        eprintln!(
            "logind: {} sessions, {} desktops: {desktops:?}",
            all.len(),
            desktops.len()
        );
    }
}
