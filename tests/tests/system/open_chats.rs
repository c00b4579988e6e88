//! B7 an operator's open chats, kept on the server per operator (`/api/me/chats`): remembered
//! by a chat window, listed on any browser of that operator (newest first, ended ones marked),
//! forgotten on request, never another operator's, and only a member's chat.

use natter_system_tests::*;
use serde_json::{Value, json};

/// The session IDs of `GET /api/me/chats`.
async fn listed(b: &Browser) -> Vec<String> {
    let (s, list) = b.get("/api/me/chats").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v["id"].as_str().expect("an id").to_string())
        .collect()
}

async fn put(b: &Browser, path: &str) -> (StatusCode, Value) {
    let r = b
        .client
        .put(b.url(path))
        .header("x-natter", "1")
        .header("origin", &b.base)
        .send()
        .await
        .expect("PUT");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn delete(b: &Browser, path: &str) -> StatusCode {
    let r = b
        .client
        .delete(b.url(path))
        .header("x-natter", "1")
        .header("origin", &b.base)
        .send()
        .await
        .expect("DELETE");
    r.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_chats_follow_the_operator_to_any_browser() {
    let system = Scenario::alice_and_carol_on_pc1()
        .machine("pc2.sales.acme", "dave")
        .operator("bob")
        .start()
        .await;
    let (alice, bob) = (system.operator("alice"), system.operator("bob"));
    let first = alice.new_chat("pc1.sales.acme").await;
    let second = alice.new_chat("pc2.sales.acme").await;
    assert!(listed(&alice).await.is_empty());

    // Two windows open (the second last): both listed, newest first, on another browser too.
    for id in [&first, &second] {
        let (s, b) = put(&alice, &format!("/api/me/chats/{id}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    assert_eq!(listed(&alice).await, [second.clone(), first.clone()]);
    let elsewhere = Browser::new(&system.node.base);
    let (s, _) = elsewhere
        .post(
            "/api/login",
            &json!({"username": "alice", "password": operator_password("alice")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listed(&elsewhere).await, [second.clone(), first.clone()]);
    // Opened again: first again.
    put(&alice, &format!("/api/me/chats/{first}")).await;
    assert_eq!(listed(&elsewhere).await, [first.clone(), second.clone()]);

    // Bob's list is his own; he may not remember a chat he is not in, nor an unknown one.
    assert!(listed(&bob).await.is_empty());
    let (s, _) = put(&bob, &format!("/api/me/chats/{first}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = put(&bob, "/api/me/chats/01JD0000000000000000000000").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(listed(&bob).await.is_empty());

    // An ended chat stays listed, marked; a forgotten one is gone (forgetting again is fine).
    let (s, _) = alice
        .post(&format!("/api/sessions/{second}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = alice.get("/api/me/chats").await;
    assert_eq!(list[1]["ended"], true, "{list}");
    assert_eq!(
        delete(&alice, &format!("/api/me/chats/{first}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(&alice, &format!("/api/me/chats/{first}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(listed(&alice).await, [second]);

    // Without a login: 401.
    let anonymous = Browser::new(&system.node.base);
    assert_eq!(
        anonymous.get("/api/me/chats").await.0,
        StatusCode::UNAUTHORIZED
    );
    system.shutdown().await;
}
