//! Chat sessions: starting one, and what its members do in it (operators under `/api`, the
//! machine user under `/m/{id}/api`).

use natter_actors::protocol::{ChatUser, ParticipantKind, SessionCommand, valid_machine_id};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::json_reply;
use super::models::{
    ChatStarted, EventsQuery, HandOffRequest, MessageRequest, MessageSent, SeenRequest,
    SessionEnded, StartChatRequest, TypingRequest,
};
use crate::auth::{self, Login};
use crate::error::{ApiError, ErrorKind};
use crate::limits::StreamOwner;
use crate::metrics::StreamKind;
use crate::signals::{self, SignalBody};
use crate::{Gateway, sse};

/// POST /api/chats: a chat with a machine's user, or with another operator.
pub async fn start_chat(
    l: Login,
    gw: Gateway,
    body: StartChatRequest,
) -> Result<Response, ApiError> {
    let id = ulid::Ulid::new().to_string();
    let open = match (body.machine, body.operator) {
        (Some(machine), None) => open_with_machine(&l, &gw, machine, body.user_session)?,
        (None, Some(_)) if body.user_session.is_some() => {
            return Err(ApiError::bad_request(
                "user_session goes with a machine, not with an operator",
            ));
        }
        (None, Some(operator)) => open_with_operator(&l, &gw, operator)?,
        _ => {
            return Err(ApiError::bad_request(
                "name either a machine or an operator to chat with",
            ));
        }
    };
    let (status, ack) = match gw.command_as(&id, &open, &l.scope).await {
        Ok(ack) => (StatusCode::CREATED, ack),
        Err(e) if e.kind() == ErrorKind::Conflict && e.session.is_some() => {
            // A chat with this machine (or operator) is in progress: join it (F6).
            let existing = e.session.unwrap_or_default();
            let join = SessionCommand::Join { by: l.who };
            (
                StatusCode::OK,
                gw.command_as(&existing, &join, &l.scope).await?,
            )
        }
        Err(e) => return Err(e),
    };
    let started = ChatStarted {
        session: ack.session,
    };
    Ok(json_reply(status, &started))
}

/// The command opening a chat with `machine`'s logged-on user, if there is one to chat with:
/// of several users, the one in `user_session` (by default the first the agent listed).
fn open_with_machine(
    l: &Login,
    gw: &Gateway,
    machine: String,
    user_session: Option<String>,
) -> Result<SessionCommand, ApiError> {
    let machine = machine.trim().to_string();
    if !valid_machine_id(&machine) {
        return Err(ApiError::bad_request(format!(
            "{machine:?} is not a machine ID (like pc1.sales.acme)"
        )));
    }
    // Outside the scope, a machine does not exist for this operator.
    let record = gw
        .directory()
        .record(&machine)
        .filter(|_| l.scope.covers(&machine))
        .ok_or_else(|| ApiError::not_found(format!("no machine {machine}")))?;
    if record.user.is_none() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "no user is logged on to this machine",
        ));
    }
    if !record.status.can_chat() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!(
                "no chat possible: {}",
                record.status.describe().to_lowercase()
            ),
        ));
    }
    let user = match (user_session, record.users.first()) {
        (None, None) => None,
        (None, Some(first)) => Some(first),
        (Some(wanted), _) => Some(
            (record.users.iter())
                .find(|u| u.session == wanted)
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no user session {wanted:?} is logged on to {machine} (the user may have logged off)"
                    ))
                })?,
        ),
    };
    let user = user.map(|u| ChatUser {
        name: u.name.clone(),
        session: u.session.clone(),
    });
    Ok(SessionCommand::Open {
        by: l.who.clone(),
        machine,
        user,
    })
}

/// The command opening a chat with `operator`, who must be on the Chat page now and not hiding
/// from operators (the page's filter only narrows whom it lists).
fn open_with_operator(
    l: &Login,
    gw: &Gateway,
    operator: String,
) -> Result<SessionCommand, ApiError> {
    if l.who.kind != ParticipantKind::Operator {
        return Err(ApiError::forbidden("only operators chat with operators"));
    }
    if operator == l.who.id {
        return Err(ApiError::bad_request(
            "you cannot start a chat with yourself",
        ));
    }
    let listed = gw
        .presence()
        .operators_for(&l.who.id, &Default::default())
        .into_iter()
        .find(|p| p.username == operator);
    let Some(with) = listed else {
        return Err(ApiError::not_found(format!(
            "no operator {operator:?} is available to chat"
        )));
    };
    Ok(SessionCommand::OpenWithOperator {
        by: l.who.clone(),
        with: natter_actors::protocol::Participant {
            kind: ParticipantKind::Operator,
            id: with.username,
            name: with.name,
        },
    })
}

