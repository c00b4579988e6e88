//! F3: messages older than the retention are gone from history and from resume; a client whose
//! resume point was removed is told so explicitly.

use std::time::Duration;

use natter_system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_removed_from_history_and_resume() {
    let system = Scenario::new()
        .config(|c| {
            c.chat.retention = Duration::from_secs(2);
            c.chat.duplicate_window = Duration::from_secs(1);
        })
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let (session, carol) = system.open_chat().await;

    // A client that has seen the session up to here…
    let mut sse = alice.session_events(&session).await;
    let mut cursor = 0;
    while let Some(e) = sse.next_chat(Duration::from_millis(300)).await {
        cursor = e.seq();
    }
    sse.close();
    // …misses these, which then expire.
    alice.send(&session, "old1", "old message").await;
    carol
        .send_as_machine_user(&session, "old2", "old reply")
        .await;
    // A chat window's history read now (the gateway keeps it, gateway/src/history.rs)…
    let history_texts = || async {
        let (s, body) = alice
            .get(&format!("/api/sessions/{session}/events?last=20000"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["text"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(history_texts().await, ["old message", "old reply"]);
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // The session lives on; new messages go through.
    let (status, body) = alice.send(&session, "new1", "new message").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // …and read again: what expired is gone from it too.
    assert_eq!(history_texts().await, ["new message"]);

    // History from the start holds only what is younger than the retention.
    let mut fresh = alice.session_events(&session).await;
    let got = fresh.read_messages(1).await;
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
    system.shutdown().await;
}
