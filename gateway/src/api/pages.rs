//! The web UI's pages and the health checks.

use std::net::IpAddr;

use natter_actors::protocol::valid_session_id;
use warp::Rejection;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::{Gateway, readiness, ui};

/// GET /: the operator's console.
pub fn index() -> Response {
    ui::file("index.html")
}

/// GET /chat/{id}: an operator's chat window. Its `Link` header has the browser ask for what
/// the window needs first (the history, the newest events, who I am, my options, the session)
/// as soon as this response comes, before the page is parsed: chat.html's boot script asks for
/// the same URLs, the same way, and gets these answers (it and chat.js keep them in step).
pub fn chat(id: String) -> Response {
    let mut page = ui::file("chat.html");
    // Anything but a session ID gets the page without (it says "not found").
    if valid_session_id(&id) {
        let api = format!("/api/sessions/{id}");
        let link = [
            format!("{api}/events?last=20000"),
            format!("{api}/events?last=100"),
            "/api/me".to_string(),
            "/api/me/options".to_string(),
            api.clone(),
        ]
        .iter()
        .map(|url| format!("<{url}>; rel=preload; as=fetch; crossorigin"))
        .collect::<Vec<_>>()
        .join(", ");
        if let Ok(v) = header::HeaderValue::from_str(&link) {
            page.headers_mut().insert(header::LINK, v);
        }
    }
    page
}

/// GET /m/{id}: the machine user's chat window (the agent opens it).
pub fn machine_user_chat(_id: String) -> Response {
    ui::file("machine.html")
}

/// GET /start/: the machine user's start page, where they pick an operator to chat with (the
/// agent opens it when they ask for a chat).
pub fn start() -> Response {
    ui::file("start.html")
}

/// GET /static/{name}: `304 Not Modified` for an `If-None-Match` naming the file as it is.
pub async fn static_file(
    name: String,
    if_none_match: Option<String>,
) -> Result<Response, Rejection> {
    if ui::exists(&name) {
        Ok(ui::asset(&name, if_none_match.as_deref()))
    } else {
        Err(warp::reject::not_found())
    }
}

/// GET /healthz
pub fn healthz() -> Response {
    "ok".into_response()
}

/// GET /readyz: `ready`, or 503 `not ready: <why>`.
pub async fn readyz(gw: Gateway) -> Response {
    match readiness::check(&gw).await {
        Ok(()) => "ready".into_response(),
        Err(why) => {
            warp::reply::with_status(format!("not ready: {why}"), StatusCode::SERVICE_UNAVAILABLE)
                .into_response()
        }
    }
}

/// GET /metrics (Prometheus text format), for loopback clients or bearers of the token.
pub fn metrics(
    gw: Gateway,
    client: Option<IpAddr>,
    authorization: Option<String>,
) -> Result<Response, ApiError> {
    let token = gw.config().metrics_token.as_deref();
    Metrics::check_access(token, client, authorization.as_deref())?;
    let mut r = gw.metrics().render(&gw).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
