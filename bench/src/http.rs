//! A deliberately small HTTP/1.1 client over a raw `TcpStream`: keep-alive requests with
//! `Content-Length` or chunked answers, and a Server-Sent-Events reader. Cheap in memory and CPU
//! so that the clients disturb the measured node as little as possible (no reqwest).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr`, from `source` when given (spreads clients over loopback addresses so
/// ephemeral ports do not run out).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An answer's head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A buffered reader over a stream that can parse heads, bodies and chunks.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    pos: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(1024),
            pos: 0,
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(())
    }

    /// Reads up to and including the next CRLF; returns the line without it.
    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            self.fill().await?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// Reads a response head.
    pub async fn head(&mut self) -> io::Result<Head> {
        let status_line = self.line().await?;
        let status_line = String::from_utf8_lossy(&status_line).to_string();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).to_string();
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Head { status, headers })
    }

    /// Reads one chunk of a chunked body; empty at the end of the body.
    pub async fn chunk(&mut self) -> io::Result<Vec<u8>> {
        let size_line = self.line().await?;
        let size_text = String::from_utf8_lossy(&size_line);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        let data = self.exact(size).await?;
        let _ = self.line().await?; // CRLF after the data (or trailers' end)
        Ok(data)
    }

    /// Reads a whole (non-streaming) body.
    pub async fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.chunked() {
            let mut out = Vec::new();
            loop {
                let c = self.chunk().await?;
                if c.is_empty() {
                    return Ok(out);
                }
                out.extend_from_slice(&c);
            }
        }
        let n = head.content_length().unwrap_or(0);
        self.exact(n).await
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive client for one gateway, acting as one browser (cookie, Origin, CSRF header).
pub struct Client {
    pub addr: SocketAddr,
    pub cookie: String,
    conn: Option<Conn>,
}

/// A response.
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(addr: SocketAddr, cookie: &str) -> Client {
        Client {
            addr,
            cookie: cookie.to_string(),
            conn: None,
        }
    }

    /// Sends one request (reconnecting once if the kept-alive connection was closed).
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\norigin: http://{addr}\r\nx-natter: 1\r\n",
            addr = self.addr
        );
        if !self.cookie.is_empty() {
            req.push_str(&format!("cookie: {}\r\n", self.cookie));
        }
        if method == "POST" {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                self.conn = Some(Conn::new(connect(self.addr, None).await?));
            }
            let conn = self.conn.as_mut().expect("connected");
            let result = async {
                conn.stream.write_all(&bytes).await?;
                let head = conn.head().await?;
                let body = conn.body(&head).await?;
                Ok::<_, io::Error>((head, body))
            }
            .await;
            match result {
                Ok((head, body)) => {
                    if head
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                    {
                        self.conn = None;
                    }
                    return Ok(Response {
                        status: head.status,
                        head,
                        body,
                    });
                }
                Err(e) => {
                    self.conn = None;
                    if !(reused && attempt == 0) {
                        return Err(e);
                    }
                }
            }
        }
        Err(io::Error::other("unreachable"))
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        value: &serde_json::Value,
    ) -> io::Result<Response> {
        self.request("POST", path, value.to_string().as_bytes())
            .await
    }
}

/// Logs in as an operator and returns the cookie (`natter_op=…`).
pub async fn login(addr: SocketAddr, username: &str, password: &str) -> io::Result<String> {
    let mut c = Client::new(addr, "");
    let r = c
        .post_json(
            "/api/login",
            &serde_json::json!({"username": username, "password": password}),
        )
        .await?;
    if r.status != 200 {
        return Err(bad(format!(
            "login as {username}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )));
    }
    let set = r
        .head
        .header("set-cookie")
        .ok_or_else(|| bad("login answer without a cookie"))?;
    Ok(set.split(';').next().unwrap_or("").to_string())
}

/// One SSE event.
#[derive(Debug, Default)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// An open SSE stream, parsed from the chunked body.
pub struct Sse {
    conn: Conn,
    /// Decoded body bytes not yet parsed into events.
    pending: Vec<u8>,
    pos: usize,
    /// Body bytes received so far (without the chunked framing).
    received: usize,
}

/// Opens `GET path` as an event stream; fails unless the answer is 200.
pub async fn open_sse(
    addr: SocketAddr,
    source: Option<IpAddr>,
    cookie: &str,
    path: &str,
) -> io::Result<Sse> {
    let stream = connect(addr, source).await?;
    let mut conn = Conn::new(stream);
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\ncookie: {cookie}\r\n\r\n"
    );
    conn.stream.write_all(req.as_bytes()).await?;
    let head = conn.head().await?;
    if head.status != 200 {
        let body = conn.body(&head).await.unwrap_or_default();
        return Err(bad(format!(
            "SSE {path}: {} {}",
            head.status,
            String::from_utf8_lossy(&body)
        )));
    }
    if !head.chunked() {
        return Err(bad("SSE answer is not chunked"));
    }
    Ok(Sse {
        conn,
        pending: Vec::new(),
        pos: 0,
        received: 0,
    })
}

impl Sse {
    /// The next event (comments skipped); `Err` when the stream ends.
    pub async fn next(&mut self) -> io::Result<SseEvent> {
        let mut event = SseEvent::default();
        let mut has_data = false;
        loop {
            // Parse complete lines already decoded.
            while let Some(i) = self.pending[self.pos..].iter().position(|b| *b == b'\n') {
                let line = &self.pending[self.pos..self.pos + i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.pos += i + 1;
                if line.is_empty() {
                    if has_data || !event.event.is_empty() {
                        return Ok(event);
                    }
                    continue;
                }
                if line[0] == b':' {
                    continue;
                }
                let (field, value) = match find(line, b":") {
                    Some(j) => {
                        let v = &line[j + 1..];
                        (&line[..j], v.strip_prefix(b" ").unwrap_or(v))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(&String::from_utf8_lossy(value));
                        has_data = true;
                    }
                    b"event" => event.event = String::from_utf8_lossy(value).to_string(),
                    _ => {}
                }
            }
            if self.pos > 0 {
                self.pending.drain(..self.pos);
                self.pos = 0;
            }
            let chunk = self.conn.chunk().await?;
            if chunk.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended"));
            }
            self.received += chunk.len();
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// Body bytes received so far (events, comments and keep-alives; no chunk framing).
    pub fn received(&self) -> usize {
        self.received
    }

    /// Gives the connection back (for clients that only hold it open).
    pub fn into_stream(self) -> TcpStream {
        self.conn.stream
    }

    /// The next event, or `None` after `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<io::Result<SseEvent>> {
        tokio::time::timeout(limit, self.next()).await.ok()
    }
}
