//! An HTTP connection as a client on the wire sees it (docs/api.md, "Event stream (SSE)"): an
//! event stream asked for as a connection's first request is written by the gateway's own writer,
//! one asked for after other requests on a keep-alive connection by hyper, and both carry the same
//! events, each once, in order; a refused stream is answered whole; any other first request —
//! pipelined, or with its body sent later — is answered as before.

use std::time::{Duration, Instant};

use natter_system_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off a raw connection.
struct Answer {
    head: String,
    /// The body as far as it has come; de-chunked when the answer is chunked.
    body: String,
}

impl Answer {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A raw HTTP/1.1 client connection; it keeps what it has read past the answers taken so far.
struct Wire {
    stream: TcpStream,
    addr: String,
    read: Vec<u8>,
}

impl Wire {
    async fn connect(node: &TestNode) -> Wire {
        let addr = node.base.trim_start_matches("http://").to_string();
        Wire {
            stream: TcpStream::connect(&addr).await.expect("connect"),
            addr,
            read: Vec::new(),
        }
    }

    fn get(&self, target: &str, cookie: Option<(&str, &str)>) -> String {
        let cookie = cookie.map_or(String::new(), |(n, v)| format!("cookie: {n}={v}\r\n"));
        format!(
            "GET {target} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n{cookie}\r\n",
            self.addr
        )
    }

    async fn write(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    /// Reads more; false when the server has closed the connection.
    async fn read_more(&mut self, deadline: Instant) -> bool {
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.read.extend_from_slice(&buf[..n]);
                true
            }
            Err(_) => panic!(
                "nothing more within {WAIT:?}; read so far: {:?}",
                String::from_utf8_lossy(&self.read)
            ),
        }
    }