/// GET /api/sessions/{id}/handoff: whom a member may hand this chat to now (the same checks as
/// the POST), sorted by name.
pub async fn hand_off_candidates(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    let view = gw.view_as(&id, &l).await?;
    if !view.members.iter().any(|m| m.same(&l.who)) {
        return Err(ApiError::forbidden(
            "you are not a member of this chat session",
        ));
    }
    let mut candidates = Vec::new();
    if !view.machine.is_empty() {
        let in_chat = |u: &str| view.members.iter().chain(&view.invited).any(|m| m.id == u);
        let group = natter_actors::machines::group_of(&view.machine);
        for p in gw
            .presence()
            .operators_for(&l.who.id, &[group.to_owned()].into())
        {
            if !in_chat(&p.username) {
                candidates.push(serde_json::json!({"id": p.username, "name": p.name}));
            }
        }
    }
    Ok(json_reply(StatusCode::OK, &candidates))
}

/// POST /api/sessions/{id}/handoff: hand the chat to an operator on the Chat page who does not
/// hide from operators and whose scope covers the machine.
pub async fn hand_off(
    id: String,
    l: Login,
    gw: Gateway,
    body: HandOffRequest,
) -> Result<Response, ApiError> {
    let unavailable = || {
        ApiError::not_found(format!(
            "no operator {:?} is available to take the chat",
            body.operator
        ))
    };
    // Membership first: who is not in the chat learns nothing about who is present.
    let view = gw.view_as(&id, &l).await?;
    let to = gw
        .presence()
        .entry(&body.operator)
        .filter(|e| !e.hide_from_operators && e.username != l.who.id)
        .ok_or_else(unavailable)?;
    if !view.machine.is_empty() && !to.scope.covers(&view.machine) {
        return Err(unavailable());
    }
    let cmd = SessionCommand::HandOff {
        by: l.who.clone(),
        to: natter_actors::protocol::Participant {
            kind: ParticipantKind::Operator,
            id: to.username,
            name: to.name,
        },
    };
    session_reply(&gw, &id, cmd, &l).await
}

/// GET /api/sessions/{id}
pub async fn view(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    let cmd = SessionCommand::View { by: l.who.clone() };
    session_reply(&gw, &id, cmd, &l).await
}

/// POST /api/sessions/{id}/join
pub async fn join(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    let cmd = SessionCommand::Join { by: l.who.clone() };
    session_reply(&gw, &id, cmd, &l).await
}

/// POST /api/sessions/{id}/messages
pub async fn send(
    id: String,
    l: Login,
    gw: Gateway,
    body: MessageRequest,
) -> Result<Response, ApiError> {
    send_message(&gw, &id, &l, body).await
}

/// POST /api/sessions/{id}/end
pub async fn end(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    end_session(&gw, &id, &l).await
}

/// GET /api/events?sessions=A,B:17&since=N
pub async fn events(
    l: Login,
    gw: Gateway,
    q: EventsQuery,
    last_event_id: Option<String>,
) -> Result<Response, ApiError> {
    let cursors = sse::parse_cursors(q.sessions.as_deref().unwrap_or(""), q.since.unwrap_or(0))?;
    let last = sse::parse_last_event_id(last_event_id.as_deref())?;
    event_stream(&gw, &l, cursors, last).await
}

/// POST /api/sessions/{id}/typing
pub async fn typing(
    id: String,
    l: Login,
    gw: Gateway,
    body: TypingRequest,
) -> Result<Response, ApiError> {
    signal(&gw, &id, &l, typing_of(body)).await
}

/// POST /api/sessions/{id}/seen
pub async fn seen(
    id: String,
    l: Login,
    gw: Gateway,
    body: SeenRequest,
) -> Result<Response, ApiError> {
    signal(&gw, &id, &l, SignalBody::Seen { seq: body.seq }).await
}

/// POST /m/{id}/api/typing
pub async fn mu_typing(
    id: String,
    token: Option<String>,
    gw: Gateway,
    body: TypingRequest,
) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    signal(&gw, &id, &l, typing_of(body)).await
}

/// POST /m/{id}/api/seen
pub async fn mu_seen(
    id: String,
    token: Option<String>,
    gw: Gateway,
    body: SeenRequest,
) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    signal(&gw, &id, &l, SignalBody::Seen { seq: body.seq }).await
}

