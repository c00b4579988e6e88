//! Checking a check-in: it comes from a managed machine, which may be in an attacker's hands, so
//! every field is bounded before it reaches a record, a list or a chat's display name.

use std::net::IpAddr;

use crate::machines::INTERVAL_SECS;
use crate::protocol::{Checkin, is_json_object, is_unprintable, valid_machine_id};
use crate::subjects;

/// The longest logged-on user name, in characters (it becomes the machine user's display name).
pub const MAX_USER_CHARS: usize = 64;
/// The longest operating system description, in characters.
pub const MAX_OS_CHARS: usize = 64;
/// The longest agent version, in characters.
pub const MAX_AGENT_VERSION_CHARS: usize = 32;
/// The most logged-on user sessions one check-in may list (a large terminal server's worth).
pub const MAX_USERS: usize = 64;
/// The longest OS session id of a logged-on user, in characters.
pub const MAX_SESSION_CHARS: usize = 64;
/// `idle_secs` is clamped to a year: longer changes nothing (idle is idle).
pub const MAX_IDLE_SECS: u64 = 366 * 24 * 3600;

/// Why a check-in was dropped.
#[derive(Debug, thiserror::Error)]
pub enum CheckinError {
    #[error("not a check-in subject")]
    NotACheckinSubject,
    /// serde would read a check-in from an array of its fields; only objects are check-ins.
    #[error("not a JSON object")]
    NotAnObject,
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("unsupported check-in version {0}")]
    Version(u32),
    /// The body names another machine than the subject (or no valid machine ID).
    #[error("check-in for {claimed:?} on {subject}'s subject")]
    WrongMachine { claimed: String, subject: String },
    /// A field is too long, has characters that cannot be shown, or is not what it claims.
    #[error("field {field}: {why}")]
    BadField {
        field: &'static str,
        why: &'static str,
    },
}

/// Validates a check-in against the subject it came on (a real agent's or a simulated one's),
/// checks its fields and clamps its numbers into their ranges.
pub fn parse_checkin(subject: &str, payload: &[u8]) -> Result<Checkin, CheckinError> {
    let machine = subjects::machine_of_checkin(subject)
        .or_else(|| subjects::machine_of_simulated_checkin(subject))
        .ok_or(CheckinError::NotACheckinSubject)?;
    if !is_json_object(payload) {
        return Err(CheckinError::NotAnObject);
    }
    let mut c: Checkin = serde_json::from_slice(payload).map_err(CheckinError::Json)?;
    if c.v != 1 {
        return Err(CheckinError::Version(c.v));
    }
    if c.machine != machine || !valid_machine_id(&c.machine) {
        return Err(CheckinError::WrongMachine {
            claimed: c.machine,
            subject: machine,
        });
    }
    if let Some(user) = &c.user {
        check_text("user", user, MAX_USER_CHARS)?;
    }
    if let Some(users) = c.users.as_mut() {
        check_users(users)?;
    }
    check_text("os", &c.os, MAX_OS_CHARS)?;
    check_text("agent_version", &c.agent_version, MAX_AGENT_VERSION_CHARS)?;
    if c.ip.parse::<IpAddr>().is_err() {
        return Err(bad("ip", "not an IP address"));
    }
    c.interval_secs = c
        .interval_secs
        .clamp(*INTERVAL_SECS.start(), *INTERVAL_SECS.end());
    c.idle_secs = c.idle_secs.min(MAX_IDLE_SECS);
    Ok(c)
}

/// Checks the list of logged-on user sessions: at most [`MAX_USERS`], each with a name and a
/// session id that can be shown, no session id twice; idle times clamped.
fn check_users(users: &mut [crate::protocol::CheckinUser]) -> Result<(), CheckinError> {
    if users.len() > MAX_USERS {
        return Err(bad("users", "more than 64 user sessions"));
    }
    let mut seen = std::collections::HashSet::new();
    for u in users.iter_mut() {
        if u.name.trim().is_empty() {
            return Err(bad("users.name", "empty"));
        }
        check_text("users.name", &u.name, MAX_USER_CHARS)?;
        if u.session.trim().is_empty() {
            return Err(bad("users.session", "empty"));
        }
        check_text("users.session", &u.session, MAX_SESSION_CHARS)?;
        if !seen.insert(u.session.as_str()) {
            return Err(bad("users.session", "the same session twice"));
        }
        u.idle_secs = u.idle_secs.min(MAX_IDLE_SECS);
    }
    Ok(())
}

