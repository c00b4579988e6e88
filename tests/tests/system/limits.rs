//! Limits on every door (docs/api.md, "Limits"): login throttling, password hashes at once,
//! header timeout, connections per address, event streams per login, the Host check, JSON
//! objects only and the reconnect hint. Each refusal is visible to the client and counted.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use natter_system_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// One `POST /api/login` from `browser`; the status, `Retry-After` and body.
async fn log_in(browser: &Browser, username: &str, password: &str) -> (StatusCode, Option<u64>) {
    let r = browser
        .client
        .post(format!("{}/api/login", browser.base))
        .header("x-natter", "1")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("POST /api/login");
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(body["error"], "rate_limited", "{body}");
    }
    (status, retry_after)
}

/// Bad logins from `browser` (one username each, from `names`) until one is refused; returns
/// how many were answered 401 first and the refusal's `Retry-After`.
async fn fail_until_throttled(
    browser: &Browser,
    names: impl Fn(usize) -> String,
) -> (usize, Option<u64>) {
    for i in 0..100 {
        match log_in(browser, &names(i), "wrong").await {
            (StatusCode::UNAUTHORIZED, _) => {}
            (StatusCode::TOO_MANY_REQUESTS, retry_after) => return (i, retry_after),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    panic!("100 bad logins and no 429");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_are_throttled_per_address_and_per_username() {
    // Small quotas refill slowly (one attempt every 12 and 20 s): a slow hash in a debug build
    // may let one more through, never many.
    let system = Scenario::new()
        .config(|c| {
            c.limits.logins_per_address = 5;
            c.limits.logins_per_username = 3;
        })
        .operator("alice")
        .start()
        .await;
    let node = &system.node;
    let password = operator_password("alice");

    // One address trying many names: its quota, the fixture's login included.
    let attacker = Browser::from_source(&node.base, loopback(1));
    let (failed, retry_after) = fail_until_throttled(&attacker, |i| format!("guess{i}")).await;
    assert!((4..=5).contains(&failed), "{failed}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    // Throttled, even with the right password: the address is what is over its quota.
    assert_eq!(
        log_in(&attacker, "alice", &password).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Another address is not slowed.
    let colleague = Browser::from_source(&node.base, loopback(2));
    assert_eq!(
        log_in(&colleague, "alice", &password).await.0,
        StatusCode::OK
    );

    // One name tried from many addresses: its quota (two logins so far).
    let mut failed = 0;
    for last in 10..40 {
        let from = Browser::from_source(&node.base, loopback(last));
        match log_in(&from, "alice", "wrong").await.0 {
            StatusCode::UNAUTHORIZED => failed += 1,
            StatusCode::TOO_MANY_REQUESTS => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert!((1..=2).contains(&failed), "{failed}");
    let stats = node.node.gateway_limits.stats();
    assert_eq!(stats.logins_throttled, 3, "{stats:?}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bogus_logins_never_run_more_hashes_than_the_cap() {
    let system = Scenario::new()
        .config(|c| {
            c.limits.concurrent_hashes = 2;
            c.limits.hash_wait = Duration::from_secs(300);
            c.limits.logins_per_address = 0;
            c.limits.logins_per_username = 0;
        })
        .start()
        .await;
    let browser = Browser::new(&system.node.base);
    let logins = (0..48).map(|i| {
        let browser = browser.clone();
        async move { log_in(&browser, &format!("nobody{i}"), "guess").await.0 }
    });
    for status in futures::future::join_all(logins).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let stats = system.node.node.gateway_limits.stats();
    assert_eq!(stats.hashes_peak, 2, "{stats:?}");
    assert_eq!(stats.hashes_running, 0, "{stats:?}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_cannot_hash_in_time_is_answered_503_with_retry_after() {
    let system = Scenario::new()
        .config(|c| {
            c.limits.concurrent_hashes = 1;
            c.limits.hash_wait = Duration::from_millis(1);
            c.limits.logins_per_address = 0;
        })
        .start()
        .await;
    let browser = Browser::new(&system.node.base);
    let logins = (0..8).map(|i| {
        let browser = browser.clone();
        async move { log_in(&browser, &format!("nobody{i}"), "guess").await }
    });
    let answers = futures::future::join_all(logins).await;
    assert!(
        answers.contains(&(StatusCode::SERVICE_UNAVAILABLE, Some(1))),
        "{answers:?}"
    );
    assert!(system.node.node.gateway_limits.stats().hashing_busy > 0);
    system.shutdown().await;
}

/// Reads until the server closes the connection; panics if it stays open past `limit`.
async fn wait_for_close(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue, // an answer (e.g. 408) before the close
            Err(_) => panic!("the connection is still open after {limit:?}"),
        }
    }
}

fn addr_of(node: &TestNode) -> String {
    node.base.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_closed_but_streams_are_not() {
    let mut system = Scenario::new()
        .config(|c| c.limits.header_timeout = Duration::from_secs(1))
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let addr = addr_of(&system.node);
    let mut half_sent = TcpStream::connect(&addr).await.unwrap();
    half_sent
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    wait_for_close(&mut half_sent, WAIT).await;
    wait_for_close(&mut idle, WAIT).await;
    assert!(system.node.node.gateway_limits.stats().connection_timeouts >= 2);

    // A chat stream idles far longer than the header timeout and still delivers.
    let (session, _carol) = system.open_chat().await;
    let alice = system.operator("alice");
    let mut stream = alice.session_events(&session).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = alice.send(&session, "late-1", "still there?").await;
    assert_eq!(status, StatusCode::CREATED);
    let got = stream.read_messages(1).await;
    assert_eq!(texts(&got), ["still there?"]);
    system.stop_agent("pc1.sales.acme").await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed_at_accept() {
    let system = Scenario::new()
        .config(|c| c.limits.connections_per_address = 3)
        .start()
        .await;
    let addr = addr_of(&system.node);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The kernel completes the handshake; the gateway closes it without reading.
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    wait_for_close(&mut extra, WAIT).await;
    let limits = &system.node.node.gateway_limits;
    assert_eq!(limits.stats().connections_refused_per_address, 1);

    // Another address is served meanwhile; a closed connection frees its slot.
    let other = Browser::from_source(&system.node.base, loopback(2));
    assert_eq!(other.get("/healthz").await.0, StatusCode::OK);
    drop(held.pop());
    eventually(WAIT, || async {
        Browser::new(&system.node.base)
            .client
            .get(format!("{}/healthz", system.node.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_per_login_are_capped_and_a_closed_one_frees_its_slot() {
    let system = Scenario::new()
        .config(|c| c.limits.streams_per_operator_login = 2)
        .operator("alice")
        .operator("bob")
        .start()
        .await;
    let alice = system.operator("alice");
    let mut first = alice.events("/api/machines/events", None).await;
    let _second = alice.events("/api/machines/events", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let third = alice.events("/api/machines/events", None).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    let body: Value = serde_json::from_str(&third.error_body).expect("a JSON error");
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Another login has its own streams.
    let bob = system.operator("bob");
    assert_eq!(
        bob.events("/api/machines/events", None).await.status,
        StatusCode::OK
    );

    first.close();
    let alice = &alice;
    eventually(WAIT, || async move {
        alice.events("/api/machines/events", None).await.status == StatusCode::OK
    })
    .await;
    assert!(system.node.node.gateway_limits.stats().streams_refused >= 1);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_an_array_body_stores_nothing_and_streams_say_retry() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let base = &system.node.base;

    // DNS rebinding: the page's own name arrives in Host.
    let port = base.rsplit(':').next().unwrap();
    let r = alice
        .client
        .get(format!("{base}/api/me"))
        .header("host", format!("rebound.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Health checks answer whatever the Host.
    let r = alice
        .client
        .get(format!("{base}/healthz"))
        .header("host", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let (session, _carol) = system.open_chat().await;
    let path = format!("/api/sessions/{session}");
    let before = alice.get(&path).await.1["last_seq"].clone();
    let (status, body) = alice
        .post(&format!("{path}/messages"), &json!(["a1", "an array"]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_request");
    assert_eq!(alice.get(&path).await.1["last_seq"], before);

    // The stream's first bytes tell EventSource to reconnect after 1 s.
    let mut r = alice
        .client
        .get(format!("{base}/api/events?sessions={session}"))
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().expect("a first chunk");
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("retry:1000\n"), "{first:?}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_made_up_session_is_the_same_401_and_starts_no_actor() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let (session, _carol) = system.open_chat().await;
    let stranger = Browser::new(&system.node.base);
    let token = json!({"token": "0".repeat(48)});
    let wrong_token = stranger
        .post(&format!("/m/{session}/api/login"), &token)
        .await;
    assert_eq!(wrong_token.0, StatusCode::UNAUTHORIZED);

    let made_up = ulid::Ulid::new().to_string();
    let no_session = stranger
        .post(&format!("/m/{made_up}/api/login"), &token)
        .await;
    assert_eq!(no_session, wrong_token, "no existence oracle");
    let actor = natter_actors::session::actor_name(&made_up);
    assert!(ractor::registry::where_is(actor).is_none());
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_made_up_sessions_are_404_and_start_no_actor() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let made_up: Vec<String> = (0..200).map(|_| ulid::Ulid::new().to_string()).collect();
    for (i, id) in made_up.iter().enumerate() {
        let path = format!("/api/sessions/{id}");
        let (status, body) = match i % 3 {
            0 => alice.get(&path).await,
            1 => alice.post(&format!("{path}/join"), &json!({})).await,
            _ => {
                let message = json!({"id": "c1", "text": "hello?"});
                alice.post(&format!("{path}/messages"), &message).await
            }
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
    }
    let started = made_up
        .iter()
        .filter(|id| ractor::registry::where_is(natter_actors::session::actor_name(id)).is_some())
        .count();
    assert_eq!(started, 0, "actors were started for made-up sessions");
    system.shutdown().await;
}
