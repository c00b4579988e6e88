//! One SSE connection carrying the events of one or more sessions, with exact resume.
//!
//! Order of work for a connection, which is what makes resume exact:
//! 1. register with the hub (live events from now on are buffered);
//! 2. ask each session's actor for the session (this checks membership) and its last sequence;
//! 3. if any session has events past the client's cursor, replay the stream for all the
//!    connection's sessions from the lowest cursor, through one short-lived ordered consumer,
//!    skipping what each session's cursor already covers;
//! 4. then deliver buffered and live events above the replay's end.
//!
//! Every event is delivered in stream order, so the SSE `id` (the event's stream sequence) is a
//! single cursor for all sessions on the connection.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use natter_actors::protocol::{Participant, SessionCommand};
use natter_actors::store::{Replay, StoredEvent};
use serde_json::json;
use warp::sse::Event;

use crate::Gateway;
use crate::error::ApiError;
use crate::hub::{LiveEvents, Registration};

/// Most sessions one connection may carry.
pub const MAX_SESSIONS_PER_STREAM: usize = 32;

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

type SseItem = Result<Event, Infallible>;

/// A connection's event stream: `Send + Sync` as `warp::sse::reply` needs, although the replay's
/// ordered consumer is not `Sync`. The stream is only ever reached through `&mut`
/// ([`Mutex::get_mut`], no locking), which is what makes sharing it between threads sound.
///
/// It runs inside the connection's own task, not in a task of its own behind a channel: an idle
/// connection then costs only its small state here (a spawned task plus a channel of `Event`s
/// came to ≈ 10 KiB per idle connection, measured with the bench).
pub struct SseStream(Mutex<Pin<Box<dyn Stream<Item = SseItem> + Send>>>);

impl Stream for SseStream {
    type Item = SseItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseItem>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        inner.as_mut().poll_next(cx)
    }
}

/// Opens the event stream for `who` (who may see `scope`) over `cursors`. Fails before any byte
/// is sent if `who` may not see one of the sessions.
pub async fn open(
    gw: &Gateway,
    who: &Participant,
    scope: &natter_actors::machines::Scope,
    mut cursors: Vec<(String, u64)>,
    last_event_id: u64,
) -> Result<SseStream, ApiError> {
    if !gw.hub().is_live() {
        return Err(ApiError::unavailable(
            "the event feed is starting; try again",
        ));
    }
    let ids: Vec<String> = cursors.iter().map(|(s, _)| s.clone()).collect();
    let (registration, live) = gw.hub().register(&ids);

    let mut last_seqs: HashMap<String, u64> = HashMap::new();
    for id in &ids {
        let ack = gw
            .command_as(id, &SessionCommand::View { by: who.clone() }, scope)
            .await?;
        let view = ack
            .session
            .ok_or_else(|| ApiError::unavailable("the session did not describe itself"))?;
        last_seqs.insert(id.clone(), view.last_seq);
    }
    for (_, cursor) in cursors.iter_mut() {
        *cursor = (*cursor).max(last_event_id);
    }
    let needs_replay = cursors.iter().any(|(s, c)| *c < last_seqs[s]);
    let first_retained = if needs_replay && cursors.iter().any(|(_, c)| *c > 0) {
        gw.stores()
            .first_retained_seq()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
    } else {
        0
    };

    let retention = gw.stores().config.retention.as_secs();
    let hello = json!({
        "server_time": natter_actors::now_ms(),
        "retention_secs": retention,
        "sessions": ids,
    });
    let mut preamble = VecDeque::new();
    preamble.push_back(Event::default().event("hello").data(hello.to_string()));
    // Sessions whose cursor points before what retention has kept cannot resume: say so, then
    // send what is left of them.
    for (session, cursor) in cursors.iter_mut() {
        if *cursor > 0 && *cursor < last_seqs[session.as_str()] && first_retained > *cursor + 1 {
            let reset = json!({"session": session, "reason": "expired"});
            preamble.push_back(Event::default().event("reset").data(reset.to_string()));
            *cursor = 0;
        }
    }
    let replay = if needs_replay {
        let start = cursors.iter().map(|(_, c)| *c).min().unwrap_or(0) + 1;
        ReplayState::Pending {
            gw: gw.clone(),
            start,
        }
    } else {
        ReplayState::Done
    };
    cursors.shrink_to_fit();
    let feed = Feed {
        _registration: registration,
        live,
        cursors,
        delivered_to: 0,
        preamble,
        replay,
        ended: false,
    };
    let stream = futures::stream::unfold(Box::new(feed), Feed::next_item);
    Ok(SseStream(Mutex::new(Box::pin(stream))))
}

