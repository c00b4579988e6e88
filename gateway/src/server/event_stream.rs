//! A connection's first request, read by the accept loop itself, and event streams written
//! without hyper.
//!
//! hyper's HTTP/1 connection keeps a read buffer of at least 8 KiB and a write buffer for as long
//! as the connection lives; an idle event stream uses neither, and with many thousands of them
//! those buffers are most of the gateway's memory. So the accept loop reads the head of a
//! connection's first request: an event stream (`GET /api/events`, `/api/machines/events`,
//! `/m/{id}/api/events`, without a body) is answered through the same routes and written here,
//! chunked, holding only its stream between events; every other request goes to hyper, which
//! reads the bytes already read first ([`Prefixed`]). An event stream asked for on a connection
//! that has already carried other requests stays with hyper, as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use warp::http::{self, header};

use super::{Routes, answer};
use crate::limits::ClientAddr;

/// Bytes of a first request's head read here at most; a longer head goes to hyper, which
/// applies its own limits (and answers 431).
const HEAD_LIMIT: usize = 16 * 1024;

/// Headers a first request may have to be served here; more go to hyper.
const MAX_HEADERS: usize = 64;

/// What the first read of a connection found.
pub(super) enum FirstRequest {
    /// A GET of an event stream, without a body: served by [`serve`].
    EventStream(Box<http::Request<Empty<Bytes>>>),
    /// Any other request (or a head that is malformed or too long): the bytes read so far,
    /// for hyper to read first.
    Other(Bytes),
    /// The client closed the connection before a whole head came.
    Gone,
    /// No whole head within the header timeout.
    TimedOut,
}

/// Reads the head of a connection's first request, within `timeout`.
pub(super) async fn read_first(stream: &mut TcpStream, timeout: Duration) -> FirstRequest {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut read = BytesMut::with_capacity(1024);
    loop {
        if read.len() == read.capacity() {
            read.reserve(read.len());
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut read)).await {
            Err(_) => return FirstRequest::TimedOut,
            Ok(Ok(0) | Err(_)) => return FirstRequest::Gone,
            Ok(Ok(_)) => {}
        }
        match parse_head(&read) {
            Head::Partial if read.len() < HEAD_LIMIT => continue,
            Head::EventStream(request) => return FirstRequest::EventStream(request),
            Head::Partial | Head::Other => return FirstRequest::Other(read.freeze()),
        }
    }
}

/// A request head as far as it has come.
enum Head {
    Partial,
    EventStream(Box<http::Request<Empty<Bytes>>>),
    Other,
}

/// Parses `bytes` as a request head (kept out of [`read_first`]'s future: the header array is
/// large and needed only here).
fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(_)) => {
            event_stream_request(&parsed).map_or(Head::Other, Head::EventStream)
        }
        Err(_) => Head::Other,
    }
}

