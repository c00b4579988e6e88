//! The HTTP routes. See `docs/api.md` for the contract.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use natter_actors::directory;
use natter_actors::machines::{MachineReply, MachineRequest, Scope, filter_matches};
use natter_actors::protocol::{
    Participant, ParticipantKind, SessionCommand, valid_machine_id, valid_session_id,
};
use natter_actors::subjects;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::Gateway;
use crate::auth::{self, Login, MACHINE_USER_COOKIE, OPERATOR_COOKIE};
use crate::error::{ApiError, ErrorKind};
use crate::{sse, ui};

/// Largest request body.
const BODY_LIMIT: u64 = 64 * 1024;
/// Bodies up to this size are read before a 413, so the client gets the answer instead of a
/// reset connection; larger ones are refused unread.
const BODY_DRAIN_LIMIT: u64 = 1024 * 1024;

/// Runs a handler and turns its error into the JSON error response.
async fn respond<F>(f: F) -> Result<Response, Infallible>
where
    F: Future<Output = Result<Response, ApiError>>,
{
    Ok(f.await.unwrap_or_else(|e| e.into_response()))
}

fn json_reply<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// A JSON request body of type `T`, with clear errors for every way it can be wrong.
fn json_body<T: DeserializeOwned + Send>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone
{
    warp::header::optional::<String>("content-type")
        .and(warp::body::content_length_limit(BODY_DRAIN_LIMIT))
        .and(warp::body::bytes())
        .and_then(|content_type: Option<String>, body: Bytes| async move {
            if body.len() as u64 > BODY_LIMIT {
                return Err(warp::reject::custom(ApiError::new(
                    ErrorKind::TooLarge,
                    format!("the request body is over {} KiB", BODY_LIMIT / 1024),
                )));
            }
            let is_json = content_type
                .as_deref()
                .is_some_and(|c| c.trim_start().starts_with("application/json"));
            if !is_json {
                return Err(warp::reject::custom(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    "send the body as application/json",
                )));
            }
            if std::str::from_utf8(&body).is_err() {
                return Err(warp::reject::custom(ApiError::bad_request(
                    "the body is not valid UTF-8",
                )));
            }
            serde_json::from_slice::<T>(&body).map_err(|e| {
                warp::reject::custom(ApiError::bad_request(format!("invalid JSON body: {e}")))
            })
        })
}

/// A session ID path segment; anything else is an unknown session.
fn session_id() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|id: String| async move {
        if valid_session_id(&id) {
            Ok(id)
        } else {
            Err(warp::reject::custom(ApiError::not_found(
                "no such chat session",
            )))
        }
    })
}

