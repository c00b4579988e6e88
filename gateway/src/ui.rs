//! The web UI: static files compiled into the binary, served with no build step.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};
use warp::Reply;
use warp::http::{HeaderValue, StatusCode, header};

#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// Content-Security-Policy for every file: our own scripts only, no framing. An HTML page's own
/// inline scripts are allowed by their hashes (`page_csp`), no other inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

/// `CSP` for an HTML page: `script-src` also allows each of the page's inline scripts
/// (`<script>…</script>` with no attributes) by the SHA-256 of its text, so the chat window's
/// boot script runs while the page is parsed instead of one round trip later.
fn page_csp(html: &[u8]) -> String {
    const OPEN: &[u8] = b"<script>";
    const CLOSE: &[u8] = b"</script>";
    let mut hashes = String::new();
    let mut rest = html;
    while let Some(start) = find(rest, OPEN) {
        rest = &rest[start + OPEN.len()..];
        let Some(end) = find(rest, CLOSE) else { break };
        let digest = Sha256::digest(&rest[..end]);
        hashes.push_str(&format!(" 'sha256-{}'", BASE64.encode(digest)));
        rest = &rest[end + CLOSE.len()..];
    }
    CSP.replacen(
        "script-src 'self'",
        &format!("script-src 'self'{hashes}"),
        1,
    )
}

/// [`page_csp`] made once per page content (keyed by the file's SHA-256, so a page read from
/// disk in a debug build gets a new one when it changes).
fn page_csp_cached(content_hash: [u8; 32], html: &[u8]) -> HeaderValue {
    static MADE: LazyLock<Mutex<HashMap<[u8; 32], HeaderValue>>> = LazyLock::new(Default::default);
    MADE.lock()
        .entry(content_hash)
        .or_insert_with(|| {
            HeaderValue::from_str(&page_csp(html)).unwrap_or(HeaderValue::from_static(CSP))
        })
        .clone()
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A UI file as an HTTP response (a plain 404 if missing).
pub fn file(name: &str) -> warp::reply::Response {
    let Some(content) = Assets::get(name) else {
        return warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response();
    };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let csp = if name.ends_with(".html") {
        page_csp_cached(content.metadata.sha256_hash(), &content.data)
    } else {
        HeaderValue::from_static(CSP)
    };
    // Compiled in (release), a file is served from the binary without a copy.
    let mut resp = match content.data {
        Cow::Borrowed(data) => data.into_response(),
        Cow::Owned(data) => data.into_response(),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_csp_allows_exactly_its_inline_scripts() {
        let html = b"<head><script>boot()</script><script src=\"/static/a.js\"></script>\
                     <script>two()</script></head>";
        let csp = page_csp(html);
        let hash = |s: &str| format!("'sha256-{}'", BASE64.encode(Sha256::digest(s.as_bytes())));
        assert!(
            csp.contains(&format!(
                "script-src 'self' {} {};",
                hash("boot()"),
                hash("two()")
            )),
            "{csp}"
        );
        assert_eq!(page_csp(b"<p>no scripts</p>"), CSP);
    }
}
