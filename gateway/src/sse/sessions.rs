//! One SSE connection carrying the events of one or more sessions, with exact resume.
//!
//! Order of work for a connection, which is what makes resume exact:
//! 1. register with the hub, which returns once it subscribes to each session's live events (live
//!    events from now on are buffered);
//! 2. ask each session's actor for the session (this checks membership) and its last sequence;
//! 3. if any session has events past the client's cursor, replay the stream for all the
//!    connection's sessions from the lowest cursor, through one short-lived ordered consumer,
//!    skipping what each session's cursor already covers;
//! 4. then deliver buffered and live events above the replay's end.
//!
//! Every event is delivered in stream order, so the SSE `id` (the event's stream sequence) is a
//! single cursor for all sessions on the connection. One exception: events the hub missed and
//! filled from the stream (see `hub.rs`) come in their session's order but may follow a later
//! event of another session; they are still written (never dropped), with their own sequence as
//! `id`, so the browser's cursor moves back to them and a reconnect repeats rather than skips
//! (clients ignore a `(session, seq)` they already have; docs/api.md).
//!
//! Signals ("is typing", "seen") come from the hub with the live events and are written as they
//! come, as named events without an `id`: they never move the resume point.

use std::collections::{HashMap, VecDeque};

use super::{Frame, SseStream, frame, named_event};
use crate::Gateway;
use crate::api::models::{Hello, Reset, StreamError};
use crate::error::ApiError;
use crate::hub::{Live, LiveEvent, LiveEvents, Registration};
use natter_actors::protocol::{EventBody, ParticipantKind, SessionCommand};
use natter_actors::store::{Replay, StoredEvent};

/// Opens the event stream of login `l` over `cursors`. Fails before any byte is sent if `l`
/// may not see one of the sessions.
pub async fn open(
    gw: &Gateway,
    l: &crate::auth::Login,
    mut cursors: Vec<(String, u64)>,
    last_event_id: u64,
) -> Result<SseStream, ApiError> {
    if !gw.hub().is_live() {
        return Err(ApiError::unavailable(
            "the event feed is starting; try again",
        ));
    }
    let ids: Vec<String> = cursors.iter().map(|(s, _)| s.clone()).collect();
    let (registration, live) = gw
        .hub()
        .register(&ids)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let who = &l.who;
    let last_seqs = last_seqs(gw, l, &ids).await?;
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
    let retention_secs = gw.stores().config.retention.as_secs();
    let preamble = preamble(
        &ids,
        retention_secs,
        &mut cursors,
        &last_seqs,
        first_retained,
    );
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
    // A restart after this point starts a new epoch, in which this machine user's login is no
    // longer valid: the stream ends there, and the browser's reconnect is checked anew.
    let restart_ends_after = (who.kind == ParticipantKind::MachineUser)
        .then(|| last_seqs.values().copied().max().unwrap_or(0));
    let feed = Feed {
        _registration: registration,
        live,
        cursors,
        delivered_to: 0,
        preamble,
        replay,
        ended: false,
        restart_ends_after,
        redaction: crate::redact::Redaction::for_login(gw, l),
    };
    Ok(SseStream::new(futures::stream::unfold(
        Box::new(feed),
        Feed::next_item,
    )))
}

/// Each session's last sequence, from its actor (which checks that `l` is a member, and a
/// machine user's epoch).
async fn last_seqs(
    gw: &Gateway,
    l: &crate::auth::Login,
    ids: &[String],
) -> Result<HashMap<String, u64>, ApiError> {
    let mut last_seqs = HashMap::new();
    for id in ids {
        let ack = gw
            .command_for(id, &SessionCommand::View { by: l.who.clone() }, l)
            .await?;
        let view = ack
            .session
            .ok_or_else(|| ApiError::unavailable("the session did not describe itself"))?;
        last_seqs.insert(id.clone(), view.last_seq);
    }
    Ok(last_seqs)
}

