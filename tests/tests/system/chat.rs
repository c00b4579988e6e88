//! F1: an operator and a machine user talk both ways; sends are idempotent.

use natter_system_tests::*;
use serde_json::json;

use crate::WAIT;

/// Texts of the `message` events among `events`.
pub fn texts(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.data["type"] == "message")
        .map(|e| e.data["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Reads chat events until `n` messages have arrived (other event types are kept too).
pub async fn read_messages(sse: &mut Sse, n: usize) -> Vec<SseEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    while texts(&out).len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sse.next_chat(left).await {
            Some(e) => out.push(e),
            None => panic!("only {:?} of {n} messages arrived", texts(&out)),
        }
    }
    out
}

/// Starts a chat between operator `op` and the machine of `agent`, logs the machine user in
/// through the link the agent was asked to open; returns (session id, machine user's browser).
pub async fn start_chat(node: &TestNode, op: &Browser, agent: &TestAgent) -> (String, Browser) {
    let (status, answer) = op
        .post("/api/chats", &json!({"machine": agent.machine}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let session = session_id(&answer);
    let url = agent.wait_for_chat_url().await;
    let prefix = format!("{}/m/{session}/#t=", node.base);
    assert!(
        url.starts_with(&prefix),
        "{url} does not start with {prefix}"
    );
    let token = url[prefix.len()..].to_string();
    let user = Browser::new(&node.base);
    let (status, view) = user
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["machine"], agent.machine.as_str());
    (session, user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_machine_user_talk_both_ways() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = TestAgent::start(&nats, &node, "pc1.sales.acme", Some("carol")).await;
    let alice = node.operator("alice").await;

    let (status, machines) = alice.get("/api/machines").await;
    assert_eq!(status, StatusCode::OK);
    let pc1 = machines
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "pc1.sales.acme")
        .expect("machine listed");
    assert_eq!(pc1["user"], "carol");
    assert_eq!(pc1["status"], "user");

    let (session, carol) = start_chat(&node, &alice, &agent).await;
    let mut alice_sees = alice
        .events(&format!("/api/events?sessions={session}"), None)
        .await;
    let mut carol_sees = carol
        .events(&format!("/m/{session}/api/events"), None)
        .await;
    assert_eq!(
        alice_sees.status,
        StatusCode::OK,
        "{}",
        alice_sees.error_body
    );
    assert_eq!(
        carol_sees.status,
        StatusCode::OK,
        "{}",
        carol_sees.error_body
    );

    let (status, sent) = alice.send(&session, "a1", "hello carol\nsecond line").await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let (status, sent) = carol
        .post(
            &format!("/m/{session}/api/messages"),
            &json!({"id": "c1", "text": "<b>hi</b> alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");

    let expected = vec![
        "hello carol\nsecond line".to_string(),
        "<b>hi</b> alice".to_string(),
    ];
    let on_alice = read_messages(&mut alice_sees, 2).await;
    let on_carol = read_messages(&mut carol_sees, 2).await;
    assert_eq!(texts(&on_alice), expected);
    assert_eq!(texts(&on_carol), expected);
    // Who said what, as both sides see it.
    let from: Vec<_> = on_carol
        .iter()
        .filter(|e| e.data["type"] == "message")
        .map(|e| e.data["from"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(from, ["operator", "machine_user"]);
    // Every event carries its sequence as the SSE id, increasing.
    let seqs: Vec<u64> = on_alice.iter().map(|e| e.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(on_alice.iter().all(|e| e.id == e.seq().to_string()));
    alice_sees
        .expect_quiet(std::time::Duration::from_millis(300))
        .await;

    // The operator learns that the window opened on the machine.
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["agent"], "opened", "{view}");
    assert_eq!(view["members"].as_array().unwrap().len(), 2, "{view}");

    // Either side ends the chat; both see it.
    let (status, _) = carol
        .post(&format!("/m/{session}/api/end"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ended = alice_sees.next_chat(WAIT).await.expect("ended event");
    assert_eq!(ended.data["type"], "ended");
    let (status, err) = alice.send(&session, "a2", "too late").await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    agent.stop().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_lands_once() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = TestAgent::start(&nats, &node, "pc2.sales.acme", Some("dave")).await;
    let alice = node.operator("alice").await;
    let (session, _dave) = start_chat(&node, &alice, &agent).await;

    let (s1, first) = alice.send(&session, "same-id", "only once").await;
    let (s2, second) = alice.send(&session, "same-id", "only once").await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(s2, StatusCode::CREATED);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["seq"], second["seq"]);
    let (_, third) = alice.send(&session, "other-id", "next").await;
    // A retry after later messages is still recognised.
    let (_, again) = alice.send(&session, "same-id", "only once").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], first["seq"]);

    let mut sse = alice
        .events(&format!("/api/events?sessions={session}"), None)
        .await;
    let events = read_messages(&mut sse, 2).await;
    assert_eq!(texts(&events), ["only once", "next"]);
    sse.expect_quiet(std::time::Duration::from_millis(300))
        .await;
    assert!(third["seq"].as_u64() > first["seq"].as_u64());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_when_the_window_could_not_open() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = TestAgent::start(&nats, &node, "pc3.sales.acme", Some("erin")).await;
    *agent.opener.fail_with.lock().unwrap() = Some("no browser installed".into());
    let alice = node.operator("alice").await;
    let (status, answer) = alice
        .post("/api/chats", &json!({"machine": "pc3.sales.acme"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let session = session_id(&answer);
    let mut sse = alice
        .events(&format!("/api/events?sessions={session}"), None)
        .await;
    let mut agent_event = None;
    while let Some(e) = sse.next_chat(WAIT).await {
        if e.data["type"] == "agent" {
            agent_event = Some(e);
            break;
        }
    }
    let e = agent_event.expect("agent event");
    assert_eq!(e.data["status"], "failed");
    assert_eq!(e.data["detail"], "no browser installed");

    // An agent that is gone: the operator is told it is offline.
    agent.stop().await;
    let other = TestAgent::start(&nats, &node, "pc4.sales.acme", Some("fay")).await;
    other.stop().await;
    let (status, answer) = alice
        .post("/api/chats", &json!({"machine": "pc4.sales.acme"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let session = session_id(&answer);
    let alice2 = alice.clone();
    eventually(WAIT, || {
        let alice = alice2.clone();
        let session = session.clone();
        async move {
            let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
            view["agent"] == "failed"
        }
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_joins_the_chat_in_progress_and_sees_its_history() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = TestAgent::start(&nats, &node, "pc5.sales.acme", Some("gus")).await;
    let alice = node.operator("alice").await;
    let bob = node.operator("bob").await;
    let (session, _gus) = start_chat(&node, &alice, &agent).await;
    alice.send(&session, "m1", "before bob").await;

    let (_, machines) = bob.get("/api/machines").await;
    let pc5 = machines
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "pc5.sales.acme")
        .unwrap()
        .clone();
    assert_eq!(pc5["session"], session.as_str(), "Join Session link data");
    // Starting a chat with a machine that has one joins it instead (200, same session).
    let (status, answer) = bob
        .post("/api/chats", &json!({"machine": "pc5.sales.acme"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(session_id(&answer), session);
    let mut sse = bob
        .events(&format!("/api/events?sessions={session}"), None)
        .await;
    let events = read_messages(&mut sse, 1).await;
    assert_eq!(texts(&events), ["before bob"]);
    let (status, _) = bob.send(&session, "b1", "bob here").await;
    assert_eq!(status, StatusCode::CREATED);
    let events = read_messages(&mut sse, 1).await;
    assert_eq!(texts(&events), ["bob here"]);
    node.shutdown().await;
}