fn with_gw(gw: Gateway) -> impl Filter<Extract = (Gateway,), Error = Infallible> + Clone {
    warp::any().map(move || gw.clone())
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct ChatBody {
    machine: String,
}

#[derive(Deserialize)]
struct MessageBody {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct FilterQuery {
    filter: Option<String>,
}

#[derive(Deserialize)]
struct EventsQuery {
    sessions: Option<String>,
    since: Option<u64>,
}

/// Every route, with errors turned into JSON.
pub fn routes(gw: Gateway) -> warp::filters::BoxedFilter<(Response,)> {
    let g = || with_gw(gw.clone());
    let op = || auth::operator(gw.clone());

    // Pages.
    let index = warp::path::end()
        .and(warp::get())
        .map(|| ui::file("index.html"));
    let chat_page = warp::path!("chat" / String)
        .and(warp::get())
        .map(|_id: String| ui::file("chat.html"));
    let machine_page = warp::path("m")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .map(|_id: String| ui::file("machine.html"));
    let static_files =
        warp::path!("static" / String)
            .and(warp::get())
            .and_then(|name: String| async move {
                if ui::exists(&name) {
                    Ok(ui::file(&name))
                } else {
                    Err(warp::reject::not_found())
                }
            });
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| "ok".into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(g())
        .map(|gw: Gateway| {
            if gw.is_ready() {
                "ready".into_response()
            } else {
                warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            }
        });
    let pages = index
        .or(chat_page)
        .unify()
        .or(machine_page)
        .unify()
        .or(static_files)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify();

    // Operator API.
    let login = warp::path!("api" / "login")
        .and(warp::post())
        .and(auth::csrf())
        .and(g())
        .and(json_body::<LoginBody>())
        .and_then(|gw, body| respond(login(gw, body)));
    let logout = warp::path!("api" / "logout")
        .and(warp::post())
        .and(auth::csrf())
        .and(g())
        .and(auth::operator_token())
        .and_then(|gw: Gateway, token: Option<String>| {
            respond(async move {
                if let Some(t) = token {
                    gw.delete_login(&t).await;
                }
                let mut r = StatusCode::NO_CONTENT.into_response();
                set_cookie(&mut r, &auth::clear_cookie(OPERATOR_COOKIE, "/"));
                Ok(r)
            })
        });
    let me = warp::path!("api" / "me")
        .and(warp::get())
        .and(op())
        .map(|l: Login| json_reply(StatusCode::OK, &operator_json(&l)));
    let machines = warp::path!("api" / "machines")
        .and(warp::get())
        .and(op())
        .and(g())
        .and(warp::query::<FilterQuery>())
        .and_then(|l: Login, gw, q| respond(list_machines(gw, l, q)));
    let machine_events = warp::path!("api" / "machines" / "events")
        .and(warp::get())
        .and(op())
        .and(g())
        .and(warp::query::<FilterQuery>())
        .and_then(|l: Login, gw, q| respond(machine_events(gw, l, q)));
    let machine_details = warp::path!("api" / "machines" / String)
        .and(warp::get())
        .and(op())
        .and(g())
        .and_then(|id: String, l: Login, gw| respond(machine_details(gw, l, id)));
    let start_chat = warp::path!("api" / "chats")
        .and(warp::post())
        .and(auth::csrf())
        .and(op())
        .and(g())
        .and(json_body::<ChatBody>())
        .and_then(|l, gw, body| respond(start_chat(gw, l, body)));
    let session_view = warp::path("api")
        .and(warp::path("sessions"))
        .and(session_id())
        .and(warp::path::end())
        .and(warp::get())
        .and(op())
        .and(g())
        .and_then(|id: String, l: Login, gw: Gateway| {
            respond(async move {
                let ack = gw
                    .command_as(&id, &SessionCommand::View { by: l.who }, &l.scope)
                    .await?;
                Ok(json_reply(StatusCode::OK, &ack.session))
            })
        });
    let join = warp::path("api")
        .and(warp::path("sessions"))
        .and(session_id())
        .and(warp::path!("join"))
        .and(warp::post())
        .and(auth::csrf())
        .and(op())
        .and(g())
        .and_then(|id: String, l: Login, gw: Gateway| {
            respond(async move {
                let ack = gw
                    .command_as(&id, &SessionCommand::Join { by: l.who }, &l.scope)
                    .await?;
                Ok(json_reply(StatusCode::OK, &ack.session))
            })
        });
    let send = warp::path("api")
        .and(warp::path("sessions"))
        .and(session_id())
        .and(warp::path!("messages"))
        .and(warp::post())
        .and(auth::csrf())
        .and(op())
        .and(g())
        .and(json_body::<MessageBody>())
        .and_then(|id: String, l: Login, gw: Gateway, body: MessageBody| {
            respond(send_message(gw, id, l.who, l.scope, body))
        });
    let end = warp::path("api")
        .and(warp::path("sessions"))
        .and(session_id())
        .and(warp::path!("end"))
        .and(warp::post())
        .and(auth::csrf())
        .and(op())
        .and(g())
        .and_then(|id: String, l: Login, gw: Gateway| respond(end_session(gw, id, l.who, l.scope)));
    let events = warp::path!("api" / "events")
        .and(warp::get())
        .and(op())
        .and(g())
        .and(warp::query::<EventsQuery>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and_then(
            |l: Login, gw: Gateway, q: EventsQuery, last: Option<String>| {
                respond(async move {
                    let cursors = sse::parse_cursors(
                        q.sessions.as_deref().unwrap_or(""),
                        q.since.unwrap_or(0),
                    )?;
                    let last = sse::parse_last_event_id(last.as_deref())?;
                    event_stream(gw, l.who, l.scope, cursors, last).await
                })
            },
        );
    let operator_api = login
        .or(logout)
        .unify()
        .or(me)
        .unify()
        .or(machines)
        .unify()
        .or(machine_events)
        .unify()
        .or(machine_details)
        .unify()
        .or(start_chat)
        .unify()
        .or(session_view)
        .unify()
        .or(join)
        .unify()
        .or(send)
        .unify()
        .or(end)
        .unify()
        .or(events)
        .unify();

    // Machine user API: /m/<session>/api/…, with a cookie scoped to that path.
    let m = || warp::path("m").and(session_id()).and(warp::path("api"));
    let mu_token = || warp::cookie::optional::<String>(MACHINE_USER_COOKIE);
    let m_login = m()
        .and(warp::path!("login"))
        .and(warp::post())
        .and(auth::csrf())
        .and(g())
        .and(json_body::<TokenBody>())
        .and_then(|id: String, gw: Gateway, body: TokenBody| respond(machine_login(gw, id, body)));
    let m_session = m()
        .and(warp::path!("session"))
        .and(warp::get())
        .and(mu_token())
        .and(g())
        .and_then(|id: String, token: Option<String>, gw: Gateway| {
            respond(async move {
                let l = auth::machine_user(&gw, token, &id).await?;
                let ack = gw.command(&id, &SessionCommand::View { by: l.who }).await?;
                Ok(json_reply(StatusCode::OK, &ack.session))
            })
        });
    let m_send = m()
        .and(warp::path!("messages"))
        .and(warp::post())
        .and(auth::csrf())
        .and(mu_token())
        .and(g())
        .and(json_body::<MessageBody>())
        .and_then(
            |id: String, token: Option<String>, gw: Gateway, body: MessageBody| {
                respond(async move {
                    let l = auth::machine_user(&gw, token, &id).await?;
                    send_message(gw, id, l.who, Scope::All, body).await
                })
            },
        );
    let m_end = m()
        .and(warp::path!("end"))
        .and(warp::post())
        .and(auth::csrf())
        .and(mu_token())
        .and(g())
        .and_then(|id: String, token: Option<String>, gw: Gateway| {
            respond(async move {
                let l = auth::machine_user(&gw, token, &id).await?;
                end_session(gw, id, l.who, Scope::All).await
            })
        });
    let m_events = m()
        .and(warp::path!("events"))
        .and(warp::get())
        .and(mu_token())
        .and(g())
        .and(warp::query::<EventsQuery>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and_then(
            |id: String,
             token: Option<String>,
             gw: Gateway,
             q: EventsQuery,
             last: Option<String>| {
                respond(async move {
                    let l = auth::machine_user(&gw, token, &id).await?;
                    let last = sse::parse_last_event_id(last.as_deref())?;
                    let cursors = vec![(id, q.since.unwrap_or(0))];
                    event_stream(gw, l.who, l.scope, cursors, last).await
                })
            },
        );
    let machine_api = m_login
        .or(m_session)
        .unify()
        .or(m_send)
        .unify()
        .or(m_end)
        .unify()
        .or(m_events)
        .unify();

    pages
        .or(operator_api)
        .unify()
        .or(machine_api)
        .unify()
        .recover(crate::error::recover)
        .unify()
        .boxed()
}

fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn operator_json(l: &Login) -> serde_json::Value {
    json!({"id": l.who.id, "name": l.who.name, "admin": l.admin, "scopes": l.scopes})
}

/// A precomputed hash to verify against when the username is unknown, so that both failures
/// take the same time.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| directory::hash_password("dummy password for timing").unwrap_or_default())
}

async fn login(gw: Gateway, body: LoginBody) -> Result<Response, ApiError> {
    let record = directory::get_operator(&gw.stores().operators, body.username.trim())
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let hash = record
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || directory::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(record) = record.filter(|_| ok) else {
        return Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "wrong username or password",
        ));
    };
    let login = Login {
        who: Participant {
            kind: ParticipantKind::Operator,
            id: record.username.clone(),
            name: record.name.clone(),
        },
        admin: record.admin,
        session: None,
        scope: record.scope(),
        scopes: record.scopes.clone(),
    };
    let token = gw.create_login(&login).await?;
    let mut r = json_reply(StatusCode::OK, &operator_json(&login));
    set_cookie(
        &mut r,
        &auth::login_cookie(
            OPERATOR_COOKIE,
            &token,
            "/",
            gw.config().login_ttl.as_secs(),
            gw.config().secure_cookies,
        ),
    );
    Ok(r)
}

/// Checks a Machine ID / Group ID filter: a machine-ID-like pattern that may contain `*`.
fn checked_filter(filter: Option<String>) -> Result<String, ApiError> {
    let f = filter.unwrap_or_default().trim().to_ascii_lowercase();
    let ok = f.len() <= 253
        && f.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b'*')
        });
    if ok {
        Ok(f)
    } else {
        Err(ApiError::bad_request(
            "a filter is a machine or group ID, with * as a wildcard (like *.sales.*)",
        ))
    }
}

