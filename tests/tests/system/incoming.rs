//! F5 incoming chats and F8 operator ↔ operator chat, on the Chat page's stream
//! (`GET /api/machines/events`): who is listed (present, not hidden, scope covering what the
//! filter shows) and how that changes live; a chat between operators waiting for its answer
//! (`incoming` / `incoming_gone`), not lost across reconnects, answered by joining; a chat a
//! machine user starts with an operator; and bad requests refused with nothing started.

use std::time::Duration;

use natter_actors::protocol::{SessionCommand, SessionReply, SessionRequest};
use natter_system_tests::*;
use serde_json::{Value, json};

/// The Chat page's stream of `b`, with `filter`.
async fn chat_page(b: &Browser, filter: &str) -> Sse {
    let sse = b
        .events(&format!("/api/machines/events?filter={filter}"), None)
        .await;
    assert_eq!(sse.status, StatusCode::OK, "{}", sse.error_body);
    sse
}

/// Reads `sse` until an event named `name` satisfies `done`; returns its data.
async fn wait_event(sse: &mut Sse, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(e) = sse.next(left).await else {
            panic!("no {name} event as expected; saw {seen:?}");
        };
        if e.event == name && done(&e.data) {
            return e.data;
        }
        seen.push((e.event, e.data));
    }
}

/// Sends `request` to session `id`'s actor as a gateway does; its answer.
async fn command(client: &async_nats::Client, id: &str, request: &SessionRequest) -> SessionReply {
    let body = serde_json::to_vec(request).unwrap();
    let subject = natter_actors::subjects::session_command(id);
    let answer = client
        .request(subject, body.into())
        .await
        .expect("the session answers");
    serde_json::from_slice(&answer.payload).unwrap()
}

/// The usernames in an `operators` event.
fn listed(data: &Value) -> Vec<String> {
    data.as_array()
        .expect("a list")
        .iter()
        .map(|o| o["id"].as_str().expect("an id").to_string())
        .collect()
}