/// Whether `name` and `session` are a user session a check-in could have listed.
pub fn valid_user_session(name: &str, session: &str) -> bool {
    !name.trim().is_empty()
        && !session.trim().is_empty()
        && check_text("users.name", name, MAX_USER_CHARS).is_ok()
        && check_text("users.session", session, MAX_SESSION_CHARS).is_ok()
}

/// Whether a check-in came on the simulator's subject family (only the `natter-simulator` NATS
/// user publishes there) rather than on a real agent's own subject.
pub fn is_simulated_checkin(subject: &str) -> bool {
    subjects::machine_of_simulated_checkin(subject).is_some()
}

/// Checks a free-text field: at most `max_chars` characters, none of them unprintable.
fn check_text(field: &'static str, text: &str, max_chars: usize) -> Result<(), CheckinError> {
    // `len` bounds the character count from above, so long texts are refused without counting.
    if text.len() > max_chars && text.chars().count() > max_chars {
        return Err(bad(field, "too long"));
    }
    if text.chars().any(is_unprintable) {
        return Err(bad(
            field,
            "contains a control or invisible formatting character",
        ));
    }
    Ok(())
}

fn bad(field: &'static str, why: &'static str) -> CheckinError {
    CheckinError::BadField { field, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = json!({
            "v": 1, "machine": "pc1.acme", "agent_version": "1.0", "os": "linux",
            "ip": "10.0.0.1", "user": "bob", "interval_secs": 30,
        });
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn parse(edit: impl FnOnce(&mut Value)) -> Result<Checkin, CheckinError> {
        parse_checkin(&subjects::agent_checkin("pc1.acme"), &body(edit))
    }

    fn refusal(edit: impl FnOnce(&mut Value)) -> String {
        parse(edit).unwrap_err().to_string()
    }

    #[test]
    fn a_checkin_on_its_own_subject_is_accepted() {
        let c = parse(|_| {}).unwrap();
        assert_eq!(c.machine, "pc1.acme");
        assert!(c.audit_done && c.remote_control);
    }

    #[test]
    fn a_simulated_checkin_parses_the_same_and_says_so() {
        let subject = subjects::simulated_checkin("pc1.acme");
        let c = parse_checkin(&subject, &body(|_| {})).unwrap();
        assert_eq!(c.machine, "pc1.acme");
        assert!(is_simulated_checkin(&subject));
        assert!(!is_simulated_checkin(&subjects::agent_checkin("pc1.acme")));
        let err = parse_checkin(&subject, &body(|v| v["machine"] = json!("pc2.acme")));
        assert!(matches!(err, Err(CheckinError::WrongMachine { .. })));
    }

    #[test]
    fn bad_checkins_say_why() {
        let subject = subjects::agent_checkin("pc1.acme");
        let err = |s: &str, body: &[u8]| parse_checkin(s, body).unwrap_err();
        assert!(matches!(
            err("elsewhere", &body(|_| {})),
            CheckinError::NotACheckinSubject
        ));
        assert!(matches!(err(&subject, b"{"), CheckinError::Json(_)));
        let array = br#"[1,"pc1.acme","1.0","linux","10.0.0.1","bob",0,30,true,true]"#;
        assert!(matches!(err(&subject, array), CheckinError::NotAnObject));
        assert!(matches!(
            err(&subject, &body(|v| v["v"] = json!(2))),
            CheckinError::Version(2)
        ));
        assert_eq!(
            refusal(|v| v["machine"] = json!("pc2.acme")),
            "check-in for \"pc2.acme\" on pc1.acme's subject"
        );
    }

    #[test]
    fn the_user_name_is_bounded_in_characters_not_bytes() {
        assert!(parse(|v| v["user"] = json!("é".repeat(MAX_USER_CHARS))).is_ok());
        assert_eq!(
            refusal(|v| v["user"] = json!("x".repeat(MAX_USER_CHARS + 1))),
            "field user: too long"
        );
        assert_eq!(
            refusal(|v| v["user"] = json!("x".repeat(100_000))),
            "field user: too long"
        );
        assert!(parse(|v| v["user"] = Value::Null).unwrap().user.is_none());
    }

    #[test]
    fn names_with_control_or_invisible_characters_are_refused() {
        for name in [
            "bob\nroot",
            "bob\u{7}",
            "\u{202E}bob",
            "b\u{200B}ob",
            "bob\u{0}",
        ] {
            assert_eq!(
                refusal(|v| v["user"] = json!(name)),
                "field user: contains a control or invisible formatting character",
                "{name:?}"
            );
        }
        assert!(parse(|v| v["user"] = json!("Zoë O'Brien-Søren 李")).is_ok());
    }

    #[test]
    fn os_and_agent_version_are_bounded() {
        assert!(parse(|v| v["os"] = json!("x".repeat(MAX_OS_CHARS))).is_ok());
        assert_eq!(
            refusal(|v| v["os"] = json!("x".repeat(MAX_OS_CHARS + 1))),
            "field os: too long"
        );
        assert_eq!(
            refusal(|v| v["agent_version"] = json!("1".repeat(MAX_AGENT_VERSION_CHARS + 1))),
            "field agent_version: too long"
        );
        assert!(refusal(|v| v["os"] = json!("linux\r\n")).starts_with("field os: contains"));
    }

    fn two_users() -> Value {
        json!([{"name": "carol", "session": "console", "idle_secs": 5},
               {"name": "dave", "session": "rdp-tcp#3", "idle_secs": 700}])
    }

    #[test]
    fn a_list_of_user_sessions_is_accepted_and_its_idle_times_clamped() {
        let c = parse(|v| v["users"] = two_users()).unwrap();
        let users = c.users.unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            (users[1].name.as_str(), users[1].session.as_str()),
            ("dave", "rdp-tcp#3")
        );
        let c = parse(|v| {
            v["users"] = json!([{"name": "erin", "session": "2", "idle_secs": u64::MAX}])
        })
        .unwrap();
        assert_eq!(c.users.unwrap()[0].idle_secs, MAX_IDLE_SECS);
        assert_eq!(
            parse(|v| v["users"] = json!([])).unwrap().users,
            Some(vec![])
        );
        let old = parse(|_| {}).unwrap();
        assert_eq!(
            (old.user.as_deref(), old.users),
            (Some("bob"), None),
            "old agents"
        );
    }

    #[test]
    fn bad_user_sessions_are_refused_whole() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!([{"name": "", "session": "1"}]),
                "field users.name: empty",
            ),
            (
                json!([{"name": "a", "session": " "}]),
                "field users.session: empty",
            ),
            (
                json!([{"name": "a\u{202e}b", "session": "1"}]),
                "field users.name: contains a control or invisible formatting character",
            ),
            (
                json!([{"name": "a", "session": "1\n"}]),
                "field users.session: contains a control or invisible formatting character",
            ),
            (
                json!([{"name": "x".repeat(MAX_USER_CHARS + 1), "session": "1"}]),
                "field users.name: too long",
            ),
            (
                json!([{"name": "a", "session": "s".repeat(MAX_SESSION_CHARS + 1)}]),
                "field users.session: too long",
            ),
            (
                json!([{"name": "a", "session": "1"}, {"name": "b", "session": "1"}]),
                "field users.session: the same session twice",
            ),
        ];
        for (users, why) in cases {
            assert_eq!(refusal(|v| v["users"] = users.clone()), why, "{users}");
        }
        let many: Vec<Value> = (0..=MAX_USERS)
            .map(|i| json!({"name": "u", "session": i.to_string()}))
            .collect();
        assert_eq!(
            refusal(|v| v["users"] = json!(many)),
            "field users: more than 64 user sessions"
        );
        assert!(refusal(|v| v["users"] = json!({"name": "a"})).starts_with("invalid JSON"));
        assert!(refusal(|v| v["users"] = json!([{"name": "a"}])).starts_with("invalid JSON"));
    }

    #[test]
    fn the_ip_must_be_an_address() {
        assert!(parse(|v| v["ip"] = json!("fe80::1")).is_ok());
        for ip in ["x", "", "10.0.0.256", "10.0.0.1 ", "<b>"] {
            assert_eq!(
                refusal(|v| v["ip"] = json!(ip)),
                "field ip: not an IP address"
            );
        }
    }

    #[test]
    fn interval_and_idle_time_are_clamped() {
        let interval = |secs: u64| parse(|v| v["interval_secs"] = json!(secs)).unwrap();
        assert_eq!(interval(0).interval_secs, 1);
        assert_eq!(interval(30).interval_secs, 30);
        assert_eq!(interval(u64::MAX).interval_secs, 3600);
        let idle = parse(|v| v["idle_secs"] = json!(u64::MAX)).unwrap();
        assert_eq!(idle.idle_secs, MAX_IDLE_SECS);
    }
}
