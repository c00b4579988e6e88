//! Typing indicators and read receipts (issue 12, item 1): a member's `typing` and `seen` reach
//! the other members' event streams as named events that do not move the resume point, with
//! operators' login IDs hidden from the machine user; they are never stored (not replayed, not
//! in the transcript); bad input and non-members are refused.

use natter_system_tests::*;
use serde_json::{Value, json};

/// Reads `sse` until an event named `name` from a participant of kind `from` (a stream also
/// carries its own reader's signals); panics if none comes within [`WAIT`].
async fn next_named(sse: &mut Sse, name: &str, from: &str) -> SseEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sse.next(left).await {
            Some(e) if e.event == name && e.data["who"]["kind"] == from => return e,
            Some(_) => {}
            None => panic!("no {name} event within {WAIT:?}"),
        }
    }
}

/// The chat events (with an `id`) and named events of `sse` up to and including message `text`.
async fn read_until_message(sse: &mut Sse, text: &str) -> Vec<SseEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = sse
            .next(left)
            .await
            .unwrap_or_else(|| panic!("{text:?} never came; had {out:?}"));
        let done = e.data["type"] == "message" && e.data["text"] == text;
        out.push(e);
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_seen_reach_the_other_side_live_and_are_never_stored() {
    let s = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = s.operator("alice");
    let (session, carol) = s.open_chat().await;
    let mut alice_sees = alice.session_events(&session).await;
    let mut carol_sees = carol
        .events(&format!("/m/{session}/api/events"), None)
        .await;
    let (status, sent) = alice.send(&session, "a1", "printer?").await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let first = sent["seq"].as_u64().expect("a seq");
    let on_alice = read_until_message(&mut alice_sees, "printer?").await;
    read_until_message(&mut carol_sees, "printer?").await;
    let message_id = on_alice.last().expect("the message").id.clone();

    // The machine user types: alice's stream says who, and the resume point stays put.
    let (status, body) = carol
        .post(&format!("/m/{session}/api/typing"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let typing = next_named(&mut alice_sees, "typing", "machine_user").await;
    assert_eq!(typing.data["session"], session.as_str());
    assert_eq!(typing.data["typing"], true);
    assert_eq!(typing.data["who"]["kind"], "machine_user");
    assert_eq!(typing.data["who"]["id"], "pc1.sales.acme");
    assert_eq!(typing.data["who"]["name"], "carol");
    assert!(typing.data["at"].as_u64().is_some(), "{:?}", typing.data);
    assert!(typing.data.get("seq").is_none(), "{:?}", typing.data);
    assert_eq!(
        typing.id, message_id,
        "a signal has no id: the last id is still the message's"
    );

    // She has seen the message, then stops typing.
    let (status, body) = carol
        .post(&format!("/m/{session}/api/seen"), &json!({"seq": first}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let seen = next_named(&mut alice_sees, "seen", "machine_user").await;
    assert_eq!(seen.data["seq"], first);
    assert_eq!(seen.data["who"]["kind"], "machine_user");
    assert_eq!(seen.id, message_id);
    let (status, _) = carol
        .post(
            &format!("/m/{session}/api/typing"),
            &json!({"typing": false}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stopped = next_named(&mut alice_sees, "typing", "machine_user").await;
    assert_eq!(stopped.data["typing"], false);

    // The operator types: the machine user reads her name, never her login ID.
    let (status, body) = alice
        .post(&format!("/api/sessions/{session}/typing"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let typing = next_named(&mut carol_sees, "typing", "operator").await;
    assert_eq!(typing.data["who"]["kind"], "operator");
    let alias = typing.data["who"]["id"].as_str().expect("an id");
    assert!(alias.starts_with("op-") && alias != "alice", "{alias}");
    assert!(
        !typing.data.to_string().contains("\"alice\""),
        "{:?}",
        typing.data
    );
    let (status, body) = alice
        .post(
            &format!("/api/sessions/{session}/seen"),
            &json!({"seq": first}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let seen = next_named(&mut carol_sees, "seen", "operator").await;
    assert_eq!(seen.data["who"]["id"], alias);

    // A window opened again asks what each member has seen (kept a short while).
    let (status, latest) = alice.get(&format!("/api/sessions/{session}/seen")).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    let by = |kind: &str| {
        latest
            .as_array()
            .expect("a list")
            .iter()
            .find(|s| s["who"]["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no seen of a {kind} in {latest}"))
    };
    assert_eq!(by("machine_user")["seq"], first);
    assert_eq!(by("operator")["who"]["id"], "alice");
    let (status, latest) = carol.get(&format!("/m/{session}/api/seen")).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert!(!latest.to_string().contains("\"alice\""), "{latest}");
    assert!(latest.to_string().contains(alias), "{latest}");

    // A stream opened now replays the chat without a single signal, and the transcript has
    // none either.
    let mut replayed = alice.session_events(&session).await;
    alice.send(&session, "a2", "after the signals").await;
    let events = read_until_message(&mut replayed, "after the signals").await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        names.iter().all(|n| ["hello", "message"].contains(n)),
        "{names:?}"
    );
    let (status, transcript) = alice
        .get(&format!("/api/sessions/{session}/transcript?format=json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&Value> = transcript["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert!(
        types.iter().all(|t| *t != "typing" && *t != "seen"),
        "{types:?}"
    );
    // Resuming from the message's id repeats nothing and misses nothing.
    let mut resumed = alice
        .events(
            &format!("/api/events?sessions={session}"),
            Some(message_id.parse().expect("a seq")),
        )
        .await;
    let events = read_until_message(&mut resumed, "after the signals").await;
    assert_eq!(
        texts(&events),
        vec!["after the signals".to_string()],
        "{events:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signals_are_refused_and_non_members_may_not_send_any() {
    let s = Scenario::alice_and_carol_on_pc1()
        .operator("dave")
        .start()
        .await;
    let alice = s.operator("alice");
    let dave = s.operator("dave");
    let (session, carol) = s.open_chat().await;
    let (_, sent) = alice.send(&session, "a1", "hello").await;
    let last = sent["seq"].as_u64().expect("a seq");
    let typing = format!("/api/sessions/{session}/typing");
    let seen = format!("/api/sessions/{session}/seen");

    // Not a member (dave could join: his scope covers the machine), an unknown session.
    let (status, body) = dave.post(&typing, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = dave.post(&seen, &json!({"seq": last})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = dave.get(&seen).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let unknown = "01JD0000000000000000000000";
    let (status, _) = alice
        .post(&format!("/api/sessions/{unknown}/typing"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bad bodies: each a clear 400.
    for (path, body) in [
        (&seen, json!({})),
        (&seen, json!({"seq": "7"})),
        (&seen, json!({"seq": -1})),
        (&seen, json!({"seq": 0})),
        (&seen, json!({"seq": last + 1000})),
        (&seen, json!({"seq": last, "extra": 1})),
        (&typing, json!({"typing": "yes"})),
        (&typing, json!({"who": "bob"})),
    ] {
        let (status, answer) = alice.post(path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["error"], "bad_request", "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, answer) = carol
        .post(&format!("/m/{session}/api/seen"), &json!({"seq": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Typing in an ended chat is a conflict; seeing it is fine.
    let (status, _) = alice
        .post(&format!("/api/sessions/{session}/end"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = alice.post(&typing, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = alice.post(&seen, &json!({"seq": last})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    s.shutdown().await;
}
