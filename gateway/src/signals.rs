//! Typing indicators and read receipts ("signals"): "… is typing" and "seen up to seq N".
//!
//! A signal is not a session event: it is never stored, has no sequence and is never replayed,
//! so it cannot disturb the order or the resume of a session's events. A member posts one to
//! the gateway, which checks membership (the session's actor, as for a read), throttles it per
//! (session, member) and publishes it on core NATS ([`subjects::session_signal`]); every
//! gateway whose browsers follow the session has subscribed to that subject through its hub and
//! writes the signal on their event streams as an SSE event without an `id` (docs/api.md). A
//! signal lost on the way (a gateway reconnecting, a slow browser) is simply not shown.
//!
//! Throttling (per session and member, in this gateway's memory): while a member keeps typing,
//! `typing` at most once per [`TYPING_EVERY`]; a change (`typing: false` when they emptied their
//! input, `typing` again after it) at once, but typing signals of both kinds at most
//! [`TYPING_BURST`] at once and on average one per [`TYPING_REFILL`]; `seen` only when its
//! sequence grows. A dropped signal is answered like a forwarded one.
//!
//! Each member's latest forwarded `seen` is also kept for [`SEEN_KEPT_FOR`] in the KV bucket
//! [`SEEN_BUCKET`] (in memory on the NATS servers), so that a chat window opened again ("Seen"
//! under my last message) can ask for it; nothing else of a signal is kept.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use natter_actors::store::{StoreError, Stores};

use natter_actors::protocol::{Participant, ParticipantKind};
use natter_actors::subjects;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::auth::Login;
use crate::error::{ApiError, ErrorKind};

/// Most one member's `typing` signals forwarded: one per this interval.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// The latest `seen` of each member of each session, for windows opened again.
pub const SEEN_BUCKET: &str = "natter_seen";

/// How long a member's latest `seen` is kept after it was sent (short: a signal, not history).
pub const SEEN_KEPT_FOR: Duration = Duration::from_secs(600);

/// Opens (or makes) the [`SEEN_BUCKET`].
pub async fn seen_bucket(stores: &Stores) -> Result<kv::Store, StoreError> {
    stores
        .js
        .create_or_update_key_value(kv::Config {
            bucket: SEEN_BUCKET.into(),
            history: 1,
            max_age: SEEN_KEPT_FOR,
            storage: jetstream::stream::StorageType::Memory,
            num_replicas: stores.config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::new("creating the seen bucket", e))
}

/// A member's key in [`SEEN_BUCKET`]: the session, then the participant (hex: IDs may hold
/// characters a key may not).
fn seen_key(session: &str, who: &Participant) -> String {
    format!("{session}.{}", hex::encode(member_key(who)))
}

/// The latest `seen` of each of `members` of `session` that is still kept.
pub async fn latest_seen(gw: &Gateway, session: &str, members: &[Participant]) -> Vec<Signal> {
    let gets = members
        .iter()
        .map(|m| gw.seen_store().get(seen_key(session, m)));
    futures::future::join_all(gets)
        .await
        .into_iter()
        .filter_map(|got| got.ok().flatten())
        .filter_map(|value| serde_json::from_slice::<Signal>(&value).ok())
        .filter(|s| s.session == session && members.iter().any(|m| m.same(&s.who)))
        .collect()
}

/// Most typing signals of one member forwarded at once (then one per [`TYPING_REFILL`]).
pub const TYPING_BURST: f64 = 4.0;

/// How often one more typing signal of a member may be forwarded, on average.
pub const TYPING_REFILL: Duration = Duration::from_millis(500);

/// How long what was forwarded for a member is remembered; within it a signal that would be
/// dropped is dropped without asking the session again (its sender was a member a moment ago).
const REMEMBER_FOR: Duration = Duration::from_secs(30);

/// What a signal says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalBody {
    /// `who` is typing (`true`) or stopped (`false`: cleared the input or sent the message).
    Typing { typing: bool },
    /// `who` has seen the session's events up to `seq`.
    Seen { seq: u64 },
}

