//! The one error type of the HTTP API: a status and a JSON body `{error, message}`. Rejections,
//! ours or warp's, become one in `api::filters::recover`.

use natter_actors::protocol::{SessionError, SessionErrorKind};
use serde::Serialize;
use warp::http::StatusCode;
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
    Conflict,
    TooLarge,
    UnsupportedMediaType,
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
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
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
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            error: kind,
            message: message.into(),
            session: None,
        }
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
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let status = self.error.status();
        warp::reply::with_status(warp::reply::json(&self), status).into_response()
    }
}
