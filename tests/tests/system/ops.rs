//! Operations: `/metrics` counts what happens on the node, `/readyz` tells the truth when NATS
//! goes away (and comes back).

use std::time::Duration;

use natter_system_tests::*;
use serde_json::Value;

/// One scrape of `/metrics`, as text.
async fn scrape(browser: &Browser) -> String {
    let (status, body) = browser.get("/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    match body {
        Value::String(text) => text,
        other => panic!("/metrics answered JSON: {other}"),
    }
}

/// The value of the series `name` whose labels include `labels`, in a Prometheus text scrape.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = series.split_once('{').unwrap_or((series, "}"));
            let has = |(k, v): &(&str, &str)| {
                label_text
                    .trim_end_matches('}')
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            };
            (metric == name && labels.iter().all(has)).then(|| value.parse().ok())?
        })
}

/// Polls `/metrics` until the series has `want`, or panics with the last scrape.
async fn wait_for_sample(browser: &Browser, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(browser).await;
        if sample(&text, name, labels) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_streams_messages_and_errors_by_node() {
    let system = Scenario::new()
        .config(|c| c.node.id = "ops-node-1".into())
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let scraper = Browser::new(&system.node.base);
    let node = ("node", "ops-node-1");

    let before = scrape(&scraper).await;
    for name in [
        "natter_node_info",
        "natter_session_actors",
        "natter_agent_actors",
        "natter_messages_in_total",
        "natter_nats_rtt_seconds_count",
    ] {
        assert!(
            sample(&before, name, &[node]).is_some(),
            "no {name}:\n{before}"
        );
    }
    let accepted = sample(&before, "natter_checkins_total", &[("result", "accepted")]);
    assert!(accepted >= Some(1.0), "{accepted:?}");
    wait_for_sample(&scraper, "natter_agents", &[node, ("state", "user")], 1.0).await;
    // Its first check-in was written (one machine, no change since).
    let writes = sample(
        &scrape(&scraper).await,
        "natter_machine_record_writes_total",
        &[node],
    );
    assert!(writes >= Some(1.0), "{writes:?}");
    let limits = [("kind", "streams_refused")];
    assert_eq!(
        sample(&before, "natter_limit_refusals_total", &limits),
        Some(0.0)
    );
    let gateway_nats = [("connection", "gateway")];
    assert_eq!(
        sample(&before, "natter_nats_connected", &gateway_nats),
        Some(1.0)
    );
    let messages_in = sample(&before, "natter_messages_in_total", &[node]).unwrap();
    assert_eq!(messages_in, 0.0);

    let alice = system.operator("alice");
    let (session, _carol) = system.open_chat().await;
    let mut stream = alice.session_events(&session).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.error_body);
    let sessions_stream = [node, ("stream", "sessions")];
    wait_for_sample(&scraper, "natter_sse_clients", &sessions_stream, 1.0).await;

    let (status, body) = alice.send(&session, "m1", "hello carol").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same send retried is one message.
    let (status, body) = alice.send(&session, "m1", "hello carol").await;
    assert!(status.is_success(), "{body}");
    assert_eq!(texts(&stream.read_messages(1).await), ["hello carol"]);
    let after = scrape(&scraper).await;
    assert_eq!(
        sample(&after, "natter_messages_in_total", &[node]),
        Some(1.0)
    );
    let written = sample(&after, "natter_sse_events_total", &sessions_stream).unwrap();
    assert!(written >= 2.0, "hello and the message at least: {written}");
    assert!(sample(&after, "natter_session_actors", &[node]).unwrap() >= 1.0);

    let (status, _) = alice.get("/api/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let errors = [node, ("kind", "not_found")];
    wait_for_sample(&scraper, "natter_http_errors_total", &errors, 1.0).await;

    let last = scrape(&scraper).await;
    for private in ["carol", "alice", "hello", &session, "pc1"] {
        assert!(
            !last.contains(private),
            "/metrics shows {private:?}:\n{last}"
        );
    }
    stream.close();
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_metrics_need_it_even_from_loopback() {
    let system = Scenario::new()
        .config(|c| c.metrics.token = Some("scrape-secret".into()))
        .start()
        .await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", system.node.base);
    let bare = client.get(&url).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = client
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().contains("natter_node_info"));
    system.shutdown().await;
}

/// `/readyz`'s status and body.
async fn readyz(browser: &Browser) -> (StatusCode, String) {
    let (status, body) = browser.get("/readyz").await;
    (status, body.as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_with_a_reason_while_nats_is_down_and_200_again_after() {
    let mut system = Scenario::new().start().await;
    let probe = Browser::new(&system.node.base);
    assert_eq!(readyz(&probe).await, (StatusCode::OK, "ready".into()));

    system.nats.stop().await;
    eventually(WAIT, || async {
        readyz(&probe).await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, why) = readyz(&probe).await;
    assert!(why.starts_with("not ready: "), "{why}");
    assert!(why.contains("NATS"), "{why}");
    let (status, _) = probe.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "the process itself is alive");

    system.nats.resume().await;
    eventually(WAIT, || async { readyz(&probe).await.0 == StatusCode::OK }).await;
    system.shutdown().await;
}

/// A chat window asks for its newest events and its whole history at once; opened again, both
/// come from the gateway's kept copy (gateway/src/history.rs), which `/metrics` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_again_comes_from_the_kept_copy() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (id, _) = system.open_chat().await;
    for i in 0..30 {
        let (s, body) = alice.send(&id, &format!("m{i}"), &format!("#{i}")).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let browser = Browser::new(&system.node.base);
    let reads = |text: &str, from: &str| {
        sample(text, "natter_history_reads_total", &[("from", from)]).unwrap_or(-1.0)
    };
    let before = scrape(&browser).await;
    let open_window = || async {
        let (newest, all) = (
            format!("/api/sessions/{id}/events?last=5"),
            format!("/api/sessions/{id}/events?last=20000"),
        );
        let (small, whole) = tokio::join!(alice.get(&newest), alice.get(&all));
        assert_eq!(small.0, StatusCode::OK, "{}", small.1);
        assert_eq!(whole.0, StatusCode::OK, "{}", whole.1);
        (small.1["events"].clone(), whole.1["events"].clone())
    };
    let first = open_window().await;
    let after_first = scrape(&browser).await;
    // The two reads at once: the first to start reads the stream; the other may find what it
    // kept (when that read was done before it looked), or read the stream too.
    let stream = reads(&after_first, "stream") - reads(&before, "stream");
    let kept = reads(&after_first, "kept").max(0.0) - reads(&before, "kept").max(0.0);
    assert!(stream >= 1.0 && stream + kept == 2.0, "{after_first}");
    assert!(sample(&after_first, "natter_history_kept_bytes", &[]).unwrap_or(0.0) > 0.0);
    let again = open_window().await;
    assert_eq!(again, first, "the same history, from the kept copy");
    let after_again = scrape(&browser).await;
    assert_eq!(
        reads(&after_again, "kept") - reads(&after_first, "kept").max(0.0),
        2.0,
        "{after_again}"
    );
    assert_eq!(reads(&after_again, "stream"), reads(&after_first, "stream"));
    system.shutdown().await;
}
