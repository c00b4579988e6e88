//! Fan-out that grows with nodes: each gateway receives only the live events of the sessions its
//! own browsers follow, resume by `Last-Event-ID` is exact on any node, and a NATS restart under
//! an open stream loses and repeats nothing; typing and seen signals reach other nodes' streams.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use natter_actors::store::{
    EVENTS_STREAM, LAST_SEQUENCE_HEADER, SEQUENCE_HEADER, StoreConfig, Stores,
};
use natter_actors::subjects;
use natter_gateway::{Gateway, GatewayConfig};
use natter_system_tests::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A second node's gateway alone (HTTP, SSE and its hub on its own NATS connection, reaching the
/// first node's actors through NATS): two nodes' actors in one test process would share one
/// ractor registry, and fan-out needs only a second gateway.
struct TestGateway {
    base: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    async fn start(nats: &TestNats, node_id: &str) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = nats.node_config();
        config.http.public_url = format!("http://{addr}");
        let client = natter::connect(&config).await.expect("connect");
        let stores = Stores::ensure(client, natter::store_config(&config))
            .await
            .expect("stores");
        let gateway_config = GatewayConfig {
            request_timeout: config.http.request_timeout,
            login_ttl: config.http.login_ttl,
            secure_cookies: false,
            drain_timeout: config.http.drain_timeout,
            public_origin: natter_gateway::origin::PublicOrigin::parse(&config.http.public_url),
            limits: config.limits.clone(),
            node_id: node_id.into(),
            metrics_token: None,
            history_cache_bytes: (config.http.history_cache_mib as usize) << 20,
        };
        let shutdown = CancellationToken::new();
        let gateway = Gateway::start(stores, gateway_config, shutdown.clone())
            .await
            .expect("gateway");
        TestGateway {
            base: format!("http://{addr}"),
            shutdown,
            server: tokio::spawn(natter_gateway::serve(listener, gateway)),
        }
    }

    async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, self.server).await;
    }
}

