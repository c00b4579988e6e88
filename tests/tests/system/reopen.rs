//! Issue 11 item 5: restarting an ended chat asks the machine's agent to open the user's window
//! again with a fresh link, and the operator sees the agent's answer ("opened" / "failed") on the
//! session's stream; joining a chat whose window failed to open asks the agent again; a restart
//! never takes the machine from a chat started with it since.

use natter_system_tests::*;
use serde_json::json;

const MACHINE: &str = "pc1.sales.acme";

/// How many links the agent of `machine` has been asked to open (and did).
fn links_opened(fixture: &Fixture) -> usize {
    fixture.agent(MACHINE).opener.opened.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_asks_the_agent_again_and_the_operator_sees_its_answer() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, _carol) = system.open_chat().await;
    let join = format!("/api/sessions/{session}/join");
    let mut events = alice.session_events(&session).await;
    let first = events.next_of_type("agent").await;
    assert_eq!(first["status"], "opened", "{first}");
    assert_eq!(links_opened(&system), 1);

    // Ended, and the machine has no browser now: the restart asks, and the answer is "failed".
    let (s, b) = alice
        .post(&format!("/api/sessions/{session}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    system
        .agent(MACHINE)
        .fail_to_open("no browser on this machine");
    let (s, view) = alice.post(&join, &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(
        (view["ended"].clone(), view["agent"].clone()),
        (json!(false), json!("pending"))
    );
    events.next_of_type("restarted").await;
    let failed = events.next_of_type("agent").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no browser on this machine")),
        "{failed}"
    );
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["agent"], "failed", "{view}");

    // The browser is back: joining the chat (in progress, window failed) asks again, and the
    // agent gets a working link.
    *system.agent(MACHINE).opener.fail_with.lock().unwrap() = None;
    let (s, view) = alice.post(&join, &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["agent"], "pending", "{view}");
    let opened = events.next_of_type("agent").await;
    assert_eq!(opened["status"], "opened", "{opened}");
    assert_eq!(links_opened(&system), 2);
    let url = system.agent(MACHINE).wait_for_chat_url().await;
    let token = url.split_once("#t=").expect("a chat link").1;
    let user = Browser::new(&system.node.base);
    let (s, b) = user
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::OK, "the fresh link logs in: {b}");

    // A join of a chat in progress whose window opened asks nothing.
    let (s, _) = alice.post(&join, &json!({})).await;
    assert_eq!(s, StatusCode::OK);
    events
        .expect_quiet(std::time::Duration::from_millis(500))
        .await;
    assert_eq!(links_opened(&system), 2);

    // Ended, and a new chat with the machine started since: that one keeps the machine, and a
    // restart of the old one is refused (409) without asking the agent.
    let (s, _) = alice
        .post(&format!("/api/sessions/{session}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let newer = alice.new_chat(MACHINE).await;
    assert_ne!(newer, session);
    eventually(WAIT, || async { links_opened(&system) == 3 }).await;
    let (s, b) = alice.post(&join, &json!({})).await;
    assert_eq!(
        (s, &b["error"]),
        (StatusCode::CONFLICT, &json!("conflict")),
        "{b}"
    );
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["ended"], true, "{view}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(links_opened(&system), 3);
    system.shutdown().await;
}