/// Where a connection's replay stands.
enum ReplayState {
    /// To start from this sequence (the first poll after the preamble starts it).
    Pending {
        gw: Gateway,
        start: u64,
    },
    Running(Box<Replay>),
    /// Done, or never needed: live events only.
    Done,
}

/// One connection's state, in stream order: the preamble (`hello`, `reset`s), then the replay of
/// what the client missed, then live events above the replay's end.
struct Feed {
    /// Held for the stream's life: dropping it unregisters from the hub.
    _registration: Registration,
    live: LiveEvents,
    /// Each session's cursor: events at or below it were already delivered.
    cursors: Vec<(String, u64)>,
    /// Highest sequence the replay went through.
    delivered_to: u64,
    preamble: VecDeque<Event>,
    replay: ReplayState,
    /// An error event was sent: end the stream (the browser reconnects and resumes).
    ended: bool,
}

impl Feed {
    fn cursor(&self, session: &str) -> u64 {
        self.cursors
            .iter()
            .find(|(s, _)| s == session)
            .map_or(u64::MAX, |(_, c)| *c)
    }

    async fn next_item(mut feed: Box<Feed>) -> Option<(SseItem, Box<Feed>)> {
        if feed.ended {
            return None;
        }
        if let Some(event) = feed.preamble.pop_front() {
            if feed.preamble.is_empty() {
                // Free its buffer: the connection may now idle for hours.
                feed.preamble = VecDeque::new();
            }
            return Some((Ok(event), feed));
        }
        loop {
            match std::mem::replace(&mut feed.replay, ReplayState::Done) {
                ReplayState::Pending { gw, start } => {
                    let sessions: Vec<&str> =
                        feed.cursors.iter().map(|(s, _)| s.as_str()).collect();
                    // Boxed: the consumer set-up is a large future, and an idle connection
                    // should not carry its size.
                    match Box::pin(gw.stores().replay(&sessions, start)).await {
                        Ok(r) => feed.replay = ReplayState::Running(Box::new(r)),
                        Err(e) => {
                            feed.ended = true;
                            return Some((Ok(error_event("unavailable", &e.to_string())), feed));
                        }
                    }
                }
                ReplayState::Running(mut replay) => match replay.next().await {
                    Some(Ok(event)) => {
                        feed.replay = ReplayState::Running(replay);
                        feed.delivered_to = feed.delivered_to.max(event.seq);
                        if event.seq > feed.cursor(&event.session) {
                            return Some((Ok(chat_event(&event)), feed));
                        }
                    }
                    Some(Err(e)) => {
                        feed.ended = true;
                        return Some((Ok(error_event("unavailable", &e.to_string())), feed));
                    }
                    None => {} // the replay is over: live events from here on
                },
                ReplayState::Done => {
                    // `None`: the hub cut us off (we fell behind); ending the stream makes the
                    // browser resume.
                    let event = feed.live.recv().await?;
                    let floor = feed.cursor(&event.session).max(feed.delivered_to);
                    if event.seq > floor {
                        return Some((Ok(chat_event(&event)), feed));
                    }
                }
            }
        }
    }
}

fn chat_event(event: &StoredEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .data(event.to_wire_json())
}

fn error_event(kind: &str, message: &str) -> Event {
    Event::default()
        .event("error")
        .data(json!({"error": kind, "message": message}).to_string())
}

/// How often an idle stream gets a keep-alive comment (bounds how long a vanished client holds
/// its connection).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