/// `natter_gateway_events_received_total` of the node at `base`.
async fn events_received(base: &str) -> u64 {
    let (status, body) = Browser::new(base).get("/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let Value::String(text) = body else {
        panic!("/metrics answered JSON: {body}");
    };
    text.lines()
        .find(|l| l.starts_with("natter_gateway_events_received_total"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no events_received in:\n{text}"))
}

/// Reads whatever the stream has until it is quiet (the history of a chat just opened).
async fn drain(sse: &mut Sse) {
    while sse.next(Duration::from_millis(500)).await.is_some() {}
}

fn sent((status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Nats-Sequence and Nats-Last-Sequence of a republished message.
fn sequences(m: &async_nats::Message) -> (u64, u64) {
    let h = m.headers.as_ref().expect("republished with headers");
    let get = |name: &str| -> u64 { h.get(name).expect(name).as_str().parse().expect(name) };
    (get(SEQUENCE_HEADER), get(LAST_SEQUENCE_HEADER))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_republishes_each_event_with_its_sessions_previous_sequence() {
    let nats = TestNats::start().await;
    let client = nats.broker_client().await;
    // The stream as a node of an earlier version made it: no republish. Starting a node's
    // stores updates it in place.
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec![subjects::ALL_EVENTS.into()],
            ..Default::default()
        })
        .await
        .expect("an old-style stream");
    let stores = Stores::ensure(client.clone(), StoreConfig::default())
        .await
        .expect("stores updated");
    let config = stores
        .events
        .clone()
        .info()
        .await
        .expect("info")
        .config
        .clone();
    let republish = config
        .republish
        .expect("republish added to the existing stream");
    assert_eq!(republish.source, subjects::ALL_EVENTS);
    assert_eq!(republish.destination, subjects::LIVE_REPUBLISH);
    assert!(!republish.headers_only);

    let mut live = client.subscribe(subjects::ALL_LIVE).await.expect("sub");
    client.flush().await.expect("flush");
    let (a, b) = ("01JDXAAAAAAAAAAAAAAAAAAAAA", "01JDXBBBBBBBBBBBBBBBBBBBBB");
    let mut sent = Vec::new();
    for (session, text) in [(a, "a1"), (b, "b1"), (a, "a2"), (a, "a3"), (b, "b2")] {
        let ack = stores
            .js
            .publish(subjects::session_events(session), text.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        sent.push((session, text, ack.sequence));
    }
    let mut previous = std::collections::HashMap::new();
    for (session, text, seq) in sent {
        let m = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut live))
            .await
            .expect("republished in time")
            .expect("a message");
        assert_eq!(m.subject.as_str(), subjects::session_live(session));
        assert_eq!(&m.payload[..], text.as_bytes(), "the payload comes along");
        let last = previous.insert(session, seq).unwrap_or(0);
        assert_eq!(
            sequences(&m),
            (seq, last),
            "{text}: its stream sequence and its session's previous one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_receives_only_what_its_browsers_follow_and_resumes_exactly_for_the_other() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .machine("pc2.sales.acme", "dave")
        .operator("alice")
        .start()
        .await;
    let (s1, _) = system.open_chat_between("alice", "pc1.sales.acme").await;
    let (s2, _) = system.open_chat_between("alice", "pc2.sales.acme").await;
    let node_b = TestGateway::start(&system.nats, "node-b").await;
    let (base_a, base_b) = (system.node.base.clone(), node_b.base.clone());
    let alice_a = system.operator("alice");
    let alice_b = alice_a.at(&base_b);

    // A browser on node A follows s1, one on node B follows s2.
    let s1_path = format!("/api/events?sessions={s1}");
    let mut on_a = alice_a.events(&s1_path, None).await;
    let mut on_b = alice_b
        .events(&format!("/api/events?sessions={s2}"), None)
        .await;
    drain(&mut on_a).await;
    drain(&mut on_b).await;
    let (before_a, before_b) = (
        events_received(&base_a).await,
        events_received(&base_b).await,
    );

    for i in 0..3 {
        sent(
            alice_a
                .send(&s1, &format!("a{i}"), &format!("one-{i}"))
                .await,
        );
        sent(
            alice_b
                .send(&s2, &format!("b{i}"), &format!("two-{i}"))
                .await,
        );
    }
    let got_a = on_a.read_messages(3).await;
    let got_b = on_b.read_messages(3).await;
    assert_eq!(texts(&got_a), ["one-0", "one-1", "one-2"]);
    assert_eq!(texts(&got_b), ["two-0", "two-1", "two-2"]);
    assert!(got_a.iter().all(|e| e.data["session"] == s1.as_str()));
    assert!(got_b.iter().all(|e| e.data["session"] == s2.as_str()));
    on_a.expect_quiet(Duration::from_millis(300)).await;
    on_b.expect_quiet(Duration::from_millis(300)).await;
    // Each gateway received its own browsers' sessions' events, not the other's.
    assert_eq!(
        events_received(&base_a).await - before_a,
        3,
        "node A: s1 only"
    );
    assert_eq!(
        events_received(&base_b).await - before_b,
        3,
        "node B: s2 only"
    );

    // The browser on A drops after "one-1" and comes back on node B.
    let cut = got_a[1].id.parse::<u64>().expect("numeric id");
    on_a.close();
    for i in 3..5 {
        sent(
            alice_a
                .send(&s1, &format!("a{i}"), &format!("one-{i}"))
                .await,
        );
    }
    let mut resumed = alice_b.events(&s1_path, Some(cut)).await;
    let got = resumed.read_messages(3).await;
    assert_eq!(texts(&got), ["one-2", "one-3", "one-4"]);
    assert!(got.iter().all(|e| e.seq() > cut));
    resumed.expect_quiet(Duration::from_millis(300)).await;
    // And it is live there.
    sent(alice_a.send(&s1, "a-live", "live on B").await);
    assert_eq!(texts(&resumed.read_messages(1).await), ["live on B"]);
    resumed.expect_quiet(Duration::from_millis(300)).await;

    node_b.shutdown().await;
    system.shutdown().await;
}

/// A browser's EventSource: it reconnects when its stream ends (or goes quiet), with the last
/// `id` it saw as `Last-Event-ID`, and keeps every chat message it receives.
struct Reconnecting {
    browser: Browser,
    path: String,
    sse: Option<Sse>,
    last_id: Option<u64>,
    messages: Vec<SseEvent>,
}

impl Reconnecting {
    async fn open(browser: &Browser, path: &str) -> Reconnecting {
        let mut r = Reconnecting {
            browser: browser.clone(),
            path: path.to_string(),
            sse: None,
            last_id: None,
            messages: Vec::new(),
        };
        r.connect().await;
        r
    }

    async fn connect(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let sse = self.browser.events(&self.path, self.last_id).await;
            if sse.status == StatusCode::OK {
                self.sse = Some(sse);
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream does not reopen: {} {}",
                sse.status,
                sse.error_body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads until `n` messages arrived in all, reconnecting as needed.
    async fn read_until(&mut self, n: usize) {
        let deadline = tokio::time::Instant::now() + 2 * WAIT;
        while texts(&self.messages).len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {:?} of {n} messages arrived",
                texts(&self.messages)
            );
            let sse = self.sse.as_mut().expect("open");
            match sse.next(Duration::from_secs(1)).await {
                Some(e) if e.event == "message" => {
                    if let Ok(id) = e.id.parse() {
                        self.last_id = Some(id);
                    }
                    self.messages.push(e);
                }
                Some(_) => {}
                None => self.connect().await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_an_open_stream_loses_and_repeats_nothing() {
    let mut system = Scenario::alice_and_carol_on_pc1().start().await;
    let (s1, _) = system.open_chat().await;
    // Messages come in through a second node too, whose NATS connection comes back at its own
    // moment: what it sends before node A's gateway is back never reaches A live.
    let node_b = TestGateway::start(&system.nats, "node-b").await;
    let alice = system.operator("alice");
    let senders = [alice.clone(), alice.at(&node_b.base)];
    let path = format!("/api/events?sessions={s1}");
    let mut reader = Reconnecting::open(&alice, &path).await;

    let send = |i: usize| {
        let sender = senders[i % 2].clone();
        let s1 = s1.clone();
        async move {
            // Retried with the same client id until accepted: it lands once.
            let deadline = tokio::time::Instant::now() + 2 * WAIT;
            loop {
                let (status, body) = sender.send(&s1, &format!("c{i}"), &format!("{i}")).await;
                if status == StatusCode::CREATED {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "send {i}: {status} {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for i in 0..5 {
        send(i).await;
    }
    reader.read_until(5).await;

    system.nats.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.nats.resume().await;
    // What was published while the gateway was cut off never reaches it live: once its NATS
    // connection is back, its open streams end, and browsers resume from their Last-Event-ID.
    let started = tokio::time::Instant::now();
    let after = reader.sse.as_mut().expect("open").next(WAIT).await;
    assert!(
        after.is_none() && started.elapsed() < WAIT,
        "the open stream ends once NATS is back: {after:?}"
    );
    reader.connect().await;
    for i in 5..15 {
        send(i).await;
    }
    reader.read_until(15).await;
    let numbers: Vec<usize> = texts(&reader.messages)
        .iter()
        .map(|t| t.parse().expect("a number"))
        .collect();
    assert_eq!(numbers, (0..15).collect::<Vec<_>>(), "each once, in order");
    reader
        .sse
        .as_mut()
        .expect("open")
        .expect_quiet(Duration::from_millis(300))
        .await;

    node_b.shutdown().await;
    system.shutdown().await;
}

/// Turns the events stream's republish off (`false`) or back on, as a lost live message looks
/// to a gateway: the event is stored, but no gateway receives it live.
async fn republish(nats: &TestNats, on: bool) {
    let js = jetstream::new(nats.broker_client().await);
    let mut events = js.get_stream(EVENTS_STREAM).await.expect("stream");
    let mut config = events.info().await.expect("info").config.clone();
    config.republish = on.then(|| stream::Republish {
        source: subjects::ALL_EVENTS.into(),
        destination: subjects::LIVE_REPUBLISH.into(),
        headers_only: false,
    });
    js.update_stream(config).await.expect("update the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_a_gateway_missed_are_filled_from_the_stream_once() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .machine("pc2.sales.acme", "dave")
        .operator("alice")
        .start()
        .await;
    let (s1, _) = system.open_chat_between("alice", "pc1.sales.acme").await;
    let (s2, _) = system.open_chat_between("alice", "pc2.sales.acme").await;
    let alice = system.operator("alice");
    let path = format!("/api/events?sessions={s1},{s2}");
    let mut sse = alice.events(&path, None).await;
    drain(&mut sse).await;

    // "one-0" never reaches the gateway live; s1's next event names it as its predecessor.
    republish(&system.nats, false).await;
    sent(alice.send(&s1, "a0", "one-0").await);
    republish(&system.nats, true).await;
    sent(alice.send(&s2, "b0", "two-0").await);
    sent(alice.send(&s1, "a1", "one-1").await);
    let got = sse.read_messages(3).await;
    // s1's events in their order, each once; the filled one comes after s2's later event, with
    // its own (lower) id, as docs/api.md says.
    assert_eq!(texts(&got), ["two-0", "one-0", "one-1"]);
    let seqs: Vec<u64> = got.iter().map(|e| e.seq()).collect();
    assert!(seqs[1] < seqs[0] && seqs[0] < seqs[2], "{seqs:?}");
    assert!(got.iter().all(|e| e.id == e.seq().to_string()));
    sse.expect_quiet(Duration::from_millis(300)).await;

    // A browser cut right after the filled event resumes from its id: it gets the later event of
    // s2 again (which it ignores) and loses nothing.
    let mut resumed = alice.events(&path, Some(seqs[1])).await;
    assert_eq!(texts(&resumed.read_messages(2).await), ["two-0", "one-1"]);
    resumed.expect_quiet(Duration::from_millis(300)).await;

    // A gateway that just began following s1 misses its next event (and nothing follows it):
    // it checks the session's last stored event shortly after subscribing and fills it.
    let node_b = TestGateway::start(&system.nats, "node-b").await;
    let alice_b = alice.at(&node_b.base);
    let mut on_b = alice_b
        .events(&format!("/api/events?sessions={s1}"), Some(seqs[2]))
        .await;
    assert_eq!(on_b.next(WAIT).await.expect("hello").event, "hello");
    republish(&system.nats, false).await;
    sent(alice.send(&s1, "a2", "one-2").await);
    let filled = on_b.next_chat(WAIT).await.expect("one-2, filled on node B");
    assert_eq!(texts(&[filled]), ["one-2"]);
    republish(&system.nats, true).await;
    on_b.expect_quiet(Duration::from_millis(500)).await;
    // Node A, following s1 for long, learns of it from s1's next event.
    sent(alice.send(&s1, "a3", "one-3").await);
    assert_eq!(texts(&sse.read_messages(2).await), ["one-2", "one-3"]);
    assert_eq!(texts(&on_b.read_messages(1).await), ["one-3"]);

    node_b.shutdown().await;
    system.shutdown().await;
}

/// Typing and seen signals cross nodes: posted to one gateway, they reach a browser that
/// follows the session on another (through that gateway's hub), and do not move its resume point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_posted_on_one_gateway_reaches_a_stream_on_another() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let (session, carol) = system.open_chat().await;
    let node_b = TestGateway::start(&system.nats, "node-b").await;
    let alice_b = system.operator("alice").at(&node_b.base);
    let mut on_b = alice_b.session_events(&session).await;
    assert_eq!(on_b.status, StatusCode::OK, "{}", on_b.error_body);
    let (status, body) = carol
        .post(&format!("/m/{session}/api/typing"), &serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut last_id = String::new();
    let typing = loop {
        let e = on_b.next(WAIT).await.expect("carol's typing on node B");
        if e.event == "typing" {
            break e;
        }
        last_id = e.id;
    };
    assert_eq!(typing.data["who"]["name"], "carol");
    assert_eq!(typing.data["session"], session.as_str());
    assert_eq!(typing.id, last_id, "a signal has no id of its own");
    node_b.shutdown().await;
    system.shutdown().await;
}
