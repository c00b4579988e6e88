//! The HTTP routes. See `docs/api.md` for the contract.
//!
//! This file is the route table: one small filter per route, in the order they are tried. The
//! extractors are in [`filters`], the handlers by area in [`pages`], [`login`], [`options`],
//! [`machines`], [`sessions`] and [`transcript`], and the JSON shapes in [`models`].

mod filters;
mod login;
mod machines;
pub mod models;
mod my_chats;
mod options;
mod pages;
mod roles;
mod sessions;
mod start;
mod transcript;

use std::convert::Infallible;
use std::future::Future;

use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::Gateway;
use crate::error::{ApiError, ErrorKind};
use filters::{
    client_addr, last_event_id, machine_user_token, operator, operator_token, session_id, with_gw,
};

/// What every route filter is: a response, or a rejection for the next route to try.
trait Route: Filter<Extract = (Response,), Error = Rejection> + Clone {}
impl<F: Filter<Extract = (Response,), Error = Rejection> + Clone> Route for F {}

/// Tries routes in order: `.or(…).unify()` without boxing each one.
macro_rules! any_of {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $first $(.or($rest).unify())*
    };
}

/// Every route, with errors turned into JSON (and counted). Health checks and metrics answer
/// whatever the `Host` (probes and scrapers use the node's own address); everything else must be
/// asked for by our public name.
pub fn routes(gw: Gateway) -> warp::filters::BoxedFilter<(Response,)> {
    let host = filters::host(gw.config().public_origin.clone(), gw.limits().clone());
    // Boxed per area: one unboxed chain of every route makes a future too deep for a worker
    // thread's stack.
    let api = any_of!(
        pages(),
        operator_api(gw.clone()).boxed(),
        admin_api(gw.clone()).boxed(),
        machine_user_api(gw.clone()).boxed(),
        start_api(gw.clone()).boxed()
    );
    let counted = gw.clone();
    any_of!(health(gw), host.and(api))
        .recover(filters::recover)
        .unify()
        .map(move |r: Response| {
            if let Some(kind) = r.extensions().get::<ErrorKind>() {
                counted.metrics().error_answered(*kind);
            }
            r
        })
        .boxed()
}

/// The CSRF check, against our public origin.
fn csrf(gw: &Gateway) -> impl Filter<Extract = (), Error = Rejection> + Clone + use<> {
    filters::csrf(gw.config().public_origin.clone())
}

/// A JSON body, within the body limits.
fn json_body<T: serde::de::DeserializeOwned + Send>(
    gw: &Gateway,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone + use<T> {
    filters::json_body(gw.limits().clone())
}

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

fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `/api/sessions/{id}`, for the operator's session routes to continue.
fn operator_session() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path("api")
        .and(warp::path("sessions"))
        .and(session_id())
}

/// `/m/{id}/api`, for the machine user's routes to continue (its cookie is scoped to `/m/{id}/`).
fn machine_user_session() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path("m").and(session_id()).and(warp::path("api"))
}

fn health(gw: Gateway) -> impl Route {
    let healthz = warp::path!("healthz").and(warp::get()).map(pages::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_gw(gw.clone()))
        .then(pages::readyz);
    any_of!(healthz, readyz, metrics(gw))
}

fn metrics(gw: Gateway) -> impl Route {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_gw(gw))
        .and(client_addr())
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|gw, client, auth| respond(async move { pages::metrics(gw, client, auth) }))
}

fn pages() -> impl Route {
    let index = warp::path::end().and(warp::get()).map(pages::index);
    let chat = warp::path!("chat" / String)
        .and(warp::get())
        .map(pages::chat);
    let machine_user_chat = warp::path("m")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .map(pages::machine_user_chat);
    let start = warp::path("start")
        .and(warp::path::end())
        .and(warp::get())
        .map(pages::start);
    let static_file = warp::path!("static" / String)
        .and(warp::get())
        // Not `header::optional`: a value that is not text is ignored (the file is sent), not a 400.
        .and(
            warp::header::headers_cloned().map(|h: warp::http::HeaderMap| {
                h.get(warp::http::header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            }),
        )
        .and_then(pages::static_file);
    any_of!(index, chat, machine_user_chat, start, static_file)
}

/// The operator's routes, in groups: one flat chain of them all nests warp's types deeper
/// than the compiler's recursion limit allows (in release builds).
fn operator_api(gw: Gateway) -> impl Route {
    any_of!(
        account_api(gw.clone()),
        machine_api(gw.clone()),
        session_api(gw)
    )
}

fn account_api(gw: Gateway) -> impl Route {
    any_of!(
        login(gw.clone()),
        logout(gw.clone()),
        me(gw.clone()),
        options_get(gw.clone()),
        options_put(gw.clone()),
        my_chats_api(gw),
    )
}

/// The operator's open chats (B7).
fn my_chats_api(gw: Gateway) -> impl Route {
    let list = warp::path!("api" / "me" / "chats")
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and_then(|l, gw| respond(my_chats::list(l, gw)));
    let remember = warp::path!("api" / "me" / "chats" / String)
        .and(warp::put())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and_then(|id, l, gw| respond(my_chats::remember(id, l, gw)));
    let forget = warp::path!("api" / "me" / "chats" / String)
        .and(warp::delete())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(my_chats::forget(id, l, gw)));
    any_of!(list, remember, forget)
}

