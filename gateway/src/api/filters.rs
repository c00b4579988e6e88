//! Extractors shared by the routes: the gateway, the client's address, logins, the Host and
//! CSRF checks, JSON bodies, session IDs, and [`recover`], which turns every rejection into the
//! JSON error of docs/api.md.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Buf;
use futures::{Stream, TryStreamExt};
use natter_actors::protocol::{ParticipantKind, valid_session_id};
use serde::de::DeserializeOwned;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::Gateway;
use crate::auth::{Login, MACHINE_USER_COOKIE, OPERATOR_COOKIE};
use crate::error::{ApiError, ErrorKind};
use crate::limits::{ClientAddr, Limits, count};
use crate::origin::PublicOrigin;

/// Largest request body.
pub const BODY_LIMIT: u64 = 64 * 1024;
/// Bodies up to this size are read before a 413, so the client gets the answer instead of a
/// reset connection; larger ones are refused unread.
pub const BODY_DRAIN_LIMIT: u64 = 1024 * 1024;

fn reject(e: ApiError) -> Rejection {
    warp::reject::custom(e)
}

/// The gateway, for handlers.
pub fn with_gw(gw: Gateway) -> impl Filter<Extract = (Gateway,), Error = Infallible> + Clone {
    warp::any().map(move || gw.clone())
}

/// The client's address (set by the server; absent in tests that do not set it).
pub fn client_addr() -> impl Filter<Extract = (Option<IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|c: Option<ClientAddr>| c.map(|ClientAddr(ip)| ip))
}

/// A session ID path segment; anything else is an unknown session.
pub fn session_id() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|id: String| async move {
        if valid_session_id(&id) {
            Ok(id)
        } else {
            Err(reject(ApiError::not_found("no such chat session")))
        }
    })
}

/// A JSON request body of type `T`, with clear errors for every way it can be wrong. The whole
/// body must arrive within the body timeout.
pub fn json_body<T: DeserializeOwned + Send>(
    limits: Arc<Limits>,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::body::content_length_limit(BODY_DRAIN_LIMIT))
        .and(warp::body::stream())
        .and_then(move |content_type: Option<String>, body| {
            let limits = limits.clone();
            async move {
                let body = read_body(body, &limits).await.map_err(reject)?;
                parse_json_body(content_type.as_deref(), &body).map_err(reject)
            }
        })
}

/// Reads a whole body (its length is already bounded by `Content-Length`), or 408 when it does
/// not arrive in time.
async fn read_body(
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    limits: &Limits,
) -> Result<Vec<u8>, ApiError> {
    let read = body.try_fold(Vec::new(), |mut out, mut chunk| async move {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        Ok(out)
    });
    let timeout = limits.config.body_timeout;
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "could not read the body: {e}"
        ))),
        Err(_) => {
            count(&limits.counters.body_timeouts);
            Err(ApiError::new(
                ErrorKind::RequestTimeout,
                format!("the body did not arrive within {} s", timeout.as_secs_f32()),
            ))
        }
    }
}

fn parse_json_body<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.len() as u64 > BODY_LIMIT {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!("the request body is over {} KiB", BODY_LIMIT / 1024),
        ));
    }
    let is_json = content_type.is_some_and(|c| c.trim_start().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("the body is not valid UTF-8"));
    }
    // serde would also read a struct from an array of its fields; we answer objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice::<T>(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The logged-in operator, or 401.
pub fn operator(gw: Gateway) -> impl Filter<Extract = (Login,), Error = Rejection> + Clone {
    operator_token().and_then(move |token: Option<String>| {
        let gw = gw.clone();
        async move {
            let token = token.ok_or_else(|| reject(ApiError::unauthenticated()))?;
            match gw.find_login(&token).await.map_err(reject)? {
                Some(l) if l.who.kind == ParticipantKind::Operator => Ok(l),
                _ => Err(reject(ApiError::unauthenticated())),
            }
        }
    })
}

/// The operator's cookie token, if any (for logout).
pub fn operator_token() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::cookie::optional::<String>(OPERATOR_COOKIE)
}

/// The machine user's cookie token, if any; handlers check it with [`crate::auth::machine_user`].
pub fn machine_user_token() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone
{
    warp::cookie::optional::<String>(MACHINE_USER_COOKIE)
}

/// The `Last-Event-ID` header a reconnecting EventSource sends.
pub fn last_event_id() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("last-event-id")
}

/// Refuses a request whose `Host` is not `public_url`'s (when set): a page on another site that
/// rebinds its name to our address sends its own name (DNS rebinding).
pub fn host(
    public: Option<PublicOrigin>,
    limits: Arc<Limits>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("host")
        .and_then(move |host: Option<String>| {
            let public = public.clone();
            let limits = limits.clone();
            async move {
                match public {
                    Some(p) if !host.as_deref().is_some_and(|h| p.accepts_host(h)) => {
                        count(&limits.counters.hosts_refused);
                        Err(reject(ApiError::bad_request(
                            "the Host header does not name this server (http.public_url); \
                             use its public address",
                        )))
                    }
                    _ => Ok(()),
                }
            }
        })
        .untuple_one()
}

/// Rejects a state-changing request that a cross-site page could have made: it must carry
/// `X-Natter: 1` (which a cross-site form cannot set) and, when the browser sends `Origin`, our
/// origin: `public_url`'s when set, else the request's own host.
pub fn csrf(public: Option<PublicOrigin>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-natter")
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and_then(
            move |marker: Option<String>, origin: Option<String>, host: Option<String>| {
                let public = public.clone();
                async move {
                    check_csrf(
                        marker.as_deref(),
                        origin.as_deref(),
                        host.as_deref(),
                        public,
                    )
                    .map_err(reject)
                }
            },
        )
        .untuple_one()
}

fn check_csrf(
    marker: Option<&str>,
    origin: Option<&str>,
    host: Option<&str>,
    public: Option<PublicOrigin>,
) -> Result<(), ApiError> {
    if marker != Some("1") {
        return Err(ApiError::forbidden(
            "missing the X-Natter: 1 header (CSRF protection)",
        ));
    }
    let same = match (origin, host, public) {
        (None, _, _) => true,
        (Some(origin), _, Some(public)) => public.accepts_origin(origin),
        (Some(origin), Some(host), None) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        (Some(_), None, None) => true,
    };
    if !same {
        return Err(ApiError::forbidden("cross-origin request refused"));
    }
    Ok(())
}

/// Turns every rejection, ours or warp's, into a JSON error.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(api_error_of(&rejection).into_response())
}

fn api_error_of(rejection: &Rejection) -> ApiError {
    if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::not_found("no such page or endpoint")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(ErrorKind::TooLarge, "the request body is too large")
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "send the body as application/json",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(ErrorKind::MethodNotAllowed, "method not allowed here")
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request(format!("invalid query: {e}"))
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(e.to_string())
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(ErrorKind::TooLarge, "a Content-Length is required")
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::new(ErrorKind::Internal, "internal error")
    }
}

#[cfg(test)]
#[path = "filters/tests.rs"]
mod tests;