/// `hello`, then a `reset` for each session whose cursor points before what retention has kept:
/// it cannot resume, so its cursor goes back to 0 and what is left of it follows.
fn preamble(
    ids: &[String],
    retention_secs: u64,
    cursors: &mut [(String, u64)],
    last_seqs: &HashMap<String, u64>,
    first_retained: u64,
) -> VecDeque<Frame> {
    let hello = Hello {
        retention_secs,
        server_time: natter_actors::now_ms(),
        sessions: ids,
    };
    let mut preamble = VecDeque::new();
    preamble.push_back(named_event("hello", &hello));
    for (session, cursor) in cursors.iter_mut() {
        if *cursor > 0 && *cursor < last_seqs[session.as_str()] && first_retained > *cursor + 1 {
            let reset = Reset {
                reason: "expired",
                session,
            };
            preamble.push_back(named_event("reset", &reset));
            *cursor = 0;
        }
    }
    preamble
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
    /// Each session's cursor: events at or below it were already delivered (moved by every live
    /// event written, so a session's events are never written twice).
    cursors: Vec<(String, u64)>,
    /// Highest sequence the replay went through.
    delivered_to: u64,
    preamble: VecDeque<Frame>,
    replay: ReplayState,
    /// An error event was sent: end the stream (the browser reconnects and resumes).
    ended: bool,
    /// For a machine user: a `restarted` event above this sequence ends the stream after it.
    restart_ends_after: Option<u64>,
    redaction: crate::redact::Redaction,
}

impl Feed {
    fn cursor(&self, session: &str) -> u64 {
        self.cursors
            .iter()
            .find(|(s, _)| s == session)
            .map_or(u64::MAX, |(_, c)| *c)
    }

    async fn next_item(mut feed: Box<Feed>) -> Option<(Frame, Box<Feed>)> {
        if feed.ended {
            return None;
        }
        if let Some(event) = feed.preamble.pop_front() {
            if feed.preamble.is_empty() {
                // Free its buffer: the connection may now idle for hours.
                feed.preamble = VecDeque::new();
            }
            return Some((event, feed));
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
                        Err(e) => return Some((feed.fail(&e.to_string()), feed)),
                    }
                }
                ReplayState::Running(mut replay) => match replay.next().await {
                    Some(Ok(event)) => {
                        feed.replay = ReplayState::Running(replay);
                        feed.delivered_to = feed.delivered_to.max(event.seq);
                        if event.seq > feed.cursor(&event.session) {
                            return Some((feed.deliver(&event, None), feed));
                        }
                    }
                    Some(Err(e)) => return Some((feed.fail(&e.to_string()), feed)),
                    None => {} // the replay is over: live events from here on
                },
                ReplayState::Done => {
                    // `None`: the hub cut us off (we fell behind); ending the stream makes the
                    // browser resume.
                    let live = match feed.live.recv().await? {
                        Live::Event(live) => live,
                        Live::Signal(signal) => {
                            let signal = feed.redaction.signal(&signal);
                            return Some((named_event(signal.name(), &signal), feed));
                        }
                    };
                    let event = &live.stored;
                    let floor = feed.cursor(&event.session).max(feed.delivered_to);
                    if event.seq > floor {
                        feed.advance(&event.session, event.seq);
                        return Some((feed.deliver(event, Some(&live)), feed));
                    }
                }
            }
        }
    }

    fn advance(&mut self, session: &str, seq: u64) {
        if let Some((_, c)) = self.cursors.iter_mut().find(|(s, _)| s == session) {
            *c = seq;
        }
    }

    /// `event` for the browser (`live`'s shared frame when this reader sees events as stored);
    /// a restart that ends a machine user's epoch ends the stream after it.
    fn deliver(&mut self, event: &StoredEvent, live: Option<&LiveEvent>) -> Frame {
        if let Some(after) = self.restart_ends_after
            && event.seq > after
            && event
                .decode()
                .is_ok_and(|e| matches!(e.body, EventBody::Restarted { .. }))
        {
            self.ended = true;
        }
        match (&self.redaction, live) {
            (crate::redact::Redaction::None, Some(live)) => live.frame(),
            _ => chat_event(&self.redaction.event(event)),
        }
    }

    /// The replay failed: an `error` event, after which the stream ends.
    fn fail(&mut self, message: &str) -> Frame {
        self.ended = true;
        let error = StreamError {
            error: "unavailable",
            message,
        };
        named_event("error", &error)
    }
}

/// A stored event's frame: its sequence as the `id`, its JSON as the data.
pub(crate) fn chat_event(event: &StoredEvent) -> Frame {
    frame(Some(event.seq), None, &event.to_wire_json())
}