async fn list_machines(gw: Gateway, l: Login, q: FilterQuery) -> Result<Response, ApiError> {
    let filter = checked_filter(q.filter)?;
    Ok(json_reply(
        StatusCode::OK,
        &gw.directory().list(&l.scope, &filter),
    ))
}

/// Quick View: the machine's live record from its agent actor (the directory's copy if the
/// actor does not answer in time).
async fn machine_details(gw: Gateway, l: Login, id: String) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no machine {id}"));
    if !valid_machine_id(&id) || !l.scope.covers(&id) {
        return Err(not_found());
    }
    let known = gw.directory().record(&id);
    let body = serde_json::to_vec(&MachineRequest::View).unwrap_or_default();
    let live = tokio::time::timeout(
        Duration::from_secs(2),
        gw.stores()
            .client
            .request(subjects::machine_request(&id), body.into()),
    )
    .await;
    let record = match live {
        Ok(Ok(msg)) => serde_json::from_slice::<MachineReply>(&msg.payload)
            .ok()
            .and_then(Result::ok),
        _ => None,
    }
    .or(known)
    .ok_or_else(not_found)?;
    Ok(json_reply(StatusCode::OK, &gw.directory().view(&record)))
}

/// The machine list as a stream: the whole list first, then each change (F10: icons change
/// live). Only machines in the operator's scope and filter ever appear.
async fn machine_events(gw: Gateway, l: Login, q: FilterQuery) -> Result<Response, ApiError> {
    let filter = checked_filter(q.filter)?;
    let directory = gw.directory().clone();
    let mut changes = directory.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<warp::sse::Event, Infallible>>(64);
    let snapshot = |directory: &crate::machines::Directory, scope: &Scope, filter: &str| {
        warp::sse::Event::default()
            .event("machines")
            .data(serde_json::to_string(&directory.list(scope, filter)).unwrap_or_default())
    };
    let first = snapshot(&directory, &l.scope, &filter);
    let shutdown = gw.shutdown_token().clone();
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let id = tokio::select! {
                changed = changes.recv() => changed,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            };
            let event = match id {
                Ok(id) => {
                    if !l.scope.covers(&id) || !filter_matches(&filter, &id) {
                        continue;
                    }
                    let view = match directory.record(&id) {
                        Some(r) => directory.view(&r),
                        None => json!({"id": id, "removed": true}),
                    };
                    warp::sse::Event::default()
                        .event("machine")
                        .data(view.to_string())
                }
                // Fell behind the changes: send the whole list again.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    snapshot(&directory, &l.scope, &filter)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Ok(sse_response(tokio_stream::wrappers::ReceiverStream::new(
        rx,
    )))
}

