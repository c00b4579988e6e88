//! The JetStream stream and KV buckets Natter keeps, and reading them back.
//!
//! - Stream [`EVENTS_STREAM`] on `natter.events.<session>`: every chat event, `max_age` = the
//!   chat retention, `Nats-Msg-Id` de-duplication. Written only by each session's actor. Every
//!   stored event is republished on `natter.live.<session>` (core NATS) with the headers
//!   [`SEQUENCE_HEADER`] and [`LAST_SEQUENCE_HEADER`]: gateways subscribe there for the sessions
//!   their browsers follow and fill a gap from the stream ([`Stores::session_events_between`]).
//! - KV [`SESSIONS_BUCKET`]: one [`crate::protocol::SessionRecord`] per session (max age = the
//!   session TTL, refreshed by the actor while the session is used).
//! - KV [`MACHINE_SESSIONS_BUCKET`]: machine ID → the session in progress with it.
//! - KV [`MACHINES_BUCKET`]: machine ID → its last check-in.
//! - KV [`OPERATORS_BUCKET`]: operator accounts.
//! - KV [`OPERATOR_OPTIONS_BUCKET`]: username → that operator's options.
//! - KV [`LOGINS_BUCKET`]: browser logins (cookie hash → who), with the login lifetime as max age.
//! - KV [`PARTITIONS_BUCKET`]: partition leases and node heartbeats ([`crate::partitions`]).
//! - KV [`crate::roles::ROLES_BUCKET`], [`crate::roles::ROLE_ASSIGNMENTS_BUCKET`] and
//!   [`crate::roles::START_TOKENS_BUCKET`] (max age `chat.link_ttl`): machine roles
//!   ([`crate::roles`]).
//! - KV [`INCOMING_BUCKET`]: chats waiting for an operator to answer
//!   ([`crate::protocol::Incoming`] at `<operator>.<session>`), written by the session's actor.
//! - KV [`PRESENCE_BUCKET`]: operators who have the Chat page open (`<operator>.<node>`),
//!   written by the gateway of that node and refreshed while the page is open.
//! - KV [`OPEN_CHATS_BUCKET`]: username → the chats that operator has a window open for (a
//!   JSON list of session IDs, newest first), so they come back on any browser (B7).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;

pub const EVENTS_STREAM: &str = "NATTER_EVENTS";
pub const SESSIONS_BUCKET: &str = "natter_sessions";
pub const MACHINE_SESSIONS_BUCKET: &str = "natter_machine_sessions";
pub const MACHINES_BUCKET: &str = "natter_machines";
pub const OPERATORS_BUCKET: &str = "natter_operators";
pub const OPERATOR_OPTIONS_BUCKET: &str = "natter_operator_options";
pub const LOGINS_BUCKET: &str = "natter_logins";
pub const PARTITIONS_BUCKET: &str = "natter_partitions";
pub const INCOMING_BUCKET: &str = "natter_incoming";
pub const PRESENCE_BUCKET: &str = "natter_presence";
pub const OPEN_CHATS_BUCKET: &str = "natter_open_chats";
/// Presence is refreshed every few seconds; the max age only collects what dead nodes left.
pub const PRESENCE_MAX_AGE: Duration = Duration::from_secs(60);
/// Leases are renewed every few hundred ms; the max age only collects what dead nodes left.
const PARTITIONS_MAX_AGE: Duration = Duration::from_secs(30);

/// Header of a republished event: its stream sequence.
pub const SEQUENCE_HEADER: &str = "Nats-Sequence";
/// Header of a republished event: the stream sequence of the previous event on the same subject
/// (the same session), 0 if none.
pub const LAST_SEQUENCE_HEADER: &str = "Nats-Last-Sequence";

