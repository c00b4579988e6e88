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
    match Assets::get(name) {
        Some(content) => file_response(name, content),
        None => warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response(),
    }
}

/// `content` (the file `name`) as an HTTP response.
fn file_response(name: &str, content: rust_embed::EmbeddedFile) -> warp::reply::Response {
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

/// A UI file for `GET /static/{name}` (a plain 404 if missing), with an `ETag` (its content's
/// SHA-256): a browser keeps it and asks again with `If-None-Match` (`no-cache`), and gets
/// `304 Not Modified`, no body, while the file is the same. An operator opening chat windows
/// all day then fetches the window's modules once per build of the gateway, not per window.
pub fn asset(name: &str, if_none_match: Option<&str>) -> warp::reply::Response {
    let Some(content) = Assets::get(name) else {
        return file(name);
    };
    let etag = format!("\"{}\"", hex::encode(&content.metadata.sha256_hash()[..16]));
    let mut resp = if if_none_match.is_some_and(|v| matches_etag(v, &etag)) {
        let mut r = warp::reply::Response::default();
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        file_response(name, content)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Whether an `If-None-Match` value names `etag` (or is `*`): a list of entity tags, weak ones
/// compared by their opaque part (RFC 9110, 13.1.2).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether `name` is a servable UI asset (no paths, no hidden files).
pub fn exists(name: &str) -> bool {
    !name.starts_with('.') && !name.contains('/') && Assets::get(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_is_a_list_of_entity_tags() {
        let tag = "\"abc\"";
        for yes in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            " \"x\" ,W/\"abc\" ",
            "*",
        ] {
            assert!(matches_etag(yes, tag), "{yes}");
        }
        for no in ["", "abc", "\"abcd\"", "\"ab\"", "\"x\", \"y\"", "W/abc"] {
            assert!(!matches_etag(no, tag), "{no}");
        }
    }

    #[test]
    fn an_asset_is_not_sent_again_while_it_is_the_same() {
        let first = asset("chat.js", None);
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        assert!(
            etag.len() == 34 && etag.starts_with('"') && etag.ends_with('"'),
            "{etag}"
        );
        let again = asset("chat.js", Some(&etag));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
        let other = asset("chat.js", Some("\"0\""));
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(
            asset("nope.js", Some(&etag)).status(),
            StatusCode::NOT_FOUND
        );
    }

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