/// An SSE response: keep-alive comments, no caching, no proxy buffering.
fn sse_response<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<warp::sse::Event, Infallible>> + Send + Sync + 'static,
{
    let reply = warp::sse::reply(
        warp::sse::keep_alive()
            .interval(sse::KEEP_ALIVE)
            .stream(stream),
    );
    let mut r = reply.into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r.headers_mut()
        .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    r
}

async fn start_chat(gw: Gateway, l: Login, body: ChatBody) -> Result<Response, ApiError> {
    let machine = body.machine.trim().to_string();
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
    let id = ulid::Ulid::new().to_string();
    let open = SessionCommand::Open {
        by: l.who.clone(),
        machine,
    };
    match gw.command_as(&id, &open, &l.scope).await {
        Ok(ack) => Ok(json_reply(
            StatusCode::CREATED,
            &json!({"session": ack.session}),
        )),
        Err(e) if e.kind() == ErrorKind::Conflict && e.session.is_some() => {
            // A chat with this machine is in progress: join it (F6).
            let existing = e.session.unwrap_or_default();
            let ack = gw
                .command_as(&existing, &SessionCommand::Join { by: l.who }, &l.scope)
                .await?;
            Ok(json_reply(StatusCode::OK, &json!({"session": ack.session})))
        }
        Err(e) => Err(e),
    }
}

