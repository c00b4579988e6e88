//! The machine's own view of who is logged on ([`SessionSource`]), so a real agent reports the
//! users its OS sees instead of being told them on the command line.
//!
//! Each OS has its source behind the one trait (systemd-logind on Linux, the WTS API on
//! Windows); the check-in code and the simulator only ever see a [`Presence`].

#[cfg(target_os = "linux")]
pub mod linux_open;
#[cfg(target_os = "linux")]
pub mod logind;

pub mod wts;
#[cfg(windows)]
pub mod wts_open;

use std::sync::Arc;
use std::time::Duration;

use natter_actors::machines::IDLE_AFTER_SECS;
use natter_actors::protocol::CheckinUser;
use tokio_util::sync::CancellationToken;

use crate::{AgentHandle, Presence};

/// One logged-on user session as the OS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsSession {
    /// The user's login name.
    pub user: String,
    /// The OS's id of the session (logind's session id such as `3` or `c2`; Windows' session
    /// id or WinStation name such as `rdp-tcp#3`); the agent opens a chat window in it.
    pub session: String,
    /// Whether the session is the active one of its seat / connected (a locked or
    /// disconnected session is not active).
    pub active: bool,
    /// Seconds since the user's last input in this session, where the OS knows it.
    pub idle_secs: Option<u64>,
    /// A remote session (RDP, SSH with a desktop, …) rather than the machine's console.
    pub remote: bool,
}

/// Where the agent learns who is logged on.
pub trait SessionSource: Send + Sync {
    /// Every user session with a desktop (graphical or remote), in the OS's order. Blocking:
    /// call it from `spawn_blocking`. `Err` says why the OS could not be asked.
    fn sessions(&self) -> Result<Vec<OsSession>, String>;
}

/// Seconds of idle time reported for a session that is not active (locked or disconnected):
/// the check-in states treat it as "user not active for 10 minutes" at once.
pub const INACTIVE_IDLE_SECS: u64 = 600;

/// The check-in presence for `sessions`: nobody, one user (reported as the machine's user, as
/// agents always have) or several (a terminal server; each with its session).
pub fn presence_of(sessions: &[OsSession]) -> Presence {
    let idle = |s: &OsSession| {
        let idle = s.idle_secs.unwrap_or(0);
        if s.active {
            idle
        } else {
            idle.max(INACTIVE_IDLE_SECS)
        }
    };
    match sessions {
        [] => Presence::user(None),
        [only] => Presence {
            idle_secs: idle(only),
            ..Presence::user(Some(&only.user))
        },
        several => {
            let users: Vec<CheckinUser> = (several.iter())
                .map(|s| CheckinUser {
                    name: s.user.clone(),
                    session: s.session.clone(),
                    idle_secs: idle(s),
                })
                .collect();
            Presence {
                user: users.first().map(|u| u.name.clone()),
                idle_secs: users.first().map(|u| u.idle_secs).unwrap_or(0),
                users,
                ..Presence::default()
            }
        }
    }
}

/// What a change of makes the agent check in at once: who is logged on in which session, and
/// whether each is active (idle for less than 10 minutes). Idle seconds alone go out with the
/// next regular check-in.
fn check_in_state(p: &Presence) -> Vec<(String, String, bool)> {
    if p.users.is_empty() {
        return (p.user.iter())
            .map(|u| (u.clone(), String::new(), p.idle_secs < IDLE_AFTER_SECS))
            .collect();
    }
    (p.users.iter())
        .map(|u| {
            let active = u.idle_secs < IDLE_AFTER_SECS;
            (u.name.clone(), u.session.clone(), active)
        })
        .collect()
}

/// How often a real agent asks its OS who is logged on.
pub const POLL_EVERY: Duration = Duration::from_secs(10);

/// Keeps `handle`'s presence the OS's: asks `source` every `every` until `shutdown`, and checks
/// in at once when a user logs on or off or becomes active or inactive. When the OS cannot be
/// asked, the last presence stays and the reason is logged (once, until it answers again).
pub async fn follow(
    source: Arc<dyn SessionSource>,
    handle: AgentHandle,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let asked = Arc::clone(&source);
        match tokio::task::spawn_blocking(move || asked.sessions()).await {
            Ok(Ok(sessions)) => {
                if failing {
                    tracing::info!("the OS answers again who is logged on");
                    failing = false;
                }
                let old = handle.presence();
                let new = Presence {
                    audit_done: old.audit_done,
                    remote_control: old.remote_control,
                    ..presence_of(&sessions)
                };
                let changed = check_in_state(&old) != check_in_state(&new);
                handle.set_presence(new);
                if changed {
                    handle.checkin_now();
                }
            }
            Ok(Err(why)) if !failing => {
                tracing::warn!(%why, "cannot learn from the OS who is logged on; reporting the last known users");
                failing = true;
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!(error = %e, "asking the OS who is logged on failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, session: &str, active: bool, idle: Option<u64>) -> OsSession {
        OsSession {
            user: user.into(),
            session: session.into(),
            active,
            idle_secs: idle,
            remote: false,
        }
    }

    #[test]
    fn nobody_one_user_and_several() {
        assert_eq!(presence_of(&[]).user, None);

        let one = presence_of(&[session("carol", "2", true, Some(12))]);
        assert_eq!(one.user.as_deref(), Some("carol"));
        assert_eq!(one.idle_secs, 12);
        assert!(
            one.users.is_empty(),
            "one user is reported as the machine's user"
        );

        let two = presence_of(&[
            session("carol", "1", false, Some(5)),
            session("dave", "rdp-tcp#3", true, None),
        ]);
        let names: Vec<_> = two
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.idle_secs))
            .collect();
        assert_eq!(names, [("carol", INACTIVE_IDLE_SECS), ("dave", 0)]);
    }
}