/// How the stores are configured (from `natter.toml`).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How long chat events are kept (F3: one hour by default).
    pub retention: Duration,
    /// How long a repeated `Nats-Msg-Id` is recognised (capped at the retention).
    pub duplicate_window: Duration,
    /// How long a session is remembered after its last activity (its messages go after
    /// `retention`; the session itself stays joinable and restartable until then).
    pub session_ttl: Duration,
    /// How long a browser login lasts.
    pub login_ttl: Duration,
    /// Copies of the stream and of every bucket (3 on a cluster of three servers).
    pub replicas: usize,
    /// How long a machine user's link works unused (`chat.link_ttl`): also the start tokens'.
    pub link_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(120),
            session_ttl: Duration::from_secs(24 * 3600),
            login_ttl: Duration::from_secs(12 * 3600),
            replicas: 1,
            link_ttl: Duration::from_secs(300),
        }
    }
}

/// An error reaching or setting up the stores.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StoreError {
    what: &'static str,
    #[source]
    source: async_nats::Error,
}

impl StoreError {
    pub fn new(what: &'static str, source: impl Into<async_nats::Error>) -> Self {
        StoreError {
            what,
            source: source.into(),
        }
    }
}

/// Handles to every stream and bucket. Cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub events: stream::Stream,
    pub sessions: kv::Store,
    pub machine_sessions: kv::Store,
    pub machines: kv::Store,
    pub operators: kv::Store,
    /// Each operator's options (`directory::OperatorOptions`), by username. Behind an `Arc`:
    /// a `kv::Store` holds its stream's whole info (kilobytes), and `Stores` is moved through
    /// the node's start futures, whose size overflowed a test thread's stack with one more.
    pub operator_options: std::sync::Arc<kv::Store>,
    pub logins: kv::Store,
    pub partitions: kv::Store,
    /// Machine roles and start tokens (behind an `Arc` for the same reason as
    /// `operator_options`).
    pub roles: std::sync::Arc<crate::roles::Roles>,
    /// Chats waiting for an operator's answer (behind an `Arc` like `operator_options`).
    pub incoming: std::sync::Arc<kv::Store>,
    /// Operators on the Chat page now, per node.
    pub presence: std::sync::Arc<kv::Store>,
    /// Each operator's open chat windows.
    pub open_chats: std::sync::Arc<kv::Store>,
    pub config: StoreConfig,
}

impl Stores {
    /// Creates the stream and buckets, or updates them to `config` (a changed retention applies
    /// to the existing stream).
    pub async fn ensure(
        client: async_nats::Client,
        config: StoreConfig,
    ) -> Result<Stores, StoreError> {
        let js = jetstream::new(client.clone());
        let retention = config.retention;
        js.create_or_update_stream(stream::Config {
            name: EVENTS_STREAM.into(),
            description: Some("Natter chat events, one subject per session".into()),
            subjects: vec![crate::subjects::ALL_EVENTS.into()],
            max_age: retention,
            duplicate_window: config.duplicate_window.min(retention),
            storage: stream::StorageType::File,
            allow_direct: true,
            // Live fan-out without a consumer: each gateway subscribes to the sessions it
            // needs. A stream made by an older node without it is updated in place.
            republish: Some(stream::Republish {
                source: crate::subjects::ALL_EVENTS.into(),
                destination: crate::subjects::LIVE_REPUBLISH.into(),
                headers_only: false,
            }),
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::new("creating the events stream", e))?;
        let events = js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| StoreError::new("opening the events stream", e))?;

        let replicas = config.replicas;
        let bucket = |name: &'static str, max_age: Duration, history: i64| {
            let js = js.clone();
            async move {
                js.create_or_update_key_value(kv::Config {
                    bucket: name.into(),
                    history,
                    max_age,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| StoreError::new("creating a KV bucket", e))
            }
        };
        let forever = Duration::ZERO;
        Ok(Stores {
            sessions: bucket(SESSIONS_BUCKET, config.session_ttl, 1).await?,
            machine_sessions: bucket(MACHINE_SESSIONS_BUCKET, config.session_ttl, 1).await?,
            machines: bucket(MACHINES_BUCKET, forever, 1).await?,
            operators: bucket(OPERATORS_BUCKET, forever, 1).await?,
            operator_options: std::sync::Arc::new(
                bucket(OPERATOR_OPTIONS_BUCKET, forever, 1).await?,
            ),
            logins: bucket(LOGINS_BUCKET, config.login_ttl, 1).await?,
            partitions: bucket(PARTITIONS_BUCKET, PARTITIONS_MAX_AGE, 1).await?,
            roles: std::sync::Arc::new(crate::roles::Roles::new(
                bucket(crate::roles::ROLES_BUCKET, forever, 1).await?,
                bucket(crate::roles::ROLE_ASSIGNMENTS_BUCKET, forever, 1).await?,
                bucket(crate::roles::START_TOKENS_BUCKET, config.link_ttl, 1).await?,
            )),
            incoming: std::sync::Arc::new(bucket(INCOMING_BUCKET, config.session_ttl, 1).await?),
            presence: std::sync::Arc::new(bucket(PRESENCE_BUCKET, PRESENCE_MAX_AGE, 1).await?),
            open_chats: std::sync::Arc::new(
                bucket(OPEN_CHATS_BUCKET, config.session_ttl, 1).await?,
            ),
            client,
            js,
            events,
            config,
        })
    }