async fn send_message(
    gw: Gateway,
    id: String,
    by: Participant,
    scope: Scope,
    body: MessageBody,
) -> Result<Response, ApiError> {
    let cmd = SessionCommand::Send {
        by,
        client_id: body.id,
        text: body.text,
    };
    let ack = gw.command_as(&id, &cmd, &scope).await?;
    Ok(json_reply(
        StatusCode::CREATED,
        &json!({"seq": ack.seq, "duplicate": ack.duplicate}),
    ))
}

async fn end_session(
    gw: Gateway,
    id: String,
    by: Participant,
    scope: Scope,
) -> Result<Response, ApiError> {
    let ack = gw
        .command_as(&id, &SessionCommand::End { by }, &scope)
        .await?;
    Ok(json_reply(StatusCode::OK, &json!({"seq": ack.seq})))
}

async fn machine_login(gw: Gateway, id: String, body: TokenBody) -> Result<Response, ApiError> {
    if body.token.is_empty() || body.token.len() > 128 {
        return Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "this chat link is not valid",
        ));
    }
    let ack = gw
        .command(&id, &SessionCommand::MachineLogin { token: body.token })
        .await?;
    let who = ack
        .participant
        .ok_or_else(|| ApiError::unavailable("the session did not name the machine user"))?;
    let login = Login {
        who,
        admin: false,
        session: Some(id.clone()),
        // A machine user is confined to its session by the login itself.
        scope: Scope::All,
        scopes: Vec::new(),
    };
    let token = gw.create_login(&login).await?;
    let mut r = json_reply(StatusCode::OK, &ack.session);
    set_cookie(
        &mut r,
        &auth::login_cookie(
            MACHINE_USER_COOKIE,
            &token,
            &format!("/m/{id}/"),
            gw.config().login_ttl.as_secs(),
            gw.config().secure_cookies,
        ),
    );
    Ok(r)
}

async fn event_stream(
    gw: Gateway,
    who: Participant,
    scope: Scope,
    cursors: Vec<(String, u64)>,
    last_event_id: u64,
) -> Result<Response, ApiError> {
    let shutdown = gw.shutdown_token().clone();
    let stream = sse::open(&gw, &who, &scope, cursors, last_event_id).await?;
    // End the stream on shutdown so graceful drain does not wait for it forever.
    let stream = stream.take_until(async move { shutdown.cancelled_owned().await });
    Ok(sse_response(stream))
}
