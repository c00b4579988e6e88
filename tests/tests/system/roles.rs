//! Machine roles and "a machine user starts a chat" (issue 11, item 3): admins manage roles
//! (everyone else gets 403), the agent's start request is refused with a reason unless the
//! machine's role has the right, the start link works once, the start page lists only the
//! operators the machine user may reach (names and aliases, never login IDs), and a chat started
//! there invites the chosen operator.

use natter_actors::protocol::StartRefusal;
use natter_agent::ChatRequest;
use natter_system_tests::*;
use serde_json::{Value, json};

const PC1: &str = "pc1.sales.acme";

/// Opens `username`'s Chat page (its machine stream): they are present while it is open.
async fn chat_page(s: &Fixture, username: &str) -> Sse {
    let sse = s
        .operator(username)
        .events("/api/machines/events", None)
        .await;
    assert_eq!(sse.status, StatusCode::OK, "{}", sse.error_body);
    sse
}

/// Reads `sse` until its operator list names everyone in `who`.
async fn wait_listed(sse: &mut Sse, who: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = sse
            .next(left)
            .await
            .expect("an operators event listing everyone");
        let listed = |id: &&str| {
            e.data
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["id"] == *id))
        };
        if e.event == "operators" && who.iter().all(listed) {
            return;
        }
    }
}

/// The token of a start link the agent opened.
fn start_token(url: &str) -> String {
    let (page, token) = url.split_once("#t=").expect("a start link with a token");
    assert!(page.ends_with("/start/"), "a start page link: {url}");
    token.to_string()
}

/// Asks for a chat as the machine user of `machine` does (`natter-agent chat`).
async fn ask(s: &Fixture, machine: &str) -> ChatRequest {
    s.agent(machine).handle.request_chat().await
}

