//! Property tests of every decoder of outside input in the actors crate: check-ins (from
//! machines), agent replies, session commands (JSON from gateways, built from browser bodies) and
//! the ID validators. Whatever the input, each answers Ok or a clean error, never a panic, and
//! what it accepts stays inside its documented bounds. Case counts are bounded so CI stays fast.

use natter_actors::fleet::checkin::{
    MAX_AGENT_VERSION_CHARS, MAX_IDLE_SECS, MAX_OS_CHARS, MAX_USER_CHARS,
};
use natter_actors::fleet::parse_checkin;
use natter_actors::machines::INTERVAL_SECS;
use natter_actors::protocol::{
    AgentWindow, Checkin, MAX_AGENT_DETAIL_CHARS, SessionCommand, SessionRequest, agent_window,
    is_unprintable, valid_client_id, valid_machine_id, valid_session_id,
};
use natter_actors::subjects;
use proptest::prelude::*;
use serde_json::{Value, json};

const MACHINE: &str = "pc1.sales.acme";

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Any JSON value, a few levels deep, with the keys the decoders know among random ones.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("cmd".to_string()),
        Just("by".to_string()),
        Just("kind".to_string()),
        Just("text".to_string()),
        Just("ok".to_string()),
        Just("detail".to_string()),
        Just("user".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop_oneof![Just("send"), Just("end"), Just("operator"), Just("open")]
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A check-in whose fields are any text and numbers (valid or not).
fn any_checkin_json() -> impl Strategy<Value = Value> {
    (
        any::<String>(),
        prop::option::of(any::<String>()),
        any::<String>(),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![
            Just("10.0.0.7".to_string()),
            Just("::1".to_string()),
            any::<String>()
        ],
    )
        .prop_map(|(os, user, version, interval, idle, ip)| {
            json!({
                "v": 1, "machine": MACHINE, "agent_version": version, "os": os, "ip": ip,
                "user": user, "idle_secs": idle, "interval_secs": interval,
            })
        })
}

/// A check-in an honest agent could send.
fn valid_checkin() -> impl Strategy<Value = Checkin> {
    (
        "[ -~]{0,64}",
        prop::option::of("[\\p{L} .'-]{1,64}"),
        "[0-9.a-z-]{1,32}",
        INTERVAL_SECS,
        0..=MAX_IDLE_SECS,
        any::<[u8; 4]>(),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(os, user, agent_version, interval_secs, idle_secs, ip, (audit, remote))| Checkin {
                v: 1,
                machine: MACHINE.into(),
                agent_version,
                os,
                ip: std::net::Ipv4Addr::from(ip).to_string(),
                user,
                idle_secs,
                users: None,
                interval_secs,
                audit_done: audit,
                remote_control: remote,
            },
        )
}

fn printable_within(text: &str, max_chars: usize) -> bool {
    text.chars().count() <= max_chars && !text.chars().any(is_unprintable)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_on_a_checkin_subject_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_checkin(&subjects::agent_checkin(MACHINE), &bytes);
    }

    #[test]
    fn any_json_is_a_checkin_or_a_clean_error(value in any_json()) {
        let body = serde_json::to_vec(&value).unwrap();
        let _ = parse_checkin(&subjects::agent_checkin(MACHINE), &body);
    }

    #[test]
    fn an_accepted_checkin_is_within_every_bound(value in any_checkin_json()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Ok(c) = parse_checkin(&subjects::agent_checkin(MACHINE), &body) {
            prop_assert!(c.user.as_deref().is_none_or(|u| printable_within(u, MAX_USER_CHARS)));
            prop_assert!(printable_within(&c.os, MAX_OS_CHARS));
            prop_assert!(printable_within(&c.agent_version, MAX_AGENT_VERSION_CHARS));
            prop_assert!(c.ip.parse::<std::net::IpAddr>().is_ok());
            prop_assert!(INTERVAL_SECS.contains(&c.interval_secs));
            prop_assert!(c.idle_secs <= MAX_IDLE_SECS);
        }
    }

    #[test]
    fn a_valid_checkin_round_trips(c in valid_checkin()) {
        let body = serde_json::to_vec(&c).unwrap();
        let parsed = parse_checkin(&subjects::agent_checkin(MACHINE), &body);
        prop_assert_eq!(parsed.map_err(|e| e.to_string()), Ok(c));
    }

    #[test]
    fn an_agent_reply_detail_is_bounded_and_printable(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_, detail) = agent_window(&bytes);
        prop_assert!(printable_within(&detail, MAX_AGENT_DETAIL_CHARS));
    }

    #[test]
    fn any_agent_reply_detail_is_kept_bounded(ok in any::<bool>(), detail in any::<String>()) {
        let body = serde_json::to_vec(&json!({"ok": ok, "detail": detail})).unwrap();
        let (status, kept) = agent_window(&body);
        let expected = if ok { AgentWindow::Opened } else { AgentWindow::Failed };
        prop_assert_eq!(status, expected);
        prop_assert!(printable_within(&kept, MAX_AGENT_DETAIL_CHARS));
        if printable_within(&detail, MAX_AGENT_DETAIL_CHARS) && !detail.contains(['\n', '\r', '\t']) {
            prop_assert_eq!(kept, detail, "a plain short detail is kept as sent");
        }
    }

    #[test]
    fn any_json_is_a_session_command_or_a_clean_error(value in any_json()) {
        let text = value.to_string();
        if let Ok(cmd) = serde_json::from_str::<SessionCommand>(&text) {
            // What decodes encodes again and decodes to the same command.
            let again = serde_json::to_string(&cmd).unwrap();
            prop_assert!(serde_json::from_str::<SessionCommand>(&again).is_ok());
        }
        let _ = serde_json::from_str::<SessionRequest>(&text);
    }

    #[test]
    fn validators_never_panic_and_accept_only_their_alphabet(s in any::<String>()) {
        if valid_machine_id(&s) {
            prop_assert!(s.len() <= 253 && s.contains('.'));
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        }
        if valid_client_id(&s) {
            prop_assert!((1..=64).contains(&s.len()));
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)));
        }
        if valid_session_id(&s) {
            prop_assert_eq!(s.len(), 26);
        }
    }

    #[test]
    fn a_ulid_is_a_session_id(n in any::<u128>()) {
        prop_assert!(valid_session_id(&ulid::Ulid(n).to_string()));
    }

    #[test]
    fn machine_ids_of_the_alphabet_are_valid(segments in prop::collection::vec("[a-z0-9_-]{1,20}", 2..6)) {
        prop_assert!(valid_machine_id(&segments.join(".")));
    }
}

/// Strict shapes: a session command on the wire is a JSON object; serde would read an internally
/// tagged enum from an array too, so this holds only because the wire type is a flattened struct.
#[test]
fn an_array_is_never_a_session_request() {
    let by = json!({"kind": "operator", "id": "alice", "name": "Alice"});
    let object = json!({"cmd": "send", "by": by, "client_id": "c1", "text": "hi"});
    assert!(serde_json::from_value::<SessionRequest>(object).is_ok());
    for array in [
        json!(["send", by, "c1", "hi"]),
        json!([{"cmd": "send", "by": by, "client_id": "c1", "text": "hi"}]),
        json!([]),
    ] {
        assert!(
            serde_json::from_value::<SessionRequest>(array.clone()).is_err(),
            "{array}"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_array_is_a_checkin(items in prop::collection::vec(any_json(), 0..12)) {
        let body = serde_json::to_vec(&Value::Array(items)).unwrap();
        prop_assert!(parse_checkin(&subjects::agent_checkin(MACHINE), &body).is_err());
    }

    #[test]
    fn no_array_decodes_as_a_session_request(items in prop::collection::vec(any_json(), 0..6)) {
        prop_assert!(serde_json::from_value::<SessionRequest>(Value::Array(items)).is_err());
    }
}
