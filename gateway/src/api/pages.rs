//! The web UI's pages and the health checks.

use warp::Rejection;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::{Gateway, ui};

/// GET /: the operator's console.
pub fn index() -> Response {
    ui::file("index.html")
}

/// GET /chat/{id}: an operator's chat window.
pub fn chat(_id: String) -> Response {
    ui::file("chat.html")
}

/// GET /m/{id}: the machine user's chat window (the agent opens it).
pub fn machine_user_chat(_id: String) -> Response {
    ui::file("machine.html")
}

/// GET /static/{name}
pub async fn static_file(name: String) -> Result<Response, Rejection> {
    if ui::exists(&name) {
        Ok(ui::file(&name))
    } else {
        Err(warp::reject::not_found())
    }
}

/// GET /healthz
pub fn healthz() -> Response {
    "ok".into_response()
}

/// GET /readyz
pub fn readyz(gw: Gateway) -> Response {
    if gw.is_ready() {
        "ready".into_response()
    } else {
        warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE).into_response()
    }
}