fn not_allowed(outcome: &ChatRequest) -> bool {
    matches!(
        outcome,
        ChatRequest::Refused {
            reason: StartRefusal::NotAllowed,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_machine_roles_and_bad_input_is_refused_clearly() {
    let s = Scenario::alice_and_carol_on_pc1()
        .scoped_operator("bob", &["sales.acme"])
        .start()
        .await;
    let (alice, bob) = (s.operator("alice"), s.operator("bob"));

    let (status, body) = alice
        .post(
            "/api/roles",
            &json!({"name": "kiosk", "may_start_chat": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"name": "kiosk", "may_start_chat": false, "machines": []})
    );
    let (status, body) = alice
        .send_json(
            "PUT",
            "/api/machines/pc1.sales.acme/role",
            &json!({"role": "kiosk"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = alice
        .send_json("PUT", "/api/roles/kiosk", &json!({"may_start_chat": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"name": "kiosk", "may_start_chat": true, "machines": [PC1]})
    );
    let (status, list) = alice.get("/api/roles").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list,
        json!([{"name": "kiosk", "may_start_chat": true, "machines": [PC1]}])
    );

    // A non-admin is refused, and learns nothing.
    for (method, path, body) in [
        ("GET", "/api/roles", json!({})),
        ("POST", "/api/roles", json!({"name": "x"})),
        ("PUT", "/api/roles/kiosk", json!({"may_start_chat": false})),
        ("DELETE", "/api/roles/kiosk", json!({})),
        (
            "PUT",
            "/api/machines/pc1.sales.acme/role",
            json!({"role": null}),
        ),
    ] {
        let (status, answer) = match method {
            "GET" => bob.get(path).await,
            "POST" => bob.post(path, &body).await,
            _ => bob.send_json(method, path, &body).await,
        };
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains(PC1), "{answer}");
    }

    // Bad input: a clear error, nothing changed.
    let bad: [(&str, &str, Value, StatusCode, &str); 7] = [
        (
            "POST",
            "/api/roles",
            json!({"name": "Kiosk Users"}),
            StatusCode::BAD_REQUEST,
            "not a role name",
        ),
        (
            "POST",
            "/api/roles",
            json!({"name": "kiosk"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            "POST",
            "/api/roles",
            json!({"name": "x", "admin": true}),
            StatusCode::BAD_REQUEST,
            "admin",
        ),
        (
            "PUT",
            "/api/roles/nope",
            json!({"may_start_chat": true}),
            StatusCode::NOT_FOUND,
            "no role nope",
        ),
        (
            "PUT",
            "/api/roles/kiosk",
            json!({"may_start_chat": "yes"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "PUT",
            "/api/machines/not-a-machine/role",
            json!({"role": "kiosk"}),
            StatusCode::BAD_REQUEST,
            "not a machine ID",
        ),
        (
            "PUT",
            "/api/machines/pc1.sales.acme/role",
            json!({"role": "nope"}),
            StatusCode::NOT_FOUND,
            "no role nope",
        ),
    ];
    for (method, path, body, expected, says) in bad {
        let (status, answer) = match method {
            "POST" => alice.post(path, &body).await,
            _ => alice.send_json(method, path, &body).await,
        };
        assert_eq!(status, expected, "{method} {path} {body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{method} {path}: {message}");
    }
    let (_, unchanged) = alice.get("/api/roles").await;
    assert_eq!(unchanged, list);

    // Unassigning and deleting.
    let (status, _) = alice
        .send_json(
            "PUT",
            "/api/machines/pc1.sales.acme/role",
            &json!({"role": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = alice
        .send_json("DELETE", "/api/roles/kiosk", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = alice.get("/api/roles").await;
    assert_eq!(list, json!([]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_user_starts_a_chat_only_where_the_role_allows_it() {
    let s = Scenario::alice_and_carol_on_pc1()
        .scoped_operator("bob", &["sales.acme"])
        .scoped_operator("hidden", &["sales.acme"])
        .scoped_operator("globex", &["globex"])
        .start()
        .await;
    let alice = s.operator("alice");
    let (status, _) = s
        .operator("hidden")
        .send_json(
            "PUT",
            "/api/me/options",
            &json!({"hide_from_machine_users": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut pages = Vec::new();
    for who in ["hidden", "globex", "bob", "alice"] {
        pages.push(chat_page(&s, who).await);
    }
    // Everyone is present (the hidden one hides from machine users only).
    wait_listed(&mut pages[3], &["hidden", "bob"]).await;

    // No role: refused, with its reason.
    let outcome = ask(&s, PC1).await;
    assert!(not_allowed(&outcome), "{outcome}");
    // A role without the right: refused.
    alice.post("/api/roles", &json!({"name": "kiosk"})).await;
    let (status, _) = alice
        .send_json(
            "PUT",
            "/api/machines/pc1.sales.acme/role",
            &json!({"role": "kiosk"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let outcome = ask(&s, PC1).await;
    assert!(not_allowed(&outcome), "{outcome}");
    assert!(s.agent(PC1).opener.opened.lock().unwrap().is_empty());

    // The right on: the agent opens the start page.
    alice
        .send_json("PUT", "/api/roles/kiosk", &json!({"may_start_chat": true}))
        .await;
    assert_eq!(ask(&s, PC1).await, ChatRequest::Opened);
    let (machine, url) = s.agent(PC1).opener.opened.lock().unwrap()[0].clone();
    assert_eq!(machine, PC1);
    let token = start_token(&url);

    let carol = Browser::new(&s.node.base);
    let (status, page) = carol
        .post("/start/api/login", &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["machine"], PC1);
    assert_eq!(page["user"], "carol");
    let names: Vec<&str> = page["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    // In scope and not hiding: listed by name; the hidden one and the one of another
    // organisation are not. Ids are aliases, never login IDs.
    assert_eq!(names, ["alice (operator)", "bob (operator)"]);
    for op in page["operators"].as_array().unwrap() {
        let id = op["id"].as_str().unwrap();
        assert!(
            id.starts_with("op-") && !["alice", "bob"].contains(&id),
            "{id}"
        );
    }
    let (status, again) = carol.get("/start/api/operators").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, page);

    // The token works once; a wrong one gets the same answer.
    let other = Browser::new(&s.node.base);
    let (status, used) = other
        .post("/start/api/login", &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, wrong) = other
        .post(
            "/start/api/login",
            &json!({"token": format!("nst_{}", "0".repeat(64))}),
        )
        .await;
    assert_eq!(used, wrong);
    assert_eq!(
        other.get("/start/api/operators").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Bad input: a clear error.
    let (status, answer) = carol
        .post("/start/api/chats", &json!({"operator": "alice"}))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a login ID is not an alias: {answer}"
    );
    let (status, _) = carol.post("/start/api/chats", &json!({"who": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Starting the chat with bob: the page goes to the chat, logged in; bob is invited.
    let bob_alias = page["operators"][1]["id"].as_str().unwrap();
    let (status, started) = carol
        .post("/start/api/chats", &json!({"operator": bob_alias}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let session = started["session"].as_str().unwrap().to_string();
    assert_eq!(started["url"], format!("/m/{session}/"));
    let (status, view) = carol.get(&format!("/m/{session}/api/session")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["machine"], PC1);
    let (status, view) = s
        .operator("bob")
        .get(&format!("/api/sessions/{session}"))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the invited operator sees the chat: {view}"
    );
    assert!(view.to_string().contains("carol"), "{view}");

    // The right switched off after the link was issued: refused, with a reason.
    alice
        .send_json("PUT", "/api/roles/kiosk", &json!({"may_start_chat": false}))
        .await;
    let (status, answer) = carol
        .post("/start/api/chats", &json!({"operator": bob_alias}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("does not allow")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_request_is_refused_with_its_reason() {
    let s = Scenario::alice_and_carol_on_pc1()
        .machine("pc2.sales.acme", None)
        .start()
        .await;
    let alice = s.operator("alice");
    alice
        .post(
            "/api/roles",
            &json!({"name": "kiosk", "may_start_chat": true}),
        )
        .await;
    for m in [PC1, "pc2.sales.acme"] {
        let (status, _) = alice
            .send_json(
                "PUT",
                &format!("/api/machines/{m}/role"),
                &json!({"role": "kiosk"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Nobody logged on: no user to start a chat for.
    let outcome = ask(&s, "pc2.sales.acme").await;
    assert!(
        matches!(
            outcome,
            ChatRequest::Refused {
                reason: StartRefusal::NoUser,
                ..
            }
        ),
        "{outcome}"
    );
    // Deleting the role takes the right away.
    alice
        .send_json("DELETE", "/api/roles/kiosk", &json!({}))
        .await;
    let outcome = ask(&s, PC1).await;
    assert!(not_allowed(&outcome), "{outcome}");
    s.shutdown().await;
}
