//! SSE resume: a reconnecting browser gets exactly the events it missed, for every session its
//! one connection carries.

use std::time::Duration;

use natter_system_tests::*;

/// Alice in two chats, with pc1 (carol) and pc2 (dave).
async fn two_chats() -> (Fixture, Browser, String, String) {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .machine("pc2.sales.acme", "dave")
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let (s1, _) = system.open_chat_between("alice", "pc1.sales.acme").await;
    let (s2, _) = system.open_chat_between("alice", "pc2.sales.acme").await;
    (system, alice, s1, s2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_last_event_id_has_no_gap_and_no_duplicate() {
    let (system, alice, s1, s2) = two_chats().await;

    // One connection carries both sessions.
    let path = format!("/api/events?sessions={s1},{s2}");
    let mut sse = alice.events(&path, None).await;
    let hello = sse.next(WAIT).await.expect("hello");
    assert_eq!(hello.event, "hello");
    for i in 0..3 {
        alice.send(&s1, &format!("a{i}"), &format!("one-{i}")).await;
        alice.send(&s2, &format!("b{i}"), &format!("two-{i}")).await;
    }
    let seen = sse.read_messages(6).await;
    assert_eq!(
        texts(&seen),
        ["one-0", "two-0", "one-1", "two-1", "one-2", "two-2"]
    );
    // Drop the connection after the 4th message, as if the network failed there.
    let cut = seen
        .iter()
        .filter(|e| e.data["type"] == "message")
        .nth(3)
        .unwrap()
        .seq();
    sse.close();

    for i in 3..6 {
        alice.send(&s2, &format!("b{i}"), &format!("two-{i}")).await;
        alice.send(&s1, &format!("a{i}"), &format!("one-{i}")).await;
    }
    let mut resumed = alice.events(&path, Some(cut)).await;
    let got = resumed.read_messages(8).await;
    assert_eq!(
        texts(&got),
        [
            "one-2", "two-2", "two-3", "one-3", "two-4", "one-4", "two-5", "one-5"
        ]
    );
    assert!(got.iter().all(|e| e.seq() > cut));
    let seqs: Vec<u64> = got.iter().map(|e| e.seq()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in stream order: {seqs:?}"
    );
    resumed.expect_quiet(Duration::from_millis(300)).await;

    // Live events keep flowing on the resumed connection.
    alice.send(&s1, "a-live", "live").await;
    assert_eq!(texts(&resumed.read_messages(1).await), ["live"]);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_connect_can_start_after_a_known_sequence() {
    let (system, alice, s1, s2) = two_chats().await;
    let (_, first) = alice.send(&s1, "x1", "old").await;
    alice.send(&s2, "y1", "s2 old").await;
    let (_, _) = alice.send(&s1, "x2", "new").await;
    let since = first["seq"].as_u64().unwrap();

    // Per-session cursors: s1 from after "old", s2 from the start.
    let mut sse = alice
        .events(&format!("/api/events?sessions={s1}:{since},{s2}:0"), None)
        .await;
    let got = sse.read_messages(2).await;
    assert_eq!(texts(&got), ["s2 old", "new"]);
    sse.expect_quiet(Duration::from_millis(300)).await;

    // ?since= applies to every session without its own cursor.
    let mut sse = alice
        .events(&format!("/api/events?sessions={s1}&since={since}"), None)
        .await;
    assert_eq!(texts(&sse.read_messages(1).await), ["new"]);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_a_stream_is_opening_are_neither_lost_nor_doubled() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (s1, _) = system.open_chat().await;
    let sender = {
        let alice = alice.clone();
        let s1 = s1.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let (status, _) = alice.send(&s1, &format!("m{i}"), &format!("{i}")).await;
                assert_eq!(status, StatusCode::CREATED);
            }
        })
    };
    // Streams opened at different moments while the sender runs must each end up with every
    // message exactly once, in order: replay and live hand over without a gap or a repeat.
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(alice.session_events(&s1).await);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    sender.await.unwrap();
    for sse in streams.iter_mut() {
        let got = sse.read_messages(60).await;
        let numbers: Vec<u64> = texts(&got).iter().map(|t| t.parse().unwrap()).collect();
        assert_eq!(numbers, (0..60).collect::<Vec<_>>());
        sse.expect_quiet(Duration::from_millis(100)).await;
    }
    system.shutdown().await;
}