    /// The sequence of the newest event of a session still in the stream, 0 if none.
    pub async fn last_event_seq(&self, session: &str) -> Result<u64, StoreError> {
        let found = self
            .events
            .direct_get_last_for_subject(crate::subjects::session_events(session))
            .await;
        Ok(sequence_of(found, "reading a session's last event")?.unwrap_or(0))
    }

    /// The sequence of the oldest event of a session still in the stream, if any.
    pub async fn first_event_seq(&self, session: &str) -> Result<Option<u64>, StoreError> {
        let found = self
            .events
            .direct_get_next_for_subject(crate::subjects::session_events(session), None)
            .await;
        sequence_of(found, "reading a session's first event")
    }

    /// The events of `session` with `after` < sequence < `before`, in order, read one by one
    /// (direct gets, no consumer): what a gateway missed of a session's live events. Few by
    /// construction (a gap is noticed at the next event), so one request each is fine.
    pub async fn session_events_between(
        &self,
        session: &str,
        after: u64,
        before: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let subject = crate::subjects::session_events(session);
        let mut events = Vec::new();
        let mut next = after + 1;
        while next < before {
            let m = match self
                .events
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(StoreError::new("reading a session's missed events", e)),
            };
            if m.sequence >= before {
                break;
            }
            next = m.sequence + 1;
            events.push(StoredEvent {
                seq: m.sequence,
                session: session.to_string(),
                payload: m.payload,
            });
        }
        Ok(events)
    }

    /// The oldest sequence still in the events stream (what retention has not yet removed).
    pub async fn first_retained_seq(&self) -> Result<u64, StoreError> {
        let info = self
            .events
            .get_info()
            .await
            .map_err(|e| StoreError::new("reading the events stream", e))?;
        Ok(info.state.first_sequence)
    }

    /// The newest `n` events of `session`, in order: a chat window's history. The stream cannot
    /// count back by subject, so this replays the session from a little before its last event
    /// and widens the start (×4 each time) until `n` events are in or the session's first event
    /// is reached: one replay for a chat of fewer than `n` events, or for a busy one. (Widened
    /// to the stream's start instead, a session among a million other events was read 3–4
    /// times over.)
    pub async fn recent_events(
        &self,
        session: &str,
        n: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let last = self.last_event_seq(session).await?;
        if last == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let first = self.first_event_seq(session).await?.unwrap_or(1);
        let mut span = (n as u64).saturating_mul(2);
        loop {
            let start = last.saturating_sub(span).max(first);
            let mut replay = self.replay(&[session], start).await?;
            let mut events = std::collections::VecDeque::with_capacity(n + 1);
            while let Some(e) = replay.next().await {
                events.push_back(e?);
                if events.len() > n {
                    events.pop_front();
                }
            }
            if events.len() >= n || start <= first {
                return Ok(events.into());
            }
            span = span.saturating_mul(4);
        }
    }

    /// Replays the events of `sessions` with sequence ≥ `start_seq`, up to the stream's tail at
    /// the time of the call, in stream order, through one short-lived ordered consumer.
    pub async fn replay(&self, sessions: &[&str], start_seq: u64) -> Result<Replay, StoreError> {
        let mut filters: Vec<String> = sessions
            .iter()
            .map(|s| crate::subjects::session_events(s))
            .collect();
        let (filter_subject, filter_subjects) = if filters.len() == 1 {
            (filters.pop().unwrap_or_default(), Vec::new())
        } else {
            (String::new(), filters)
        };
        let consumer = self
            .events
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject,
                filter_subjects,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start_seq.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::new("starting a replay", e))?;
        let pending = consumer.cached_info().num_pending;
        let cleanup = ConsumerCleanup {
            stream: self.events.clone(),
            name: consumer.cached_info().name.clone(),
        };
        if pending == 0 {
            return Ok(Replay {
                messages: None,
                _cleanup: cleanup,
            });
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|e| StoreError::new("starting a replay", e))?;
        Ok(Replay {
            messages: Some(messages),
            _cleanup: cleanup,
        })
    }
}

