//! Machines with several users (issue 12, item 6): a terminal server's check-in lists every
//! user session; each user has a chat of their own, and the agent opens it in that user's
//! desktop session only.

use std::time::Duration;

use natter_agent::Presence;
use natter_system_tests::*;
use serde_json::json;

const TS: &str = "ts1.sales.acme";

/// The user sessions `machine`'s agent was asked to open windows in, with their links.
fn opened_in(s: &Fixture, machine: &str) -> Vec<(Option<String>, String)> {
    s.agent(machine).opener.opened_in.lock().unwrap().clone()
}

/// Waits until `machine`'s agent has opened `n` windows; returns them.
async fn wait_for_windows(s: &Fixture, machine: &str, n: usize) -> Vec<(Option<String>, String)> {
    eventually(Duration::from_secs(10), || async move {
        opened_in(s, machine).len() >= n
    })
    .await;
    opened_in(s, machine)
}

/// Logs a machine user in with the chat link `url` of `session`; returns the login's view.
async fn log_in_with(s: &Fixture, session: &str, url: &str) -> (Browser, serde_json::Value) {
    let prefix = format!("{}/m/{session}/#t=", s.node.base);
    assert!(url.starts_with(&prefix), "{url} is not a link to {session}");
    let user = Browser::new(&s.node.base);
    let (status, view) = user
        .post(
            &format!("/m/{session}/api/login"),
            &json!({"token": &url[prefix.len()..]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    (user, view)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_of_a_machine_has_a_chat_of_their_own() {
    let s = Scenario::new()
        .machine_with(
            TS,
            Presence::users(&[("carol", "console"), ("dave", "rdp-tcp#3")]),
            Duration::from_secs(30),
        )
        .operator("alice")
        .start()
        .await;
    let alice = s.operator("alice");

    // The machine lists both users, active, with no chat yet.
    let (status, ts) = alice.get(&format!("/api/machines/{TS}")).await;
    assert_eq!(status, StatusCode::OK, "{ts}");
    assert_eq!(ts["status"], "user", "{ts}");
    let users: Vec<(String, String, bool)> = ts["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            assert!(u["chat"].is_null(), "{u}");
            (
                u["name"].as_str().unwrap().to_string(),
                u["session"].as_str().unwrap().to_string(),
                u["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        users,
        [
            ("carol".into(), "console".into(), true),
            ("dave".into(), "rdp-tcp#3".into(), true)
        ]
    );

    // A chat with the second user: the agent opens it in dave's session, nowhere else.
    let (status, answer) = alice
        .post(
            "/api/chats",
            &json!({"machine": TS, "user_session": "rdp-tcp#3"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let daves = session_id(&answer);
    assert_eq!(
        answer["session"]["user"],
        json!({"name": "dave", "session": "rdp-tcp#3"})
    );
    let windows = wait_for_windows(&s, TS, 1).await;
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].0.as_deref(), Some("rdp-tcp#3"));
    let (dave, view) = log_in_with(&s, &daves, &windows[0].1).await;
    let machine_user = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "machine_user")
        .cloned()
        .unwrap();
    assert_eq!(machine_user["name"], "dave", "{view}");
    alice
        .wait_for(&format!("/api/sessions/{daves}"), |v| {
            v["agent"] == "opened"
        })
        .await;

    // Carol's chat is another one, opened in her session.
    let (status, answer) = alice
        .post(
            "/api/chats",
            &json!({"machine": TS, "user_session": "console"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let carols = session_id(&answer);
    assert_ne!(carols, daves);
    let windows = wait_for_windows(&s, TS, 2).await;
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[1].0.as_deref(), Some("console"));
    assert!(windows[1].1.contains(&carols), "{}", windows[1].1);
    let (_carol, view) = log_in_with(&s, &carols, &windows[1].1).await;
    assert!(
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["kind"] == "machine_user" && m["name"] == "carol"),
        "{view}"
    );
    // Dave's link does not open carol's chat.
    let (status, _) = Browser::new(&s.node.base)
        .post(
            &format!("/m/{carols}/api/login"),
            &json!({"token": windows[0].1.rsplit("#t=").next().unwrap()}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Asking for dave again joins dave's chat, not carol's; no user named: the first user's.
    for (user_session, expected) in [(json!("rdp-tcp#3"), &daves), (json!(null), &carols)] {
        let (status, answer) = alice
            .post(
                "/api/chats",
                &json!({"machine": TS, "user_session": user_session}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(&session_id(&answer), expected, "{user_session}");
    }
    assert_eq!(opened_in(&s, TS).len(), 2, "joining opens no window");

    // The machine's row shows each user's chat.
    alice
        .wait_for(&format!("/api/machines/{TS}"), |m| {
            m["users"][0]["chat"] == json!(carols)
                && m["users"][1]["chat"] == json!(daves)
                && m["session"] == json!(carols)
        })
        .await;

    // A message in dave's chat reaches dave only.
    let (status, _) = alice.send(&daves, "m1", "hello dave").await;
    assert_eq!(status, StatusCode::CREATED);
    let mut dave_sees = dave.events(&format!("/m/{daves}/api/events"), None).await;
    let texts_of_dave = texts(&dave_sees.read_messages(1).await);
    assert_eq!(texts_of_dave, ["hello dave"]);
    let (_, carols_view) = alice.get(&format!("/api/sessions/{carols}")).await;
    let (_, transcript) = alice
        .get(&format!("/api/sessions/{carols}/transcript?format=json"))
        .await;
    assert!(
        !transcript.to_string().contains("hello dave"),
        "{carols_view}\n{transcript}"
    );

    // Ended and restarted, dave's chat goes back to dave's session.
    let (status, _) = alice
        .post(&format!("/api/sessions/{daves}/end"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, view) = alice
        .post(&format!("/api/sessions/{daves}/join"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let windows = wait_for_windows(&s, TS, 3).await;
    assert_eq!(windows[2].0.as_deref(), Some("rdp-tcp#3"));
    assert!(windows[2].1.contains(&daves));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_session_that_is_not_logged_on_is_refused_clearly() {
    let s = Scenario::new()
        .machine_with(
            TS,
            Presence::users(&[("carol", "console"), ("dave", "rdp-tcp#3")]),
            Duration::from_secs(30),
        )
        .machine("pc1.sales.acme", "erin")
        .operator("alice")
        .start()
        .await;
    let alice = s.operator("alice");
    let refusals = [
        (
            json!({"machine": TS, "user_session": "rdp-tcp#9"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"machine": "pc1.sales.acme", "user_session": "console"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"operator": "bob", "user_session": "console"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"machine": TS, "user_session": 3}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, expected) in refusals {
        let (status, answer) = alice.post("/api/chats", &body).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    let (_, answer) = alice
        .post(
            "/api/chats",
            &json!({"machine": TS, "user_session": "rdp-tcp#9"}),
        )
        .await;
    assert!(
        answer["message"].as_str().unwrap().contains("rdp-tcp#9"),
        "{answer}"
    );
    assert!(opened_in(&s, TS).is_empty(), "no window opened anywhere");

    // Dave logs off: his session is refused from then on; carol still chats.
    s.agent(TS)
        .check_in(Presence::users(&[("carol", "console")]));
    alice
        .wait_for(&format!("/api/machines/{TS}"), |m| {
            m["users"].as_array().is_some_and(|u| u.len() == 1)
        })
        .await;
    let (status, _) = alice
        .post(
            "/api/chats",
            &json!({"machine": TS, "user_session": "rdp-tcp#3"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A machine with one user (an agent that sends only `user`) chats as before.
    let (status, answer) = alice.chat_with("pc1.sales.acme").await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(answer["session"].get("user").is_none(), "{answer}");
    s.shutdown().await;
}
