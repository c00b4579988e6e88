//! F3: messages older than the retention are gone from history and from resume; a client whose
//! resume point was removed is told so explicitly.

use std::time::Duration;

use natter_system_tests::*;

use crate::chat::{read_messages, start_chat, texts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_removed_from_history_and_resume() {
    let nats = TestNats::start().await;
    let mut config = nats.node_config();
    config.chat.retention = Duration::from_secs(2);
    config.chat.duplicate_window = Duration::from_secs(1);
    let node = TestNode::start(config).await;
    let agent = TestAgent::start(&nats, &node, "pc1.sales.acme", Some("carol")).await;
    let alice = node.operator("alice").await;
    let (session, carol) = start_chat(&node, &alice, &agent).await;

    // A client that has seen the session up to here…
    let mut sse = alice
        .events(&format!("/api/events?sessions={session}"), None)
        .await;
    let mut cursor = 0;
    while let Some(e) = sse.next_chat(Duration::from_millis(300)).await {
        cursor = e.seq();
    }
    sse.close();
    // …misses these, which then expire.
    alice.send(&session, "old1", "old message").await;
    carol
        .post(
            &format!("/m/{session}/api/messages"),
            &serde_json::json!({"id": "old2", "text": "old reply"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // The session lives on; new messages go through.
    let (status, body) = alice.send(&session, "new1", "new message").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // History from the start holds only what is younger than the retention.
    let mut fresh = alice
        .events(&format!("/api/events?sessions={session}"), None)
        .await;
    let got = read_messages(&mut fresh, 1).await;
    assert_eq!(texts(&got), ["new message"]);
    fresh.expect_quiet(Duration::from_millis(300)).await;

    // Resuming from before the removed messages: an explicit reset, then what is left.
    let mut resumed = alice
        .events(&format!("/api/events?sessions={session}"), Some(cursor))
        .await;
    let mut saw_reset = false;
    let mut messages = Vec::new();
    while let Some(e) = resumed.next(Duration::from_millis(800)).await {
        match e.event.as_str() {
            "reset" => {
                assert_eq!(e.data["session"], session.as_str());
                assert_eq!(e.data["reason"], "expired");
                saw_reset = true;
            }
            "message" if e.data["type"] == "message" => {
                assert!(saw_reset, "the reset comes before the replay");
                messages.push(e.data["text"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    assert!(saw_reset, "no reset event");
    assert_eq!(messages, ["new message"]);
    node.shutdown().await;
}
