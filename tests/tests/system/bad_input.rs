//! Bad input gets a clean 4xx JSON error, changes nothing, and leaks nothing.

use std::time::Duration;

use natter_system_tests::*;
use serde_json::{Value, json};

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message for people: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clean_errors_and_lose_nothing() {
    let mut system = Scenario::alice_and_carol_on_pc1()
        .operator("mallory")
        .start()
        .await;
    let alice = system.operator("alice");
    let (session, carol) = system.open_chat().await;

    bad_bodies_are_refused(&alice, &session).await;
    unknown_sessions_are_not_found(&alice).await;
    non_members_learn_nothing(&system.operator("mallory"), &session).await;
    anonymous_requests_are_refused(&Browser::new(&system.node.base), &session).await;
    forged_requests_are_refused(&alice, &session).await;
    machine_user_mistakes_are_refused(&mut system, &carol, &session).await;
    bad_stream_parameters_are_refused(&alice, &session).await;

    // Through all of that the session kept working and holds exactly the good messages.
    let (s, _) = alice.send(&session, "good", "still fine").await;
    assert_eq!(s, StatusCode::CREATED);
    let mut sse = alice.session_events(&session).await;
    let got = sse.read_messages(2).await;
    assert_eq!(texts(&got), ["é".repeat(2048), "still fine".to_string()]);
    sse.expect_quiet(Duration::from_millis(300)).await;
    system.shutdown().await;
}

async fn bad_bodies_are_refused(alice: &Browser, session: &str) {
    let msgs = format!("/api/sessions/{session}/messages");
    // Oversized message (limit 4096 bytes).
    let (s, b) = alice.send(session, "big", &"x".repeat(4097)).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Exactly at the limit is fine.
    let (s, _) = alice.send(session, "ok-limit", &"é".repeat(2048)).await;
    assert_eq!(s, StatusCode::CREATED);
    // Body over the body limit.
    let (s, b) = alice
        .post_raw(&msgs, "application/json", vec![b' '; 70 * 1024])
        .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Invalid JSON, wrong shape, wrong content type, invalid UTF-8.
    let (s, b) = alice
        .post_raw(&msgs, "application/json", b"{not json".to_vec())
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = alice.post(&msgs, &json!({"text": 5})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = alice.post_raw(&msgs, "text/plain", b"hello".to_vec()).await;
    assert_error(
        s,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (s, b) = alice
        .post_raw(
            &msgs,
            "application/json",
            b"{\"id\":\"u\",\"text\":\"\xff\xfe\"}".to_vec(),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    // Empty text, bad client ids.
    let (s, b) = alice.send(session, "empty", "   \n ").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = alice.send(session, "has space", "x").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = alice.send(session, &"i".repeat(65), "x").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
}

async fn unknown_sessions_are_not_found(alice: &Browser) {
    // Unknown sessions: a well-formed id nobody opened, and garbage.
    let unknown = ulid::Ulid::new().to_string();
    let (s, b) = alice.send(&unknown, "u1", "hello?").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = alice.send("not-a-session", "u1", "hello?").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = alice.get(&format!("/api/sessions/{unknown}")).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
}

/// Another operator can neither read, stream nor write the session.
async fn non_members_learn_nothing(mallory: &Browser, session: &str) {
    let (s, b) = mallory.send(session, "m1", "let me in").await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    let (s, b) = mallory.get(&format!("/api/sessions/{session}")).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        b.get("members").is_none() && b.get("machine").is_none(),
        "leaks nothing: {b}"
    );
    let sse = mallory.session_events(session).await;
    assert_eq!(sse.status, StatusCode::FORBIDDEN);
    assert!(
        !sse.error_body.contains("pc1") && !sse.error_body.contains("carol"),
        "leaks nothing: {}",
        sse.error_body
    );
    let (s, b) = mallory
        .post(&format!("/api/sessions/{session}/end"), &json!({}))
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
}

async fn anonymous_requests_are_refused(anonymous: &Browser, session: &str) {
    let (s, b) = anonymous.send(session, "a1", "hi").await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, b) = anonymous.get("/api/machines").await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    let sse = anonymous.session_events(session).await;
    assert_eq!(sse.status, StatusCode::UNAUTHORIZED);
    let (s, b) = anonymous
        .post(
            "/api/login",
            &json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
}

/// CSRF: no marker header, or a foreign origin.
async fn forged_requests_are_refused(alice: &Browser, session: &str) {
    let msgs = format!("/api/sessions/{session}/messages");
    let r = alice
        .client
        .post(format!("{}{msgs}", alice.base))
        .json(&json!({"id": "csrf1", "text": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = alice
        .client
        .post(format!("{}{msgs}", alice.base))
        .header("x-natter", "1")
        .header("origin", "http://evil.example")
        .json(&json!({"id": "csrf2", "text": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// A wrong token, and a machine user's login used for another session.
async fn machine_user_mistakes_are_refused(system: &mut Fixture, carol: &Browser, session: &str) {
    let anonymous = Browser::new(&system.node.base);
    let (s, b) = anonymous
        .post(
            &format!("/m/{session}/api/login"),
            &json!({"token": "0".repeat(48)}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    system.add_machine("pc2.sales.acme", "dave").await;
    let (other_session, _) = system.open_chat_between("alice", "pc2.sales.acme").await;
    let (s, b) = carol
        .send_as_machine_user(&other_session, "x1", "wrong session")
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
}

async fn bad_stream_parameters_are_refused(alice: &Browser, session: &str) {
    let sse = alice.events("/api/events", None).await;
    assert_eq!(sse.status, StatusCode::BAD_REQUEST);
    let sse = alice
        .events(&format!("/api/events?sessions={session}:abc"), None)
        .await;
    assert_eq!(sse.status, StatusCode::BAD_REQUEST);
    let r = alice
        .client
        .get(format!("{}/api/events?sessions={session}", alice.base))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Unknown endpoint and wrong method: JSON errors too.
    let (s, b) = alice.get("/api/nope").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_cannot_publish_session_commands() {
    let system = Scenario::new().start().await;
    let agent = system.nats.agent_client("pc1.sales.acme").await;
    let forged = serde_json::to_vec(
        &json!({"cmd": "view", "by": {"kind": "operator", "id": "alice", "name": "A"}}),
    )
    .unwrap();
    let session = ulid::Ulid::new().to_string();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        agent.request(
            natter_actors::subjects::session_command(&session),
            forged.into(),
        ),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "an agent got an answer from a session actor"
    );
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_with_nobody_logged_on_cannot_be_chatted_with() {
    let system = Scenario::new()
        .machine("kiosk1.lobby.globex", None)
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let (s, b) = alice.chat_with("kiosk1.lobby.globex").await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = alice.chat_with("nope.nowhere").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = alice.chat_with("Bad Id").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    system.shutdown().await;
}