/// The request, when it is an HTTP/1.1 GET of an event stream without a body.
fn event_stream_request(
    parsed: &httparse::Request<'_, '_>,
) -> Option<Box<http::Request<Empty<Bytes>>>> {
    let (Some("GET"), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return None;
    };
    if !is_event_stream_path(target.split('?').next().unwrap_or_default()) {
        return None;
    }
    let mut request = http::Request::builder()
        .method(http::Method::GET)
        .uri(target)
        .version(http::Version::HTTP_11);
    for h in parsed.headers.iter() {
        let body_follows = (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding");
        if body_follows {
            return None;
        }
        request = request.header(h.name, h.value);
    }
    request.body(Empty::new()).ok().map(Box::new)
}

/// Whether `path` is one of the routes that answer with an event stream.
fn is_event_stream_path(path: &str) -> bool {
    match path {
        "/api/events" | "/api/machines/events" => true,
        _ => path
            .strip_prefix("/m/")
            .and_then(|rest| rest.strip_suffix("/api/events"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/')),
    }
}

/// Answers an event stream request through `routes` and writes the answer on `stream`: the
/// event stream chunked, until it ends or the client goes away; any other answer (a refusal)
/// whole. The connection is closed after either (`connection: close`).
pub(super) async fn serve(
    mut stream: TcpStream,
    request: Box<http::Request<Empty<Bytes>>>,
    routes: Routes,
    client: ClientAddr,
) {
    let (parts, body) = answer(routes, client, *request).await.into_parts();
    let _ = match body {
        Either::Right(events) => write_event_stream(&mut stream, &parts, events).await,
        Either::Left(body) => match body.collect().await {
            Ok(whole) => write_whole(&mut stream, &parts, whole.to_bytes()).await,
            Err(_) => Ok(()),
        },
    };
}

/// Writes the head and then every frame of `events` as a chunk, until the stream ends (the
/// last chunk is written) or the client closes its side (nothing more is written).
async fn write_event_stream(
    stream: &mut TcpStream,
    parts: &http::response::Parts,
    events: crate::sse::SseBody,
) -> io::Result<()> {
    stream.write_all(&response_head(parts, None)).await?;
    let (mut from_client, mut to_client) = stream.split();
    tokio::pin!(events);
    // A client sends nothing after its request; a read that ends says it has gone.
    let mut ignored = [0u8; 64];
    loop {
        tokio::select! {
            frame = events.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        to_client.write_all(&chunk(&data)).await?;
                    }
                }
                None | Some(Err(_)) => {
                    to_client.write_all(b"0\r\n\r\n").await?;
                    return to_client.shutdown().await;
                }
            },
            read = from_client.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
}

/// Writes a whole answer with its length, then closes the connection.
async fn write_whole(
    stream: &mut TcpStream,
    parts: &http::response::Parts,
    body: Bytes,
) -> io::Result<()> {
    let mut out = response_head(parts, Some(body.len()));
    out.extend_from_slice(&body);
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// The status line and headers of an answer: the routes' headers, then the framing (a length,
/// or chunked when `body_len` is `None`), `connection: close` and the date.
fn response_head(parts: &http::response::Parts, body_len: Option<usize>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::DATE
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match body_len {
        Some(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"connection: close\r\ndate: ");
    head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// `data` as one chunk of a chunked body.
fn chunk(data: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(data.len() + 12);
    out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
    out
}

/// A connection whose first bytes were already read: they are read again first, then the
/// socket. What hyper serves when the first request is not an event stream.
pub(super) struct Prefixed {
    read: Bytes,
    stream: TcpStream,
}

impl Prefixed {
    pub(super) fn new(read: Bytes, stream: TcpStream) -> Self {
        Prefixed { read, stream }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        if this.read.is_empty() {
            // Frees the first read's buffer rather than keeping it for the connection's life.
            this.read = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes())
    }

    #[test]
    fn event_stream_gets_are_served_here_and_everything_else_goes_to_hyper() {
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        for target in [
            "/api/events?sessions=A",
            "/api/machines/events",
            "/m/01HX/api/events?since=3",
        ] {
            assert!(
                matches!(head(&get(target)), Head::EventStream(_)),
                "{target}"
            );
        }
        for target in [
            "/api/sessions/A/events?last=200",
            "/api/me",
            "/m//api/events",
            "/m/a/b/api/events",
            "/api/events/x",
        ] {
            assert!(matches!(head(&get(target)), Head::Other), "{target}");
        }
        for other in [
            "POST /api/events HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/events HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET /api/events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /api/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/events HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(matches!(head(other), Head::Other), "{other:?}");
        }
        assert!(matches!(
            head("GET /api/events HTTP/1.1\r\nHost:"),
            Head::Partial
        ));
    }

    #[test]
    fn the_request_keeps_its_target_and_headers() {
        let Head::EventStream(r) = head(
            "GET /api/events?sessions=A:3 HTTP/1.1\r\nCookie: s=1\r\nLast-Event-ID: 4\r\n\r\n",
        ) else {
            panic!("not an event stream");
        };
        assert_eq!(r.uri().path(), "/api/events");
        assert_eq!(r.uri().query(), Some("sessions=A:3"));
        assert_eq!(r.headers()["cookie"], "s=1");
        assert_eq!(r.headers()["last-event-id"], "4");
    }

    #[test]
    fn a_chunk_is_its_length_in_hex_then_the_data() {
        assert_eq!(&chunk(b"data:x\n\n")[..], b"8\r\ndata:x\n\n\r\n");
        assert_eq!(&chunk(&[b'a'; 26])[..4], b"1a\r\n");
    }
}
