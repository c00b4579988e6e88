//! The one error type of the HTTP API: a status and a JSON body `{error, message}`. Rejections,
//! ours or warp's, become one in `api::filters::recover`.

use natter_actors::protocol::{SessionError, SessionErrorKind};
use std::time::Duration;

use serde::Serialize;
use warp::http::StatusCode;
use warp::http::header::{self, HeaderValue};
use warp::reply::Reply;

/// What kind of failure an API error is; each has one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: becomes `{"error": kind, "message": message}` with the kind's status.
#[derive(Clone, Debug, Serialize)]
pub struct ApiError {
    pub error: ErrorKind,
    pub message: String,
    /// For a conflict with a session in progress: which one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When trying again may succeed: sent as `Retry-After` (whole seconds, at least 1).
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            error: kind,
            message: message.into(),
            session: None,
            retry_after: None,
        }
    }
    /// The same error, telling the client when to try again.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    pub fn kind(&self) -> ErrorKind {
        self.error
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, m)
    }
    pub fn unauthenticated() -> Self {
        Self::new(ErrorKind::Unauthenticated, "please log in")
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, m)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.error, self.message)
    }
}

impl warp::reject::Reject for ApiError {}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let kind = match e.kind {
            SessionErrorKind::NotFound => ErrorKind::NotFound,
            SessionErrorKind::NotMember => ErrorKind::Forbidden,
            SessionErrorKind::Ended | SessionErrorKind::Conflict => ErrorKind::Conflict,
            SessionErrorKind::TooLarge => ErrorKind::TooLarge,
            SessionErrorKind::Invalid => ErrorKind::BadRequest,
            SessionErrorKind::BadToken => ErrorKind::Unauthenticated,
            SessionErrorKind::Unavailable => ErrorKind::Unavailable,
        };
        ApiError {
            error: kind,
            message: e.message,
            session: e.session,
            retry_after: None,
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let status = self.error.status();
        let mut r = warp::reply::with_status(warp::reply::json(&self), status).into_response();
        // For the metrics: the routes count answered errors by kind.
        r.extensions_mut().insert(self.error);
        if let Some(wait) = self.retry_after {
            // Rounded up: a client that waits the whole seconds is never early.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}
