//! F1: an operator and a machine user talk both ways; sends are idempotent.

use std::time::Duration;

use natter_system_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_machine_user_talk_both_ways() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");

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

    let (session, carol) = system.open_chat().await;
    let mut alice_sees = alice.session_events(&session).await;
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
        .send_as_machine_user(&session, "c1", "<b>hi</b> alice")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");

    let expected = vec![
        "hello carol\nsecond line".to_string(),
        "<b>hi</b> alice".to_string(),
    ];
    let on_alice = alice_sees.read_messages(2).await;
    let on_carol = carol_sees.read_messages(2).await;
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
    alice_sees.expect_quiet(Duration::from_millis(300)).await;

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
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_lands_once() {
    let system = Scenario::new()
        .machine("pc2.sales.acme", "dave")
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let (session, _dave) = system.open_chat().await;

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

    let mut sse = alice.session_events(&session).await;
    let events = sse.read_messages(2).await;
    assert_eq!(texts(&events), ["only once", "next"]);
    sse.expect_quiet(Duration::from_millis(300)).await;
    assert!(third["seq"].as_u64() > first["seq"].as_u64());
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_when_the_window_could_not_open() {
    let mut system = Scenario::new()
        .machine("pc3.sales.acme", "erin")
        .operator("alice")
        .start()
        .await;
    system
        .agent("pc3.sales.acme")
        .fail_to_open("no browser installed");
    let alice = system.operator("alice");
    let session = alice.new_chat("pc3.sales.acme").await;
    let mut sse = alice.session_events(&session).await;
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

    // An agent that is gone: the operator is told the chat waits for the machine (checkin.rs
    // follows it until the agent is back).
    system.stop_agent("pc3.sales.acme").await;
    system.add_machine("pc4.sales.acme", "fay").await;
    system.stop_agent("pc4.sales.acme").await;
    let session = alice.new_chat("pc4.sales.acme").await;
    alice
        .wait_for(&format!("/api/sessions/{session}"), |view| {
            view["agent"] == "waiting"
        })
        .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_joins_the_chat_in_progress_and_sees_its_history() {
    let system = Scenario::new()
        .machine("pc5.sales.acme", "gus")
        .operator("alice")
        .operator("bob")
        .start()
        .await;
    let (alice, bob) = (system.operator("alice"), system.operator("bob"));
    let (session, _gus) = system.open_chat().await;
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
    let (status, answer) = bob.chat_with("pc5.sales.acme").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(session_id(&answer), session);
    let mut sse = bob.session_events(&session).await;
    let events = sse.read_messages(1).await;
    assert_eq!(texts(&events), ["before bob"]);
    let (status, _) = bob.send(&session, "b1", "bob here").await;
    assert_eq!(status, StatusCode::CREATED);
    let events = sse.read_messages(1).await;
    assert_eq!(texts(&events), ["bob here"]);
    system.shutdown().await;
}