    /// The next answer's head (the bytes after it stay for the body).
    async fn head(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = find(&self.read, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.read[..end]).to_string();
                self.read.drain(..end + 4);
                return head;
            }
            assert!(self.read_more(deadline).await, "closed before a head");
        }
    }

    /// The next whole answer with a `content-length`.
    async fn whole_answer(&mut self) -> Answer {
        let head = self.head().await;
        let mut answer = Answer {
            head,
            body: String::new(),
        };
        let len: usize = answer
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a content-length");
        let deadline = Instant::now() + WAIT;
        while self.read.len() < len {
            assert!(self.read_more(deadline).await, "closed within the body");
        }
        answer.body = String::from_utf8_lossy(&self.read[..len]).to_string();
        self.read.drain(..len);
        answer
    }

    /// Reads a chunked body until it holds `until` (or the body ends, when `until` is `None`).
    async fn chunked_until(&mut self, head: String, until: Option<&str>) -> Answer {
        let deadline = Instant::now() + WAIT;
        let mut body = String::new();
        loop {
            // Take every whole chunk read so far.
            while let Some(line_end) = find(&self.read, b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.read[..line_end]).expect("a chunk size"),
                    16,
                )
                .expect("a hex chunk size");
                let end = line_end + 2 + size + 2;
                if self.read.len() < end {
                    break;
                }
                body.push_str(&String::from_utf8_lossy(
                    &self.read[line_end + 2..line_end + 2 + size],
                ));
                assert_eq!(&self.read[end - 2..end], b"\r\n", "a chunk's end");
                self.read.drain(..end);
                if size == 0 {
                    return Answer { head, body };
                }
            }
            if until.is_some_and(|u| body.contains(u)) {
                return Answer { head, body };
            }
            assert!(
                self.read_more(deadline).await,
                "closed within a chunked body: {body:?}"
            );
        }
    }

    /// Whether the server closes the connection within [`WAIT`] (reading what comes first).
    async fn closed(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while self.read_more(deadline).await {}
        true
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The chat messages' texts in an event-stream body, in the order they came.
fn message_texts(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "message")
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_new_connection_and_one_after_other_requests_carry_the_same_events() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let (session, carol) = system.open_chat().await;
    let alice = system.operator("alice");
    let op_cookie = alice.cookie("/", "natter_op").expect("a login cookie");
    let mu_cookie = carol
        .cookie(&format!("/m/{session}/"), "natter_mu")
        .expect("a machine user's cookie");

    // The operator's stream as the first request of a connection: the gateway's own writer.
    let mut first = Wire::connect(&system.node).await;
    let request = first.get(
        &format!("/api/events?sessions={session}"),
        Some(("natter_op", &op_cookie)),
    );
    first.write(&request).await;
    let first_head = first.head().await;

    // The same stream after a health check on one keep-alive connection: hyper's.
    let mut reused = Wire::connect(&system.node).await;
    let health = reused.get("/healthz", None);
    reused.write(&health).await;
    assert_eq!(reused.whole_answer().await.status(), 200);
    reused.write(&request).await;
    let reused_head = reused.head().await;

    // The machine user's stream on a new connection.
    let mut user = Wire::connect(&system.node).await;
    let request = user.get(
        &format!("/m/{session}/api/events"),
        Some(("natter_mu", &mu_cookie)),
    );
    user.write(&request).await;
    let user_head = user.head().await;

    let texts: Vec<String> = (1..=5).map(|i| format!("over the wire {i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        let (status, answer) = alice.send(&session, &format!("w-{i}"), text).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let last = texts.last().map(String::as_str);
    for (name, wire, head) in [
        ("new connection", &mut first, first_head),
        ("after other requests", &mut reused, reused_head),
        ("machine user", &mut user, user_head),
    ] {
        let answer = wire.chunked_until(head, last).await;
        assert_eq!(answer.status(), 200, "{name}: {}", answer.head);
        assert_eq!(
            answer.header("content-type").as_deref(),
            Some("text/event-stream"),
            "{name}"
        );
        assert_eq!(
            answer.header("transfer-encoding").as_deref(),
            Some("chunked"),
            "{name}"
        );
        assert!(
            answer.body.starts_with("retry:1000\n\n"),
            "{name}: {}",
            answer.body
        );
        assert!(answer.body.contains("event:hello"), "{name}");
        assert_eq!(
            message_texts(&answer.body),
            texts,
            "{name}: each once, in order"
        );
        // A stream that opened its connection keeps it for itself; the keep-alive one stays
        // open for more requests after its stream.
        let closes = answer.header("connection").as_deref() == Some("close");
        assert_eq!(
            closes,
            name != "after other requests",
            "{name}: {}",
            answer.head
        );
    }
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_on_a_new_connection_is_answered_whole_and_the_connection_closed() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let (session, _carol) = system.open_chat().await;
    let cookie = system
        .operator("alice")
        .cookie("/", "natter_op")
        .expect("a login cookie");

    // No login.
    let mut wire = Wire::connect(&system.node).await;
    let request = wire.get(&format!("/api/events?sessions={session}"), None);
    wire.write(&request).await;
    let answer = wire.whole_answer().await;
    assert_eq!(answer.status(), 401, "{}", answer.head);
    let error: Value = serde_json::from_str(&answer.body).expect("a JSON error");
    assert_eq!(error["error"], "unauthenticated", "{error}");
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    assert!(wire.closed().await);

    // A bad cursor, logged in.
    let mut wire = Wire::connect(&system.node).await;
    let request = wire.get(
        &format!("/api/events?sessions={session}:x"),
        Some(("natter_op", &cookie)),
    );
    wire.write(&request).await;
    let answer = wire.whole_answer().await;
    assert_eq!(answer.status(), 400, "{}", answer.head);
    assert!(answer.body.contains("bad cursor"), "{}", answer.body);
    assert!(wire.closed().await);

    // Nothing was lost on the way: the operator's stream still opens and delivers.
    let alice = system.operator("alice");
    let mut stream = alice.session_events(&session).await;
    let (status, _) = alice.send(&session, "after-refusals", "still here").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(texts(&stream.read_messages(1).await), ["still here"]);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_first_requests_are_answered_pipelined_or_with_a_late_body() {
    let system = Scenario::new().operator("alice").start().await;

    // Two requests in one write: two answers, in order, on the one connection.
    let mut wire = Wire::connect(&system.node).await;
    let both = format!(
        "{}{}",
        wire.get("/healthz", None),
        wire.get("/nowhere", None)
    );
    wire.write(&both).await;
    assert_eq!(wire.whole_answer().await.status(), 200);
    assert_eq!(wire.whole_answer().await.status(), 404);

    // A login whose body comes after its head: the head is read first, the body by hyper.
    let mut wire = Wire::connect(&system.node).await;
    let body = r#"{"username":"alice","password":"wrong"}"#;
    let head = format!(
        "POST /api/login HTTP/1.1\r\nhost: {}\r\nx-natter: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        wire.addr,
        body.len()
    );
    wire.write(&head).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wire.write(body).await;
    let answer = wire.whole_answer().await;
    assert_eq!(answer.status(), 401, "{} {}", answer.head, answer.body);
    system.shutdown().await;
}
