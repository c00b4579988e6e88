//! A session actor that is killed is restarted by its supervisor and rebuilds its state from the
//! stream; an idle actor stops and comes back on demand. Either way the session carries on with
//! its history intact.

use std::time::Duration;

use natter_actors::session::actor_name;
use natter_system_tests::*;

fn session_actor(session: &str) -> Option<ractor::ActorCell> {
    ractor::registry::where_is(actor_name(session))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_actor_is_restarted_with_its_history() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, carol) = system.open_chat().await;
    for i in 0..3 {
        alice
            .send(&session, &format!("m{i}"), &format!("before {i}"))
            .await;
    }
    let before = session_actor(&session).expect("actor is running");
    let old_id = before.get_id();
    before.kill();

    // The supervisor restarts it at once (not on the next command).
    eventually(WAIT, || {
        let session = session.clone();
        async move { session_actor(&session).is_some_and(|a| a.get_id() != old_id) }
    })
    .await;

    // Membership survived: the machine user can still send, the operator too.
    let (status, body) = carol.send_as_machine_user(&session, "c1", "after").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A retry of a message sent before the crash is still recognised.
    let (_, again) = alice.send(&session, "m1", "before 1").await;
    assert_eq!(again["duplicate"], true);

    let mut sse = alice.session_events(&session).await;
    let got = sse.read_messages(4).await;
    assert_eq!(texts(&got), ["before 0", "before 1", "before 2", "after"]);
    sse.expect_quiet(Duration::from_millis(300)).await;
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["members"].as_array().unwrap().len(), 2, "{view}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_actor_stops_and_is_rebuilt_on_demand() {
    let system = Scenario::new()
        .config(|c| c.chat.idle_actor_timeout = Duration::from_millis(300))
        .machine("pc1.sales.acme", "carol")
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let (session, _carol) = system.open_chat().await;
    alice.send(&session, "m0", "first").await;
    eventually(WAIT, || {
        let session = session.clone();
        async move { session_actor(&session).is_none() }
    })
    .await;
    let (status, _) = alice.send(&session, "m1", "second").await;
    assert_eq!(status, StatusCode::CREATED);
    let mut sse = alice.session_events(&session).await;
    assert_eq!(texts(&sse.read_messages(2).await), ["first", "second"]);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_restarted_from_the_join_link_with_its_messages() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, _carol) = system.open_chat().await;
    alice.send(&session, "m0", "kept").await;
    let (status, _) = alice
        .post(
            &format!("/api/sessions/{session}/end"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, view) = alice
        .post(
            &format!("/api/sessions/{session}/join"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["ended"], false);
    let (status, _) = alice.send(&session, "m1", "again").await;
    assert_eq!(status, StatusCode::CREATED);
    let mut sse = alice.session_events(&session).await;
    assert_eq!(texts(&sse.read_messages(2).await), ["kept", "again"]);
    system.shutdown().await;
}
