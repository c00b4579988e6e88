//! A chat's retained history read at once: `GET /api/sessions/{id}/transcript`, as a file for
//! the operator's ticket (plain text: a line per message and per change, with UTC times and
//! names; or JSON: every event as the event stream carries it), and
//! `GET /api/sessions/{id}/events?last=N`, the newest events, which a chat window shows before
//! the rest of a long history comes on the event stream.

use natter_actors::protocol::{AgentWindow, Event, EventBody, Participant, SessionView};
use natter_actors::store::StoredEvent;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use super::models::{RecentQuery, TranscriptQuery};
use crate::Gateway;
use crate::auth::Login;
use crate::error::ApiError;

/// GET /api/sessions/{id}/transcript?format=text|json
pub async fn transcript(
    id: String,
    l: Login,
    gw: Gateway,
    q: TranscriptQuery,
) -> Result<Response, ApiError> {
    let json = match q.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?}: use text or json"
            )));
        }
    };
    // Membership and scope, as for reading the session.
    let view = gw.view_as(&id, &l).await?;
    let events = history(&gw, &id).await?;
    let exported_at = natter_actors::now_ms();
    let (body, mime, ext) = if json {
        let events: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|e| serde_json::from_str(&e.to_wire_json()).ok())
            .collect();
        let doc = serde_json::json!({
            "session": view.id, "machine": view.machine, "exported_at": exported_at,
            "retention_secs": view.retention_secs, "members": view.members,
            "events": events,
        });
        let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
        (body, "application/json", "json")
    } else {
        (
            as_text(&view, &events, exported_at),
            "text/plain; charset=utf-8",
            "txt",
        )
    };
    let mut r = warp::reply::with_status(body, StatusCode::OK).into_response();
    let headers = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let file = format!("attachment; filename=\"chat-{}.{ext}\"", file_stem(&view));
    if let Ok(v) = header::HeaderValue::from_str(&file) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// How many recent events a window gets when it does not say (a few screens).
const RECENT_DEFAULT: usize = 200;
/// The most it may ask for: a window asks for the whole history of nearly every chat in one
/// response (the stored JSON as it is: far cheaper than the event stream for a browser to take);
/// more is the event stream's work.
const RECENT_MAX: usize = crate::history::MAX_EVENTS;

/// GET /api/sessions/{id}/events?last=N: `{"events": [...]}`, the session's newest `N` events in
/// order, each exactly as the event stream carries it.
pub async fn recent_events(
    id: String,
    l: Login,
    gw: Gateway,
    q: RecentQuery,
) -> Result<Response, ApiError> {
    let n = match q.last.as_deref() {
        None => RECENT_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=RECENT_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "last {text:?}: a number from 1 to {RECENT_MAX}"
                )));
            }
        },
    };
    gw.view_as(&id, &l).await?;
    let (events, source) = gw
        .history()
        .newest(gw.stores(), &id, n)
        .await
        .map_err(|e| {
            tracing::warn!(session = %id, error = %e, "recent events: replay failed");
            ApiError::unavailable("the chat's history could not be read; try again")
        })?;
    gw.metrics().history_read(source);
    // The stored JSON as it is, not parsed and written again.
    let mut body = Vec::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&e.json);
    }
    body.extend_from_slice(b"]}");
    let mut r = warp::reply::with_status(body, StatusCode::OK).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Every retained event of the session, in order.
async fn history(gw: &Gateway, id: &str) -> Result<Vec<StoredEvent>, ApiError> {
    let unavailable = |e: natter_actors::store::StoreError| {
        tracing::warn!(session = %id, error = %e, "transcript: replay failed");
        ApiError::unavailable("the chat's history could not be read; try again")
    };
    let mut replay = gw.stores().replay(&[id], 1).await.map_err(unavailable)?;
    let mut events = Vec::new();
    while let Some(e) = replay.next().await {
        events.push(e.map_err(unavailable)?);
    }
    Ok(events)
}

/// `chat-<machine or "operators">-<session>`: names safe in a file name.
fn file_stem(view: &SessionView) -> String {
    let what = if view.machine.is_empty() {
        "operators"
    } else {
        view.machine.as_str()
    };
    format!("{what}-{}", view.id)
}

/// The transcript as text: a heading, then one line per event, `<UTC time>  <what>`; a
/// message's later lines are indented under it.
fn as_text(view: &SessionView, events: &[StoredEvent], exported_at: u64) -> String {
    let with = if view.machine.is_empty() {
        "a chat between operators".to_string()
    } else {
        format!("chat with {}", view.machine)
    };
    let mut out = format!(
        "Natter transcript: {with}\nSession {}\nExported {} (messages older than {} minutes are no longer kept)\n\n",
        view.id,
        utc(exported_at),
        view.retention_secs / 60
    );
    for stored in events {
        let Ok(event) = stored.decode() else { continue };
        out.push_str(&format!("{}  {}\n", utc(event.at), line(&event)));
    }
    out
}

fn line(event: &Event) -> String {
    let who = |p: &Participant| p.name.clone();
    match &event.body {
        EventBody::Opened { by, .. } => format!("— {} started the chat", who(by)),
        EventBody::Joined { who: w } => format!("— {} joined", who(w)),
        EventBody::Invited { who: w, by } => format!("— {} asked {} to join", who(by), who(w)),
        EventBody::HandedOff { by, to } => {
            format!("— {} handed the chat to {}", who(by), who(to))
        }
        EventBody::Message { from, text, .. } => {
            format!("{}: {}", who(from), text.replace('\n', "\n    "))
        }
        EventBody::Agent { status, detail } => {
            let status = match status {
                AgentWindow::Opened => "opened",
                AgentWindow::Failed => "failed to open",
                AgentWindow::Pending => "pending",
                AgentWindow::Waiting => "waits for the machine to check in again",
            };
            if detail.is_empty() {
                format!("— the machine user's chat window {status}")
            } else {
                format!("— the machine user's chat window {status} ({detail})")
            }
        }
        EventBody::Ended { by } => format!("— {} ended the chat", who(by)),
        EventBody::Restarted { by } => format!("— {} restarted the chat", who(by)),
    }
}

/// `2026-12-02 13:05:07 UTC`.
fn utc(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_to_the_second() {
        assert_eq!(utc(1_764_680_707_123), "2025-12-02 13:05:07 UTC");
    }
}
