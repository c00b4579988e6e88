//! Server-Sent-Events: the session event streams ([`open`]: several sessions on one connection,
//! with exact resume) and the machine list stream ([`machine_stream`]), and the response both
//! are sent in ([`response`]).
//!
//! Streams run inside their connection's own task, never in a task of their own behind a
//! channel: an idle connection then costs only its small state (a spawned task plus a channel of
//! `Event`s came to ≈ 10 KiB per idle connection, measured with the bench).

mod machines;
mod sessions;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use warp::http::header;
use warp::reply::{Reply, Response};
use warp::sse::Event;

use crate::Gateway;
use crate::error::ApiError;
use crate::limits::Slot;
use crate::metrics::{StreamKind, StreamMeter};

pub use machines::machine_stream;
pub use sessions::open;

/// Most sessions one connection may carry.
pub const MAX_SESSIONS_PER_STREAM: usize = 32;

/// How often an idle stream gets a keep-alive comment (bounds how long a vanished client holds
/// its connection).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

type SseItem = Result<Event, Infallible>;

/// How long a browser waits before it reconnects a dropped stream (EventSource's default is about
/// 3 s; a node restart should cost less). Sent as `retry:` first on every stream.
pub const RECONNECT_AFTER: Duration = Duration::from_millis(1000);

/// An event stream: `Send + Sync` as `warp::sse::reply` needs, although what it wraps (a replay's
/// ordered consumer, a broadcast receive) is not `Sync`. The stream is only ever reached through
/// `&mut` ([`Mutex::get_mut`], no locking), which is what makes sharing it between threads sound.
pub struct SseStream {
    events: Mutex<Pin<Box<dyn Stream<Item = SseItem> + Send>>>,
    /// The login's stream slot, freed when the stream ends or the client goes away.
    _slot: Option<Slot<String>>,
    /// Counts the events written; the stream is an open one (metrics) while it lives.
    meter: Option<StreamMeter>,
}

impl SseStream {
    fn new(stream: impl Stream<Item = SseItem> + Send + 'static) -> Self {
        SseStream {
            events: Mutex::new(Box::pin(stream)),
            _slot: None,
            meter: None,
        }
    }

    /// The same stream, holding `slot` for as long as it lives.
    pub fn holding(mut self, slot: Slot<String>) -> Self {
        self._slot = Some(slot);
        self
    }
}

impl Stream for SseStream {
    type Item = SseItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseItem>> {
        let this = self.get_mut();
        let polled = this.events.get_mut().as_mut().poll_next(cx);
        if let (Poll::Ready(Some(_)), Some(meter)) = (&polled, &this.meter) {
            meter.event_written();
        }
        polled
    }
}

/// An SSE response: a reconnect delay first, keep-alive comments, no caching, no proxy
/// buffering, counted in the gateway's metrics as a stream of `kind`. The stream ends on
/// shutdown, so graceful drain does not wait for it forever.
pub fn response(mut stream: SseStream, gw: &Gateway, kind: StreamKind) -> Response {
    stream.meter = Some(gw.metrics().stream_opened(kind));
    let shutdown = gw.shutdown_token().clone();
    let retry = futures::stream::iter([Ok(Event::default().retry(RECONNECT_AFTER))]);
    let stream = retry.chain(stream.take_until(shutdown.cancelled_owned()));
    let reply = warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(stream));
    let mut r = reply.into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r.headers_mut()
        .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    r
}

/// An event with a name and JSON data but no `id`, so it does not move the client's resume point.
fn named_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default())
}

/// Parses `sessions=A,B:17` (with `since` as the default cursor) into (session, cursor) pairs.
pub fn parse_cursors(sessions: &str, since: u64) -> Result<Vec<(String, u64)>, ApiError> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for item in sessions.split(',').filter(|s| !s.is_empty()) {
        let (id, cursor) = match item.split_once(':') {
            Some((id, c)) => (
                id,
                c.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("bad cursor in {item:?}: expected ID:SEQ"))
                })?,
            ),
            None => (item, since),
        };
        if !natter_actors::protocol::valid_session_id(id) {
            return Err(ApiError::bad_request(format!("{id:?} is not a session ID")));
        }
        if let Some(existing) = out.iter_mut().find(|(s, _)| s == id) {
            existing.1 = existing.1.max(cursor);
        } else {
            out.push((id.to_string(), cursor));
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "name at least one session: ?sessions=ID",
        ));
    }
    if out.len() > MAX_SESSIONS_PER_STREAM {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_SESSIONS_PER_STREAM} sessions per stream"
        )));
    }
    Ok(out)
}

/// Parses a `Last-Event-ID` header.
pub fn parse_last_event_id(value: Option<&str>) -> Result<u64, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request("Last-Event-ID must be a stream sequence")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse() {
        let a = ulid::Ulid::new().to_string();
        let b = ulid::Ulid::new().to_string();
        let c = parse_cursors(&format!("{a},{b}:17"), 5).unwrap();
        assert_eq!(c, vec![(a.clone(), 5), (b, 17)]);
        assert!(parse_cursors("", 0).is_err());
        assert!(parse_cursors("nope", 0).is_err());
        assert!(parse_cursors(&format!("{a}:x"), 0).is_err());
        assert_eq!(parse_last_event_id(Some(" 42 ")).unwrap(), 42);
        assert!(parse_last_event_id(Some("x")).is_err());
    }
}