/// GET /api/sessions/{id}/seen
pub async fn latest_seen(id: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    seen_list(&gw, &id, &l).await
}

/// GET /m/{id}/api/seen
pub async fn mu_latest_seen(
    id: String,
    token: Option<String>,
    gw: Gateway,
) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    seen_list(&gw, &id, &l).await
}

/// The latest `seen` of each member still kept (members only), as the caller may read them.
async fn seen_list(gw: &Gateway, id: &str, l: &Login) -> Result<Response, ApiError> {
    let view = gw.view_as(id, l).await?;
    if !view.members.iter().any(|m| m.same(&l.who)) {
        return Err(ApiError::forbidden(
            "you are not a member of this chat session",
        ));
    }
    let redaction = crate::redact::Redaction::for_login(gw, l);
    let seen: Vec<_> = signals::latest_seen(gw, id, &view.members)
        .await
        .iter()
        .map(|s| redaction.signal(s).into_owned())
        .collect();
    Ok(json_reply(StatusCode::OK, &seen))
}

fn typing_of(body: TypingRequest) -> SignalBody {
    SignalBody::Typing {
        typing: body.typing,
    }
}

/// Forwards a signal (or drops it, throttled): `204` either way.
async fn signal(gw: &Gateway, id: &str, l: &Login, body: SignalBody) -> Result<Response, ApiError> {
    signals::post(gw, id, l, body).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// GET /m/{id}/api/session
pub async fn mu_view(id: String, token: Option<String>, gw: Gateway) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    let cmd = SessionCommand::View { by: l.who.clone() };
    let ack = gw.command_for(&id, &cmd, &l).await?;
    // A machine user reads operators' aliases, not their login IDs.
    let view = ack.session.map(|v| gw.alias_key().view(v));
    Ok(json_reply(StatusCode::OK, &view))
}

/// POST /m/{id}/api/messages
pub async fn mu_send(
    id: String,
    token: Option<String>,
    gw: Gateway,
    body: MessageRequest,
) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    send_message(&gw, &id, &l, body).await
}

/// POST /m/{id}/api/end
pub async fn mu_end(id: String, token: Option<String>, gw: Gateway) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    end_session(&gw, &id, &l).await
}

/// GET /m/{id}/api/events
pub async fn mu_events(
    id: String,
    token: Option<String>,
    gw: Gateway,
    q: EventsQuery,
    last_event_id: Option<String>,
) -> Result<Response, ApiError> {
    let l = auth::machine_user(&gw, token, &id).await?;
    let last = sse::parse_last_event_id(last_event_id.as_deref())?;
    let cursors = vec![(id, q.since.unwrap_or(0))];
    event_stream(&gw, &l, cursors, last).await
}

/// Runs a command and answers with the session it returns (`<SessionView>`).
async fn session_reply(
    gw: &Gateway,
    id: &str,
    cmd: SessionCommand,
    l: &Login,
) -> Result<Response, ApiError> {
    let ack = gw.command_for(id, &cmd, l).await?;
    Ok(json_reply(StatusCode::OK, &ack.session))
}

async fn send_message(
    gw: &Gateway,
    id: &str,
    l: &Login,
    body: MessageRequest,
) -> Result<Response, ApiError> {
    let cmd = SessionCommand::Send {
        by: l.who.clone(),
        client_id: body.id,
        text: body.text,
    };
    let ack = gw.command_for(id, &cmd, l).await?;
    let sent = MessageSent {
        duplicate: ack.duplicate,
        seq: ack.seq,
    };
    Ok(json_reply(StatusCode::CREATED, &sent))
}

async fn end_session(gw: &Gateway, id: &str, l: &Login) -> Result<Response, ApiError> {
    let cmd = SessionCommand::End { by: l.who.clone() };
    let ack = gw.command_for(id, &cmd, l).await?;
    Ok(json_reply(StatusCode::OK, &SessionEnded { seq: ack.seq }))
}

/// The event stream of `l`'s sessions, within the login's cap of open streams.
async fn event_stream(
    gw: &Gateway,
    l: &Login,
    cursors: Vec<(String, u64)>,
    last_event_id: u64,
) -> Result<Response, ApiError> {
    let owner = match l.who.kind {
        ParticipantKind::Operator => StreamOwner::Operator,
        ParticipantKind::MachineUser => StreamOwner::MachineUser,
    };
    let slot = gw.limits().open_stream(&l.key, owner)?;
    let stream = sse::open(gw, l, cursors, last_event_id).await?;
    Ok(sse::response(
        stream.holding(slot),
        gw,
        StreamKind::Sessions,
    ))
}
