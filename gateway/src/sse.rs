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

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use natter_actors::protocol::{Participant, SessionCommand, SessionView};
use natter_actors::store::StoredEvent;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::sse::Event;

use crate::Gateway;
use crate::error::ApiError;

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

/// Opens the event stream for `who` over `cursors`. Fails before any byte is sent if `who` may
/// not see one of the sessions.
pub async fn open(
    gw: &Gateway,
    who: &Participant,
    mut cursors: Vec<(String, u64)>,
    last_event_id: u64,
) -> Result<ReceiverStream<SseItem>, ApiError> {
    if !gw.hub().is_live() {
        return Err(ApiError::unavailable(
            "the event feed is starting; try again",
        ));
    }
    let ids: Vec<String> = cursors.iter().map(|(s, _)| s.clone()).collect();
    let (registration, mut live) = gw.hub().register(&ids);

    let mut views: HashMap<String, SessionView> = HashMap::new();
    for id in &ids {
        let ack = gw
            .command(id, &SessionCommand::View { by: who.clone() })
            .await?;
        let view = ack
            .session
            .ok_or_else(|| ApiError::unavailable("the session did not describe itself"))?;
        views.insert(id.clone(), view);
    }
    for (_, cursor) in cursors.iter_mut() {
        *cursor = (*cursor).max(last_event_id);
    }
    let needs_replay = cursors.iter().any(|(s, c)| *c < views[s].last_seq);
    let first_retained = if needs_replay && cursors.iter().any(|(_, c)| *c > 0) {
        gw.stores()
            .first_retained_seq()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
    } else {
        0
    };

    let (tx, rx) = mpsc::channel::<SseItem>(256);
    let gw = gw.clone();
    let retention = gw.stores().config.retention.as_secs();
    tokio::spawn(async move {
        // Held for the task's life: dropping it unregisters from the hub.
        let _registration = registration;
        let hello = json!({
            "server_time": natter_actors::now_ms(),
            "retention_secs": retention,
            "sessions": ids,
        });
        if tx
            .send(Ok(Event::default().event("hello").data(hello.to_string())))
            .await
            .is_err()
        {
            return;
        }
        // Sessions whose cursor points before what retention has kept cannot resume: say so,
        // then send what is left of them.
        for (session, cursor) in cursors.iter_mut() {
            if *cursor > 0
                && *cursor < views[session.as_str()].last_seq
                && first_retained > *cursor + 1
            {
                let reset = json!({"session": session, "reason": "expired"});
                if tx
                    .send(Ok(Event::default().event("reset").data(reset.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
                *cursor = 0;
            }
        }
        let cursor_of: HashMap<String, u64> = cursors.iter().cloned().collect();
        let mut delivered_to = 0u64;
        if needs_replay {
            let start = cursors.iter().map(|(_, c)| *c).min().unwrap_or(0) + 1;
            let sessions: Vec<&str> = cursors.iter().map(|(s, _)| s.as_str()).collect();
            let mut replay = match gw.stores().replay(&sessions, start).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx
                        .send(Ok(error_event("unavailable", &e.to_string())))
                        .await;
                    return;
                }
            };
            while let Some(item) = replay.next().await {
                let event = match item {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx
                            .send(Ok(error_event("unavailable", &e.to_string())))
                            .await;
                        return;
                    }
                };
                delivered_to = delivered_to.max(event.seq);
                if event.seq > cursor_of.get(&event.session).copied().unwrap_or(u64::MAX)
                    && tx.send(Ok(chat_event(&event))).await.is_err()
                {
                    return;
                }
            }
        }
        while let Some(event) = live.recv().await {
            let floor = cursor_of
                .get(&event.session)
                .copied()
                .unwrap_or(u64::MAX)
                .max(delivered_to);
            if event.seq <= floor {
                continue;
            }
            if tx.send(Ok(chat_event(&event))).await.is_err() {
                return;
            }
        }
        // The hub cut us off (we fell behind): ending the stream makes the browser resume.
    });
    Ok(ReceiverStream::new(rx))
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