fn machine_api(gw: Gateway) -> impl Route {
    any_of!(
        machine_list(gw.clone()),
        machine_events(gw.clone()),
        machine_details(gw.clone()),
        start_chat(gw),
    )
}

fn session_api(gw: Gateway) -> impl Route {
    any_of!(
        session_view(gw.clone()),
        session_join(gw.clone()),
        session_send(gw.clone()),
        session_end(gw.clone()),
        session_hand_off(gw.clone()),
        session_hand_off_candidates(gw.clone()),
        session_transcript(gw.clone()),
        session_recent_events(gw.clone()),
        session_typing(gw.clone()),
        session_seen(gw.clone()),
        session_latest_seen(gw.clone()),
        session_events(gw),
    )
}

/// Machine roles (admins only; everyone else gets 403).
fn admin_api(gw: Gateway) -> impl Route {
    let list = warp::path!("api" / "roles")
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and_then(|l, gw| respond(roles::list(l, gw)));
    let create = warp::path!("api" / "roles")
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|l, gw, body| respond(roles::create(l, gw, body)));
    let set = warp::path!("api" / "roles" / String)
        .and(warp::put())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|name, l, gw, body| respond(roles::set(name, l, gw, body)));
    let delete = warp::path!("api" / "roles" / String)
        .and(warp::delete())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and_then(|name, l, gw| respond(roles::delete(name, l, gw)));
    let assign = warp::path!("api" / "machines" / String / "role")
        .and(warp::put())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|machine, l, gw, body| respond(roles::assign(machine, l, gw, body)));
    any_of!(list, create, set, delete, assign)
}

/// The machine user's start page (`/start/api/…`, its cookie scoped to `/start/`).
fn start_api(gw: Gateway) -> impl Route {
    let login = warp::path!("start" / "api" / "login")
        .and(warp::post())
        .and(csrf(&gw))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|gw, body| respond(start::login(gw, body)));
    let operators = warp::path!("start" / "api" / "operators")
        .and(warp::get())
        .and(with_gw(gw.clone()))
        .and(warp::cookie::optional::<String>(start::START_COOKIE))
        .and_then(|gw, cookie| respond(start::operators(gw, cookie)));
    let chats = warp::path!("start" / "api" / "chats")
        .and(warp::post())
        .and(csrf(&gw))
        .and(with_gw(gw.clone()))
        .and(warp::cookie::optional::<String>(start::START_COOKIE))
        .and(json_body(&gw))
        .and_then(|gw, cookie, body| respond(start::start_chat(gw, cookie, body)));
    any_of!(login, operators, chats)
}

fn machine_user_api(gw: Gateway) -> impl Route {
    any_of!(
        mu_login(gw.clone()),
        mu_session(gw.clone()),
        mu_send(gw.clone()),
        mu_end(gw.clone()),
        mu_typing(gw.clone()),
        mu_seen(gw.clone()),
        mu_latest_seen(gw.clone()),
        mu_events(gw),
    )
}

fn login(gw: Gateway) -> impl Route {
    warp::path!("api" / "login")
        .and(warp::post())
        .and(csrf(&gw))
        .and(client_addr())
        .and(json_body(&gw))
        .and(with_gw(gw))
        .and_then(|client, body, gw| respond(login::login(gw, client, body)))
}

fn logout(gw: Gateway) -> impl Route {
    warp::path!("api" / "logout")
        .and(warp::post())
        .and(csrf(&gw))
        .and(with_gw(gw))
        .and(operator_token())
        .and_then(|gw, token| respond(login::logout(gw, token)))
}

fn me(gw: Gateway) -> impl Route {
    warp::path!("api" / "me")
        .and(warp::get())
        .and(operator(gw))
        .map(login::me)
}