/// One signal, as published on NATS and (redacted for machine users) written on event streams.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Signal {
    pub session: String,
    pub who: Participant,
    /// When the gateway forwarded it, ms since the epoch.
    pub at: u64,
    #[serde(flatten)]
    pub body: SignalBody,
}

impl Signal {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self.body {
            SignalBody::Typing { .. } => "typing",
            SignalBody::Seen { .. } => "seen",
        }
    }
}

/// What was last forwarded for one member of one session.
struct Forwarded {
    /// When a `typing: true` was last forwarded.
    typing_at: Option<Instant>,
    /// Whether the last typing signal forwarded said `true`.
    typing: bool,
    /// Typing signals that may be forwarded now (a token bucket), and when it was filled.
    tokens: f64,
    filled_at: Instant,
    /// The highest `seen` forwarded.
    seen: u64,
    /// When the member was last found to be a member.
    checked_at: Instant,
}

impl Forwarded {
    /// Whether `body` says something new after what was forwarded.
    fn wants(&self, body: &SignalBody, now: Instant) -> bool {
        match *body {
            SignalBody::Typing { typing } => {
                let new = if typing {
                    !self.typing
                        || self
                            .typing_at
                            .is_none_or(|at| now.duration_since(at) >= TYPING_EVERY)
                } else {
                    self.typing
                };
                new && self.tokens_at(now) >= 1.0
            }
            SignalBody::Seen { seq } => seq > self.seen,
        }
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let refilled =
            now.duration_since(self.filled_at).as_secs_f64() / TYPING_REFILL.as_secs_f64();
        (self.tokens + refilled).min(TYPING_BURST)
    }
}

/// Per (session, member): what was forwarded, for throttling.
#[derive(Default)]
pub struct Throttle {
    forwarded: Mutex<HashMap<(String, String), Forwarded>>,
}

impl Throttle {
    /// False if `body` can be dropped without asking the session: it says nothing new and its
    /// sender was found to be a member less than [`REMEMBER_FOR`] ago.
    fn worth_checking(&self, key: &(String, String), body: &SignalBody) -> bool {
        let now = Instant::now();
        match self.forwarded.lock().get(key) {
            Some(f) if now.duration_since(f.checked_at) < REMEMBER_FOR => f.wants(body, now),
            _ => true,
        }
    }

    /// Records `body` as forwarded for a member just checked; false if another request
    /// forwarded the same meanwhile (drop this one).
    fn record(&self, key: (String, String), body: &SignalBody) -> bool {
        let now = Instant::now();
        let mut forwarded = self.forwarded.lock();
        if forwarded.len() > 10_000 {
            forwarded.retain(|_, f| now.duration_since(f.checked_at) < REMEMBER_FOR);
        }
        let f = forwarded.entry(key).or_insert(Forwarded {
            typing_at: None,
            typing: false,
            tokens: TYPING_BURST,
            filled_at: now,
            seen: 0,
            checked_at: now,
        });
        f.checked_at = now;
        if !f.wants(body, now) {
            return false;
        }
        match *body {
            SignalBody::Typing { typing } => {
                f.tokens = f.tokens_at(now) - 1.0;
                f.filled_at = now;
                f.typing = typing;
                if typing {
                    f.typing_at = Some(now);
                }
            }
            SignalBody::Seen { seq } => f.seen = seq,
        }
        true
    }
}

fn member_key(who: &Participant) -> String {
    let kind = match who.kind {
        ParticipantKind::Operator => "operator",
        ParticipantKind::MachineUser => "machine_user",
    };
    format!("{kind}:{}", who.id)
}

