//! Issue 12 item 2, delivery at the next check-in: a chat opened while the machine's agent is
//! offline waits for the machine (an `agent` event `waiting`), and when the agent checks in
//! again the session asks it once more: the user's window opens (`opened`, one link) and shows
//! what was written meanwhile. A chat ended while waiting opens no window later.

use natter_system_tests::*;
use serde_json::json;

const MACHINE: &str = "pc1.sales.acme";

/// The links the (current) agent of [`MACHINE`] was asked to open.
fn links(system: &Fixture) -> Vec<String> {
    let opened = system.agent(MACHINE).opener.opened.lock().unwrap();
    opened.iter().map(|(_, url)| url.clone()).collect()
}

/// Logs the machine user in with the chat link `url` of `session`.
async fn machine_user_login(system: &Fixture, session: &str, url: &str) -> Browser {
    let prefix = format!("{}/m/{session}/#t=", system.node.base);
    let token = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} does not start with {prefix}"));
    let user = Browser::new(&system.node.base);
    let (status, view) = user
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_opened_while_the_agent_is_offline_opens_when_it_checks_in_again() {
    let mut system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    system.stop_agent(MACHINE).await;

    let session = alice.new_chat(MACHINE).await;
    let mut events = alice.session_events(&session).await;
    let waiting = events.next_of_type("agent").await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(
        waiting["detail"], "the machine's agent is offline",
        "{waiting}"
    );
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["agent"], "waiting", "{view}");
    let (s, b) = alice
        .send(&session, "m1", "written while the machine was away")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // The agent starts again (same key): its first check-in wakes the session, which asks it
    // to open the user's window with a fresh link.
    system.add_machine(MACHINE, "carol").await;
    let opened = events.next_of_type("agent").await;
    assert_eq!(opened["status"], "opened", "{opened}");
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["agent"], "opened", "{view}");
    let urls = links(&system);
    assert_eq!(urls.len(), 1, "{urls:?}");

    // The user's window shows what was written while the machine was away.
    let carol = machine_user_login(&system, &session, &urls[0]).await;
    let mut history = carol
        .events(&format!("/m/{session}/api/events"), None)
        .await;
    let message = history.next_of_type("message").await;
    assert_eq!(message["text"], "written while the machine was away");
    let (s, b) = carol
        .send_as_machine_user(&session, "c1", "I'm here now")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let reply = events.next_of_type("message").await;
    assert_eq!(reply["text"], "I'm here now");

    // Later check-ins ask nothing more: still one window.
    system.assert_check_ins_still_count(MACHINE, "alice").await;
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["agent"], "opened", "{view}");
    assert_eq!(links(&system).len(), 1, "{:?}", links(&system));
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_ended_while_waiting_for_the_machine_opens_no_window_later() {
    let mut system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    system.stop_agent(MACHINE).await;
    let old = alice.new_chat(MACHINE).await;
    let mut events = alice.session_events(&old).await;
    let waiting = events.next_of_type("agent").await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    let (s, b) = alice
        .post(&format!("/api/sessions/{old}/end"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // The agent comes back and checks in (twice, so its first check-in's wake-up has been
    // handled); the ended chat asks it nothing.
    system.add_machine(MACHINE, "carol").await;
    system.assert_check_ins_still_count(MACHINE, "alice").await;
    let (_, view) = alice.get(&format!("/api/sessions/{old}")).await;
    assert_eq!(view["ended"], true, "{view}");

    // A new chat with the machine opens its window: the only link the agent got is the new
    // chat's.
    let new = alice.new_chat(MACHINE).await;
    let url = system.agent(MACHINE).wait_for_chat_url().await;
    assert!(url.contains(&format!("/m/{new}/")), "{url}");
    let urls = links(&system);
    assert!(
        urls.iter().all(|u| !u.contains(&format!("/m/{old}/"))),
        "the ended chat asked the agent: {urls:?}"
    );
    assert_eq!(urls.len(), 1, "{urls:?}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_the_machine_ends_after_the_retention() {
    let mut system = Scenario::alice_and_carol_on_pc1()
        .config(|c| {
            c.chat.retention = std::time::Duration::from_secs(2);
            c.chat.idle_actor_timeout = std::time::Duration::from_secs(1);
        })
        .start()
        .await;
    let alice = system.operator("alice");
    system.stop_agent(MACHINE).await;
    let session = alice.new_chat(MACHINE).await;
    let mut events = alice.session_events(&session).await;
    let waiting = events.next_of_type("agent").await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");

    // Nothing written meanwhile is left to deliver: the wait ends, and the window counts as
    // failed (joining asks again).
    let ended = events.next_of_type("agent").await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(
        ended["detail"], "the machine did not check in again within 2s",
        "{ended}"
    );
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["agent"], "failed", "{view}");
    system.shutdown().await;
}

/// The session's owner and the machine's owner are different nodes: the machine's check-in
/// still wakes the session (its `machine_back` travels over NATS to the session's owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_in_wakes_a_session_owned_by_another_node() {
    use natter_actors::subjects::{PARTITIONS, partition_of};
    let nats = TestNats::start().await;
    let nodes = [
        TestNode::start(nats.node_config()).await,
        TestNode::start(nats.node_config()).await,
    ];
    let owner = |key: &str| {
        let p = partition_of(key);
        nodes.iter().position(|n| n.node.partitions.owns(p))
    };
    // Settled: every partition owned by one of the two, half each (no hand-over under way).
    eventually(std::time::Duration::from_secs(20), || async {
        (0..PARTITIONS).all(|p| nodes.iter().filter(|n| n.node.partitions.owns(p)).count() == 1)
            && nodes
                .iter()
                .all(|n| n.node.partitions.count() == PARTITIONS as usize / 2)
    })
    .await;
    let agent = TestAgent::start(&nats, &nodes[0], MACHINE, Some("carol")).await;
    agent.stop().await;
    let alice = nodes[0].operator("alice").await;

    // Chats until one lands on the node that does not own the machine (each other one ends,
    // which frees the machine for the next).
    let machine_owner = owner(MACHINE).expect("the machine has an owner");
    let mut session = None;
    for _ in 0..40 {
        let s = alice.new_chat(MACHINE).await;
        if owner(&s).is_some_and(|o| o != machine_owner) {
            session = Some(s);
            break;
        }
        let (status, b) = alice
            .post(&format!("/api/sessions/{s}/end"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
    }
    let session = session.expect("a chat owned by the other node");
    let mut events = alice.session_events(&session).await;
    let waiting = events.next_of_type("agent").await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    let (s, b) = alice.send(&session, "m1", "across nodes").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let agent = TestAgent::start(&nats, &nodes[1], MACHINE, Some("carol")).await;
    let opened = events.next_of_type("agent").await;
    assert_eq!(opened["status"], "opened", "{opened}");
    let url = agent.wait_for_chat_url().await;
    assert!(url.contains(&format!("/m/{session}/")), "{url}");
    assert_eq!(agent.opener.opened.lock().unwrap().len(), 1);
    agent.stop().await;
    for node in nodes {
        node.shutdown().await;
    }
}