/// Waits until `sse`'s operator list is exactly `who`.
async fn wait_listed(sse: &mut Sse, who: &[&str]) {
    wait_event(sse, "operators", |d| listed(d) == who).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_on_the_chat_page_are_listed_live_by_presence_scope_filter_and_option() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .machine("pc2.support.acme", "dave")
        .operator("alice")
        .scoped_operator("bob", &["sales.acme"])
        .start()
        .await;
    let alice = system.operator("alice");
    let bob = system.operator("bob");

    // Alone on the Chat page: an empty list, right after the machines.
    let mut page = chat_page(&alice, "").await;
    assert_eq!(page.next(WAIT).await.expect("machines").event, "machines");
    let first = page.next(WAIT).await.expect("operators");
    assert_eq!(
        (first.event.as_str(), listed(&first.data)),
        ("operators", vec![])
    );

    // Bob opens his Chat page. Alice's whole list shows support.acme too, which bob's scope
    // does not cover: he is not listed there, but under a filter showing sales.acme only.
    let mut bobs_page = chat_page(&bob, "").await;
    // Bob (scope sales.acme) lists alice, an admin: her scope covers everything he sees.
    wait_listed(&mut bobs_page, &["alice"]).await;
    page.expect_quiet(Duration::from_millis(300)).await;
    let mut sales = chat_page(&alice, "sales.acme").await;
    wait_listed(&mut sales, &["bob"]).await;
    let mut support = chat_page(&alice, "*.support.acme").await;
    wait_event(&mut support, "operators", |d| listed(d).is_empty()).await;

    // Bob hides his name from operators: gone from alice's list, live; shown again after.
    let hide = |on: bool| {
        json!({"play_tone": false, "auto_close": false,
               "hide_from_operators": on, "hide_from_machine_users": false})
    };
    let (s, b) = bob.put("/api/me/options", &hide(true)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_listed(&mut sales, &[]).await;
    let (s, _) = bob.put("/api/me/options", &hide(false)).await;
    assert_eq!(s, StatusCode::OK);
    wait_listed(&mut sales, &["bob"]).await;

    // Bob closes his Chat page: he leaves alice's list at once.
    bobs_page.close();
    wait_listed(&mut sales, &[]).await;
    // He logs on again elsewhere and comes back.
    let mut again = chat_page(&bob, "").await;
    wait_listed(&mut sales, &["bob"]).await;
    // Logging out ends his stream and his presence.
    let (s, _) = bob.post("/api/logout", &json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    drop(again.next(Duration::from_secs(10)).await);
    again.close();
    wait_listed(&mut sales, &[]).await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_between_operators_waits_for_its_answer_then_goes_both_ways() {
    let system = Scenario::new()
        .operator("alice")
        .operator("bob")
        .operator("erin")
        .start()
        .await;
    let (alice, bob, erin) = (
        system.operator("alice"),
        system.operator("bob"),
        system.operator("erin"),
    );
    let mut alices_page = chat_page(&alice, "").await;
    let mut bobs_page = chat_page(&bob, "").await;
    wait_listed(&mut alices_page, &["bob"]).await;

    // Bad requests start nothing.
    for (body, status) in [
        (json!({"operator": "alice"}), StatusCode::BAD_REQUEST),
        (json!({"operator": "nobody"}), StatusCode::NOT_FOUND),
        // erin is logged in but not on the Chat page.
        (json!({"operator": "erin"}), StatusCode::NOT_FOUND),
        (json!({}), StatusCode::BAD_REQUEST),
        (
            json!({"operator": "bob", "machine": "pc1.acme"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"operator": 7}), StatusCode::BAD_REQUEST),
    ] {
        let (s, b) = alice.post("/api/chats", &body).await;
        assert_eq!(s, status, "{body} → {b}");
        assert!(b["message"].is_string(), "{b}");
    }

    // Alice starts a chat with bob: it waits for him.
    let (s, started) = alice.post("/api/chats", &json!({"operator": "bob"})).await;
    assert_eq!(s, StatusCode::CREATED, "{started}");
    let id = session_id(&started);
    let view = &started["session"];
    assert_eq!(view["machine"], "");
    assert_eq!(view["members"][0]["id"], "alice");
    assert_eq!(view["invited"][0]["id"], "bob");
    let incoming = wait_event(&mut bobs_page, "incoming", |d| d["session"] == id).await;
    assert_eq!(incoming["from"]["id"], "alice");
    assert_eq!(incoming["machine"], "");
    assert_eq!(incoming["handoff"], false);

    // Asking again joins the chat in progress between the two.
    let (s, again) = alice.post("/api/chats", &json!({"operator": "bob"})).await;
    assert_eq!((s, session_id(&again)), (StatusCode::OK, id.clone()));

    // Not lost: a new Chat page of bob's (a reload) is told again.
    bobs_page.close();
    let mut bobs_page = chat_page(&bob, "").await;
    wait_event(&mut bobs_page, "incoming", |d| d["session"] == id).await;

    // A third operator may neither read nor join it; bob may look before answering.
    assert_eq!(
        erin.get(&format!("/api/sessions/{id}")).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, _) = erin
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, seen) = bob.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(
        (s, &seen["invited"][0]["id"]),
        (StatusCode::OK, &json!("bob"))
    );
    // …but not write before answering.
    assert_eq!(bob.send(&id, "early", "hi").await.0, StatusCode::FORBIDDEN);

    // Bob answers: a member now, and the incoming chat is gone from his page.
    let (s, joined) = bob
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{joined}");
    assert_eq!(joined["invited"], json!([]));
    assert_eq!(joined["members"].as_array().map(Vec::len), Some(2));
    wait_event(&mut bobs_page, "incoming_gone", |d| d["session"] == id).await;

    // Both ways, each once, in order.
    let mut alices_chat = alice.session_events(&id).await;
    let mut bobs_chat = bob.session_events(&id).await;
    assert_eq!(
        alice.send(&id, "a1", "hello bob").await.0,
        StatusCode::CREATED
    );
    assert_eq!(bob.send(&id, "b1", "hi alice").await.0, StatusCode::CREATED);
    for chat in [&mut alices_chat, &mut bobs_chat] {
        let got = chat.read_messages(2).await;
        assert_eq!(texts(&got), ["hello bob", "hi alice"]);
    }

    // Ended, then restarted by bob: alice is asked again, on her Chat page.
    let (s, _) = alice
        .post(&format!("/api/sessions/{id}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = bob
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let asked = wait_event(&mut alices_page, "incoming", |d| d["session"] == id).await;
    assert_eq!(asked["from"]["id"], "bob");
    let (s, _) = alice
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_event(&mut alices_page, "incoming_gone", |d| d["session"] == id).await;

    // Ended again, the pair is free: the next request starts a new chat.
    let (s, _) = bob
        .post(&format!("/api/sessions/{id}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, next) = alice.post("/api/chats", &json!({"operator": "bob"})).await;
    assert_eq!(s, StatusCode::CREATED, "{next}");
    assert_ne!(session_id(&next), id);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_chat_that_ends_stops_waiting() {
    let system = Scenario::new()
        .operator("alice")
        .operator("bob")
        .start()
        .await;
    let (alice, bob) = (system.operator("alice"), system.operator("bob"));
    let mut bobs_page = chat_page(&bob, "").await;
    let mut alices_page = chat_page(&alice, "").await;
    wait_listed(&mut alices_page, &["bob"]).await;
    let (_, started) = alice.post("/api/chats", &json!({"operator": "bob"})).await;
    let id = session_id(&started);
    wait_event(&mut bobs_page, "incoming", |d| d["session"] == id).await;
    let (s, _) = alice
        .post(&format!("/api/sessions/{id}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_event(&mut bobs_page, "incoming_gone", |d| d["session"] == id).await;
    // And a new page of his does not show it.
    bobs_page.close();
    let mut bobs_page = chat_page(&bob, "").await;
    wait_event(&mut bobs_page, "operators", |_| true).await;
    if let Some(e) = bobs_page.next(Duration::from_millis(500)).await {
        assert_ne!(e.event, "incoming", "{e:?}");
    }
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_a_machine_user_starts_reaches_the_operator_as_an_incoming_chat() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let mut page = chat_page(&alice, "").await;

    // What a gateway sends once the machine's role allows it (the start page's request).
    let id = ulid::Ulid::new().to_string();
    let request = SessionRequest {
        cmd: SessionCommand::OpenFromMachine {
            machine: "pc1.sales.acme".into(),
            user: "carol".into(),
            operator: natter_actors::protocol::Participant {
                kind: natter_actors::protocol::ParticipantKind::Operator,
                id: "alice".into(),
                name: "Alice".into(),
            },
        },
        scope: Default::default(),
        epoch: None,
    };
    let client = system.nats.broker_client().await;
    let ack = command(&client, &id, &request)
        .await
        .expect("the chat starts");
    let token = ack.token.expect("a link token for the machine user");

    let incoming = wait_event(&mut page, "incoming", |d| d["session"] == id).await;
    assert_eq!(incoming["machine"], "pc1.sales.acme");
    assert_eq!(incoming["from"]["kind"], "machine_user");
    assert_eq!(incoming["from"]["name"], "carol");

    // The machine user logs in with the token once; they see the operator by name only.
    let user = Browser::new(&system.node.base);
    let (s, view) = user
        .post(&format!("/m/{id}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["invited"][0]["name"], "Alice");
    assert_ne!(view["invited"][0]["id"], "alice");
    let (s, _) = Browser::new(&system.node.base)
        .post(&format!("/m/{id}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the token works once");

    // A second start while it is in progress is refused (the machine has its chat).
    let mut second = request.clone();
    second.cmd = request.cmd.clone();
    let other = ulid::Ulid::new().to_string();
    let conflict = command(&client, &other, &second)
        .await
        .expect_err("one chat per machine");
    assert_eq!(conflict.session.as_deref(), Some(id.as_str()));

    // Alice answers; the user's message reaches her, and hers the user.
    let (s, _) = alice
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_event(&mut page, "incoming_gone", |d| d["session"] == id).await;
    let mut alices_chat = alice.session_events(&id).await;
    let (s, _) = user.send_as_machine_user(&id, "u1", "my printer").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(alice.send(&id, "a1", "on it").await.0, StatusCode::CREATED);
    assert_eq!(
        texts(&alices_chat.read_messages(2).await),
        ["my printer", "on it"]
    );
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_incoming_chats_cross_nodes() {
    let nats = TestNats::start().await;
    let first = TestNode::start(nats.node_config()).await;
    let second = TestNode::start(nats.node_config()).await;
    let alice = first.operator("alice").await;
    let bob = second.operator("bob").await;

    // Each on the Chat page of another node: each lists the other.
    let mut alices_page = chat_page(&alice, "").await;
    let mut bobs_page = chat_page(&bob, "").await;
    wait_listed(&mut alices_page, &["bob"]).await;
    wait_listed(&mut bobs_page, &["alice"]).await;

    // Alice's chat request reaches bob's page on the other node; he answers there.
    let (s, started) = alice.post("/api/chats", &json!({"operator": "bob"})).await;
    assert_eq!(s, StatusCode::CREATED, "{started}");
    let id = session_id(&started);
    wait_event(&mut bobs_page, "incoming", |d| d["session"] == id).await;
    let (s, _) = bob
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_event(&mut bobs_page, "incoming_gone", |d| d["session"] == id).await;

    // Bob's node goes away: he leaves alice's list.
    second.shutdown().await;
    wait_listed(&mut alices_page, &[]).await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_handed_to_another_operator_reaches_them_and_the_user_sees_who_took_over() {
    let system = Scenario::alice_and_carol_on_pc1()
        .operator("bob")
        .scoped_operator("erin", &["globex"])
        .start()
        .await;
    let (alice, bob, erin) = (
        system.operator("alice"),
        system.operator("bob"),
        system.operator("erin"),
    );
    let (id, user) = system.open_chat().await;
    let mut bobs_page = chat_page(&bob, "").await;
    let mut erins_page = chat_page(&erin, "").await;
    wait_event(&mut erins_page, "operators", |_| true).await;
    let mut users_stream = user.events(&format!("/m/{id}/api/events"), None).await;
    let handoff = format!("/api/sessions/{id}/handoff");

    // Only to an operator on the Chat page whose scope covers the machine.
    for (body, status) in [
        (json!({"operator": "erin"}), StatusCode::NOT_FOUND),
        (json!({"operator": "nobody"}), StatusCode::NOT_FOUND),
        (json!({"operator": "alice"}), StatusCode::NOT_FOUND),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let (s, b) = alice.post(&handoff, &body).await;
        assert_eq!(s, status, "{body} → {b}");
    }
    // Not by someone outside the chat.
    let (s, _) = bob.post(&handoff, &json!({"operator": "bob"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Alice hands it to bob: his incoming chat, from alice, with the machine.
    let (s, view) = alice.post(&handoff, &json!({"operator": "bob"})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["invited"][0]["id"], "bob");
    let incoming = wait_event(&mut bobs_page, "incoming", |d| d["session"] == id).await;
    assert_eq!(incoming["from"]["id"], "alice");
    assert_eq!(incoming["machine"], "pc1.sales.acme");
    assert_eq!(incoming["handoff"], true);

    // The machine user sees who hands it to whom, by name (no login IDs)…
    let handed = wait_event(&mut users_stream, "message", |d| d["type"] == "handed_off").await;
    assert_eq!(handed["by"]["name"], "alice (operator)");
    assert_eq!(handed["to"]["name"], "bob (operator)");
    assert_ne!(handed["to"]["id"], "bob");
    // …and who took over.
    let (s, _) = bob
        .post(&format!("/api/sessions/{id}/join"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_event(&mut bobs_page, "incoming_gone", |d| d["session"] == id).await;
    let joined = wait_event(&mut users_stream, "message", |d| d["type"] == "joined").await;
    assert_eq!(joined["who"]["name"], "bob (operator)");

    // A member cannot be handed it again; an ended chat cannot be handed on.
    let (s, _) = alice.post(&handoff, &json!({"operator": "bob"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = alice
        .post(&format!("/api/sessions/{id}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = bob.post(&handoff, &json!({"operator": "alice"})).await;
    assert_ne!(s, StatusCode::OK);
    system.shutdown().await;
}