/// Forwards `body` from logged-in member `l` of `session` (throttled). Errors: `403` for a
/// non-member (an invited operator included), `404` outside the scope or unknown, `400` for a
/// `seen` above the session's last event, `409` for `typing` in an ended chat.
pub async fn post(
    gw: &Gateway,
    session: &str,
    l: &Login,
    body: SignalBody,
) -> Result<(), ApiError> {
    if matches!(body, SignalBody::Seen { seq: 0 }) {
        return Err(ApiError::bad_request(
            "seq must be a session event's seq (above 0)",
        ));
    }
    let key = (session.to_string(), member_key(&l.who));
    let throttle = gw.signals();
    if !throttle.worth_checking(&key, &body) {
        return Ok(());
    }
    let view = gw.view_as(session, l).await?;
    if !view.members.iter().any(|m| m.same(&l.who)) {
        return Err(ApiError::forbidden(
            "you are not a member of this chat session",
        ));
    }
    match body {
        SignalBody::Seen { seq } if seq > view.last_seq => {
            return Err(ApiError::bad_request(format!(
                "seq {seq} is after the session's last event ({})",
                view.last_seq
            )));
        }
        SignalBody::Typing { typing: true } if view.ended => {
            return Err(ApiError::new(ErrorKind::Conflict, "the chat has ended"));
        }
        _ => {}
    }
    if !throttle.record(key, &body) {
        return Ok(());
    }
    let signal = Signal {
        session: session.to_string(),
        who: l.who.clone(),
        at: natter_actors::now_ms(),
        body,
    };
    let payload = serde_json::to_vec(&signal).map_err(|e| ApiError::bad_request(e.to_string()))?;
    gw.stores()
        .client
        .publish(subjects::session_signal(session), payload.clone().into())
        .await
        .map_err(|_| ApiError::unavailable("the chat service is not reachable; try again"))?;
    if matches!(signal.body, SignalBody::Seen { .. }) {
        let key = seen_key(session, &signal.who);
        if let Err(e) = gw.seen_store().put(key, payload.into()).await {
            // Only a window opened again misses it.
            tracing::warn!(%session, error = %e, "could not keep a seen signal");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (String, String) {
        ("S1".into(), "operator:alice".into())
    }

    #[test]
    fn typing_is_forwarded_once_per_interval_and_its_end_once() {
        let t = Throttle::default();
        let typing = SignalBody::Typing { typing: true };
        let stopped = SignalBody::Typing { typing: false };
        assert!(t.worth_checking(&key(), &typing));
        assert!(t.record(key(), &typing));
        assert!(!t.worth_checking(&key(), &typing));
        assert!(!t.record(key(), &typing));
        assert!(t.record(key(), &stopped));
        assert!(!t.worth_checking(&key(), &stopped));
        // Typing again after stopping is news at once…
        assert!(t.record(key(), &typing));
        assert!(t.record(key(), &stopped));
        // …but not without end: the burst is spent (4 forwarded), the rest waits for the refill.
        assert!(!t.record(key(), &typing));
    }

    #[test]
    fn seen_is_forwarded_only_when_it_grows() {
        let t = Throttle::default();
        assert!(t.record(key(), &SignalBody::Seen { seq: 5 }));
        assert!(!t.worth_checking(&key(), &SignalBody::Seen { seq: 5 }));
        assert!(!t.record(key(), &SignalBody::Seen { seq: 3 }));
        assert!(t.record(key(), &SignalBody::Seen { seq: 9 }));
        // Another member's are their own.
        let other = ("S1".to_string(), "machine_user:pc1".to_string());
        assert!(t.record(other, &SignalBody::Seen { seq: 5 }));
    }

    #[test]
    fn a_signal_reads_as_documented() {
        let s = Signal {
            session: "S1".into(),
            who: Participant {
                kind: ParticipantKind::Operator,
                id: "alice".into(),
                name: "Alice".into(),
            },
            at: 7,
            body: SignalBody::Seen { seq: 42 },
        };
        let wire = serde_json::to_value(&s).unwrap();
        assert_eq!(wire["type"], "seen");
        assert_eq!(wire["seq"], 42);
        assert_eq!(wire["who"]["id"], "alice");
        let back: Signal = serde_json::from_value(wire).unwrap();
        assert_eq!(back.body, SignalBody::Seen { seq: 42 });
        assert_eq!(s.name(), "seen");
    }
}
