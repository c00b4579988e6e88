//! The web UI: static files compiled into the binary, served with no build step.

use rust_embed::RustEmbed;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode, header};

#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// Content-Security-Policy for every page: our own scripts only, no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

/// A UI file as an HTTP response (a plain 404 if missing).
pub fn file(name: &str) -> warp::reply::Response {
    let Some(content) = Assets::get(name) else {
        return warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response();
    };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let mut resp = content.data.into_owned().into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Whether `name` is a servable UI asset (no paths, no hidden files).
pub fn exists(name: &str) -> bool {
    !name.starts_with('.') && !name.contains('/') && Assets::get(name).is_some()
}