fn options_get(gw: Gateway) -> impl Route {
    warp::path!("api" / "me" / "options")
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|l, gw| respond(options::get(l, gw)))
}

fn options_put(gw: Gateway) -> impl Route {
    warp::path!("api" / "me" / "options")
        .and(warp::put())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|l, gw, body| respond(options::put(l, gw, body)))
}

fn machine_list(gw: Gateway) -> impl Route {
    warp::path!("api" / "machines")
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and(warp::query())
        .and_then(|l, gw, q| respond(machines::list(l, gw, q)))
}

fn machine_events(gw: Gateway) -> impl Route {
    warp::path!("api" / "machines" / "events")
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and(warp::query())
        .and_then(|l, gw, q| respond(machines::events(l, gw, q)))
}

fn machine_details(gw: Gateway) -> impl Route {
    warp::path!("api" / "machines" / String)
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(machines::details(id, l, gw)))
}

fn start_chat(gw: Gateway) -> impl Route {
    warp::path!("api" / "chats")
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|l, gw, body| respond(sessions::start_chat(l, gw, body)))
}

fn session_view(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path::end())
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(sessions::view(id, l, gw)))
}

fn session_join(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("join"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(sessions::join(id, l, gw)))
}

fn session_send(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("messages"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, l, gw, body| respond(sessions::send(id, l, gw, body)))
}

fn session_end(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("end"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(sessions::end(id, l, gw)))
}

fn session_hand_off(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("handoff"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, l, gw, body| respond(sessions::hand_off(id, l, gw, body)))
}

fn session_hand_off_candidates(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("handoff"))
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(sessions::hand_off_candidates(id, l, gw)))
}

fn session_transcript(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("transcript"))
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and(warp::query())
        .and_then(|id, l, gw, q| respond(transcript::transcript(id, l, gw, q)))
}

fn session_recent_events(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("events"))
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and(warp::query())
        .and_then(|id, l, gw, q| respond(transcript::recent_events(id, l, gw, q)))
}

fn session_typing(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("typing"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, l, gw, body| respond(sessions::typing(id, l, gw, body)))
}

fn session_seen(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("seen"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(operator(gw.clone()))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, l, gw, body| respond(sessions::seen(id, l, gw, body)))
}

fn session_latest_seen(gw: Gateway) -> impl Route {
    operator_session()
        .and(warp::path!("seen"))
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and_then(|id, l, gw| respond(sessions::latest_seen(id, l, gw)))
}

fn session_events(gw: Gateway) -> impl Route {
    warp::path!("api" / "events")
        .and(warp::get())
        .and(operator(gw.clone()))
        .and(with_gw(gw))
        .and(warp::query())
        .and(last_event_id())
        .and_then(|l, gw, q, last| respond(sessions::events(l, gw, q, last)))
}

fn mu_login(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("login"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, gw, body| respond(login::machine_user_login(id, gw, body)))
}

fn mu_session(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("session"))
        .and(warp::get())
        .and(machine_user_token())
        .and(with_gw(gw))
        .and_then(|id, token, gw| respond(sessions::mu_view(id, token, gw)))
}

fn mu_send(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("messages"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(machine_user_token())
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, token, gw, body| respond(sessions::mu_send(id, token, gw, body)))
}

fn mu_end(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("end"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(machine_user_token())
        .and(with_gw(gw))
        .and_then(|id, token, gw| respond(sessions::mu_end(id, token, gw)))
}

fn mu_typing(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("typing"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(machine_user_token())
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, token, gw, body| respond(sessions::mu_typing(id, token, gw, body)))
}

fn mu_seen(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("seen"))
        .and(warp::post())
        .and(csrf(&gw))
        .and(machine_user_token())
        .and(with_gw(gw.clone()))
        .and(json_body(&gw))
        .and_then(|id, token, gw, body| respond(sessions::mu_seen(id, token, gw, body)))
}

fn mu_latest_seen(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("seen"))
        .and(warp::get())
        .and(machine_user_token())
        .and(with_gw(gw))
        .and_then(|id, token, gw| respond(sessions::mu_latest_seen(id, token, gw)))
}

fn mu_events(gw: Gateway) -> impl Route {
    machine_user_session()
        .and(warp::path!("events"))
        .and(warp::get())
        .and(machine_user_token())
        .and(with_gw(gw))
        .and(warp::query())
        .and(last_event_id())
        .and_then(|id, token, gw, q, last| respond(sessions::mu_events(id, token, gw, q, last)))
}