/// The sequence of a direct get's message, `None` when there is none.
fn sequence_of(
    found: Result<jetstream::message::StreamMessage, stream::DirectGetError>,
    what: &'static str,
) -> Result<Option<u64>, StoreError> {
    match found {
        Ok(m) => Ok(Some(m.sequence)),
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::new(what, e)),
    }
}

/// One stored event, as read back.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub seq: u64,
    pub session: String,
    pub payload: Bytes,
}

impl StoredEvent {
    /// The event's JSON with its sequence as the first field: what browsers receive.
    pub fn to_wire_json(&self) -> String {
        let body = std::str::from_utf8(&self.payload).unwrap_or("{}");
        let rest = body.strip_prefix('{').unwrap_or("}");
        if rest.trim_start().starts_with('}') {
            format!("{{\"seq\":{}}}", self.seq)
        } else {
            format!("{{\"seq\":{},{}", self.seq, rest)
        }
    }

    /// As [`StoredEvent::to_wire_json`] without the `session` field (a session's history,
    /// answered for that session: 14% fewer bytes for a window to read and parse).
    pub fn to_history_json(&self) -> String {
        let body = std::str::from_utf8(&self.payload).unwrap_or("{}");
        let rest = body
            .strip_prefix("{\"session\":\"")
            .and_then(|b| b.strip_prefix(self.session.as_str()))
            .and_then(|b| b.strip_prefix("\","));
        match rest {
            Some(rest) => format!("{{\"seq\":{},{}", self.seq, rest),
            None => self.to_wire_json(),
        }
    }

    /// Decodes the stored event.
    pub fn decode(&self) -> Result<crate::protocol::Event, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// A running replay; see [`Stores::replay`].
pub struct Replay {
    messages: Option<consumer::push::Ordered>,
    _cleanup: ConsumerCleanup,
}

/// Deletes a replay's consumer as soon as the replay is dropped: left to expire, thousands of
/// reconnecting browsers would pile up consumers and hit the server's per-stream limit.
struct ConsumerCleanup {
    stream: stream::Stream,
    name: String,
}

impl Drop for ConsumerCleanup {
    fn drop(&mut self) {
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.name));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }
}

impl Replay {
    /// The next event, or `None` once the tail (as of the start) has been delivered.
    pub async fn next(&mut self) -> Option<Result<StoredEvent, StoreError>> {
        let messages = self.messages.as_mut()?;
        let item = match messages.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.messages = None;
                return Some(Err(StoreError::new("replaying events", e)));
            }
            None => {
                self.messages = None;
                return None;
            }
        };
        let info = match item.info() {
            Ok(i) => (i.stream_sequence, i.pending),
            Err(e) => {
                self.messages = None;
                return Some(Err(StoreError::new("replaying events", e)));
            }
        };
        let (seq, pending) = info;
        let session = crate::subjects::session_of_events(item.subject.as_str())
            .unwrap_or_default()
            .to_string();
        if pending == 0 {
            self.messages = None;
        }
        Some(Ok(StoredEvent {
            seq,
            session,
            payload: item.payload.clone(),
        }))
    }
}
