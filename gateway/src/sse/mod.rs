//! Server-Sent-Events: the session event streams ([`open`]: several sessions on one connection,
//! with exact resume) and the machine list stream ([`machine_stream`]), and the response both
//! are sent in ([`response`]).
//!
//! Streams run inside their connection's own task, never in a task of their own behind a
//! channel: an idle connection then costs only its small state (a spawned task plus a channel of
//! `Event`s came to ≈ 10 KiB per idle connection, measured with the bench).

mod machines;
mod sessions;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use hyper::body::Frame as BodyFrame;
use parking_lot::Mutex;
use tokio_util::sync::WaitForCancellationFutureOwned;
use warp::http::header;
use warp::reply::{Reply, Response};

use crate::Gateway;
use crate::error::ApiError;
use crate::limits::Slot;
use crate::metrics::{StreamKind, StreamMeter};

pub use machines::machine_stream;
pub(crate) use sessions::chat_event;
pub use sessions::open;

/// Most sessions one connection may carry.
pub const MAX_SESSIONS_PER_STREAM: usize = 32;

/// How often a stream gets a keep-alive comment (bounds how long a vanished client holds its
/// connection).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a browser waits before it reconnects a dropped stream (EventSource's default is about
/// 3 s; a node restart should cost less). Sent as `retry:` first on every stream.
pub const RECONNECT_AFTER: Duration = Duration::from_millis(1000);

/// Most bytes of ready frames written as one chunk.
const MAX_CHUNK: usize = 64 * 1024;

/// One SSE frame, encoded and ready to write: `Bytes`, so a frame made once is shared by every
/// connection that writes it.
pub type Frame = Bytes;

/// Encodes an SSE frame. `data` is one line (JSON never holds a raw line break).
pub fn frame(id: Option<u64>, name: Option<&str>, data: &str) -> Frame {
    let mut f = BytesMut::with_capacity(data.len() + 32);
    if let Some(id) = id {
        f.extend_from_slice(b"id:");
        f.extend_from_slice(id.to_string().as_bytes());
        f.extend_from_slice(b"\n");
    }
    if let Some(name) = name {
        f.extend_from_slice(b"event:");
        f.extend_from_slice(name.as_bytes());
        f.extend_from_slice(b"\n");
    }
    for line in data.split('\n') {
        f.extend_from_slice(b"data:");
        f.extend_from_slice(line.trim_end_matches('\r').as_bytes());
        f.extend_from_slice(b"\n");
    }
    f.extend_from_slice(b"\n");
    f.freeze()
}

/// An event stream's frames, with what the stream holds while it lives.
pub struct SseStream {
    frames: Pin<Box<dyn Stream<Item = Frame> + Send>>,
    /// The login's stream slot, freed when the stream ends or the client goes away.
    _slot: Option<Slot<String>>,
}

impl SseStream {
    fn new(stream: impl Stream<Item = Frame> + Send + 'static) -> Self {
        SseStream {
            frames: Box::pin(stream),
            _slot: None,
        }
    }

    /// The same stream, holding `slot` for as long as it lives.
    pub fn holding(mut self, slot: Slot<String>) -> Self {
        self._slot = Some(slot);
        self
    }
}

/// The body of an SSE response: `retry:` first, then the stream's frames — every frame that is
/// ready written as one chunk, so a connection that has fallen behind catches up in few writes —
/// and a keep-alive comment every [`KEEP_ALIVE`]. Ends with the stream, or on shutdown.
///
/// Our own body rather than warp's SSE reply: frames are made once and shared between
/// connections (warp formats each event per connection), and an idle stream holds only this.
pub struct SseBody {
    stream: SseStream,
    retry_sent: bool,
    keep_alive: Pin<Box<tokio::time::Sleep>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Counts the frames written; the stream is an open one (metrics) while it lives.
    meter: StreamMeter,
    done: bool,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.retry_sent {
            this.retry_sent = true;
            let retry = format!("retry:{}\n\n", RECONNECT_AFTER.as_millis());
            return Poll::Ready(Some(Ok(BodyFrame::data(retry.into()))));
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        // Every frame that is ready now, as one chunk (no copy when there is only one).
        let mut first: Option<Bytes> = None;
        let mut more: Option<BytesMut> = None;
        loop {
            match this.stream.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(f)) => {
                    this.meter.event_written();
                    match (&first, &mut more) {
                        (None, _) => first = Some(f),
                        (Some(a), None) => {
                            let mut m = BytesMut::with_capacity(a.len() + f.len());
                            m.extend_from_slice(a);
                            m.extend_from_slice(&f);
                            more = Some(m);
                        }
                        (Some(_), Some(m)) => m.extend_from_slice(&f),
                    }
                    let len = more.as_ref().map_or(0, BytesMut::len);
                    if len >= MAX_CHUNK {
                        break;
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if let Some(m) = more {
            return Poll::Ready(Some(Ok(BodyFrame::data(m.freeze()))));
        }
        if let Some(f) = first {
            return Poll::Ready(Some(Ok(BodyFrame::data(f))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Idle: a comment now and then, so a vanished client is noticed.
        if this.keep_alive.as_mut().poll(cx).is_ready() {
            let next = tokio::time::Instant::now() + KEEP_ALIVE;
            this.keep_alive.as_mut().reset(next);
            // Registers the new deadline's waker.
            let _ = this.keep_alive.as_mut().poll(cx);
            return Poll::Ready(Some(Ok(BodyFrame::data(Bytes::from_static(b":\n\n")))));
        }
        Poll::Pending
    }
}

/// Hands an [`SseBody`] from a warp handler to the accept loop (`server.rs`), which writes it as
/// the response's body: warp's own body type cannot carry one.
#[derive(Clone)]
pub struct SseHandoff(Arc<Mutex<Option<SseBody>>>);

impl SseHandoff {
    /// The body, once (the accept loop takes it).
    pub fn take(&self) -> Option<SseBody> {
        self.0.lock().take()
    }
}

/// An SSE response: a reconnect delay first, keep-alive comments, no caching, no proxy
/// buffering, counted in the gateway's metrics as a stream of `kind`. The stream ends on
/// shutdown, so graceful drain does not wait for it forever.
pub fn response(stream: SseStream, gw: &Gateway, kind: StreamKind) -> Response {
    let body = SseBody {
        stream,
        retry_sent: false,
        keep_alive: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        shutdown: Box::pin(gw.shutdown_token().clone().cancelled_owned()),
        meter: gw.metrics().stream_opened(kind),
        done: false,
    };
    let mut r = warp::reply().into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    r.extensions_mut()
        .insert(SseHandoff(Arc::new(Mutex::new(Some(body)))));
    r
}

/// An event with a name and JSON data but no `id`, so it does not move the client's resume point.
fn named_event(name: &str, data: &impl serde::Serialize) -> Frame {
    frame(
        None,
        Some(name),
        &serde_json::to_string(data).unwrap_or_default(),
    )
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
