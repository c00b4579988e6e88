//! Chat links (issue 9): a link's token logs the machine user in once, expires unused after
//! `chat.link_ttl`, works only for its own session and only while the chat is not ended; a
//! restart issues a fresh link to the machine's agent and cuts off the earlier login.

use std::time::Duration;

use natter_system_tests::*;
use serde_json::{Value, json};

const MACHINE: &str = "pc1.sales.acme";

/// The token of a chat link (`…/m/<session>/#t=<token>`).
fn token_of(url: &str) -> String {
    let (_, token) = url.split_once("#t=").expect("a chat link with a token");
    token.to_string()
}

/// `POST /m/<session>/api/login` with `token` from `browser`.
async fn log_in(browser: &Browser, session: &str, token: &str) -> (StatusCode, Value) {
    browser
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await
}

/// The answer to a wrong token: every refused link must look exactly like it.
async fn wrong_token_answer(fixture: &Fixture, session: &str) -> (StatusCode, Value) {
    let stranger = Browser::new(&fixture.node.base);
    let answer = log_in(&stranger, session, &"0".repeat(48)).await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", answer.1);
    answer
}

/// Waits until the agent of `machine` has been asked to open `n` links; returns the last.
async fn nth_chat_url(fixture: &Fixture, machine: &str, n: usize) -> String {
    let opened = fixture.agent(machine).opener.opened.clone();
    eventually(WAIT, || {
        let opened = opened.clone();
        async move { opened.lock().unwrap().len() >= n }
    })
    .await;
    let urls = opened.lock().unwrap();
    assert_eq!(urls.len(), n, "the agent got more links than expected");
    urls[n - 1].1.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_link_logs_in_once_even_after_a_node_restart() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let (session, carol) = system.open_chat().await;
    let token = token_of(&nth_chat_url(&system, MACHINE, 1).await);
    let refused = wrong_token_answer(&system, &session).await;

    let mallory = Browser::new(&system.node.base);
    assert_eq!(log_in(&mallory, &session, &token).await, refused);
    assert_eq!(log_in(&carol, &session, &token).await, refused);

    // The used-up token is in the session record: a new node's actor refuses it too.
    let system = system.restart_node().await;
    let mallory = Browser::new(&system.node.base);
    assert_eq!(log_in(&mallory, &session, &token).await, refused);
    // The refused attempts did not log carol out: her cookie still carries her login (the new
    // node listens on another port; cookies do not depend on ports).
    let carol = carol.at(&system.node.base);
    let (status, view) = carol.get(&format!("/m/{session}/api/session")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_chat_link_expires_after_link_ttl() {
    let system = Scenario::alice_and_carol_on_pc1()
        .config(|c| c.chat.link_ttl = Duration::from_secs(1))
        .start()
        .await;
    let session = system.operator("alice").new_chat(MACHINE).await;
    let token = token_of(&nth_chat_url(&system, MACHINE, 1).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let carol = Browser::new(&system.node.base);
    let refused = wrong_token_answer(&system, &session).await;
    assert_eq!(log_in(&carol, &session, &token).await, refused);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_link_is_refused_after_the_chat_ended() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let session = alice.new_chat(MACHINE).await;
    let token = token_of(&nth_chat_url(&system, MACHINE, 1).await);
    let (status, body) = alice
        .post(&format!("/api/sessions/{session}/end"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let carol = Browser::new(&system.node.base);
    let refused = wrong_token_answer(&system, &session).await;
    assert_eq!(log_in(&carol, &session, &token).await, refused);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_issues_a_new_link_and_cuts_off_the_old_login() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, carol) = system.open_chat().await;
    let old_token = token_of(&nth_chat_url(&system, MACHINE, 1).await);
    let mut open_stream = carol
        .events(&format!("/m/{session}/api/events"), None)
        .await;
    assert_eq!(open_stream.status, StatusCode::OK);
    for step in ["end", "join"] {
        let (status, body) = alice
            .post(&format!("/api/sessions/{session}/{step}"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }

    // The restart sent the machine's agent a fresh link.
    let new_token = token_of(&nth_chat_url(&system, MACHINE, 2).await);
    assert_ne!(new_token, old_token);

    // A stream opened in the earlier epoch shows the restart, then ends.
    let restarted = loop {
        let event = open_stream
            .next(WAIT)
            .await
            .expect("the restart on the open stream");
        if event.data["type"] == "restarted" {
            break event;
        }
    };
    let since = std::time::Instant::now();
    assert!(open_stream.next(Duration::from_secs(5)).await.is_none());
    assert!(
        since.elapsed() < Duration::from_secs(4),
        "the stream stayed open after {restarted:?}"
    );

    // The login of the earlier epoch is refused everywhere, and so is the old token.
    let (status, body) = carol.send_as_machine_user(&session, "c1", "old").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = carol.get(&format!("/m/{session}/api/session")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let stream = carol
        .events(&format!("/m/{session}/api/events"), None)
        .await;
    assert_eq!(
        stream.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        stream.error_body
    );
    let refused = wrong_token_answer(&system, &session).await;
    assert_eq!(log_in(&carol, &session, &old_token).await, refused);

    // The new link works, once.
    let (status, view) = log_in(&carol, &session, &new_token).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let (status, body) = carol.send_as_machine_user(&session, "c2", "new").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mallory = Browser::new(&system.node.base);
    assert_eq!(log_in(&mallory, &session, &new_token).await, refused);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_link_works_only_for_its_own_session() {
    let mut system = Scenario::alice_and_carol_on_pc1().start().await;
    system.add_machine("pc2.sales.acme", "dave").await;
    let alice = system.operator("alice");
    let first = alice.new_chat(MACHINE).await;
    let first_token = token_of(&nth_chat_url(&system, MACHINE, 1).await);
    let second = alice.new_chat("pc2.sales.acme").await;
    let second_token = token_of(&nth_chat_url(&system, "pc2.sales.acme", 1).await);

    let mallory = Browser::new(&system.node.base);
    let refused = wrong_token_answer(&system, &second).await;
    assert_eq!(log_in(&mallory, &second, &first_token).await, refused);
    assert_eq!(
        log_in(&mallory, &first, &second_token).await,
        wrong_token_answer(&system, &first).await
    );

    // A refused try elsewhere does not use the link up; its own session takes it once.
    let carol = Browser::new(&system.node.base);
    let (status, view) = log_in(&carol, &first, &first_token).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["machine"], MACHINE);
    assert_eq!(
        log_in(&mallory, &first, &first_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_machine_user_logged_in_by_the_cookie() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let (session, carol) = system.open_chat().await;
    let token = token_of(&nth_chat_url(&system, MACHINE, 1).await);

    // A reload finds the token used up (the page strips it, but a restored address keeps it)…
    let (status, _) = log_in(&carol, &session, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // …and the cookie carries the login: the page, the stream and sending all work.
    let (status, view) = carol.get(&format!("/m/{session}/api/session")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["machine"], MACHINE);
    let mut stream = carol
        .events(&format!("/m/{session}/api/events"), None)
        .await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.error_body);
    let (status, body) = carol
        .send_as_machine_user(&session, "r1", "after reload")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(texts(&stream.read_messages(1).await), vec!["after reload"]);
    system.shutdown().await;
}

/// A machine user's command as the gateway sends it, straight to the session actor over NATS.
async fn machine_user_send(
    system: &Fixture,
    session: &str,
    epoch: u32,
    client_id: &str,
) -> natter_actors::protocol::SessionReply {
    use natter_actors::protocol::{Participant, ParticipantKind, SessionCommand, SessionRequest};
    let request = SessionRequest {
        cmd: SessionCommand::Send {
            by: Participant {
                kind: ParticipantKind::MachineUser,
                id: MACHINE.into(),
                name: "carol".into(),
            },
            client_id: client_id.into(),
            text: "from an old login".into(),
        },
        scope: Default::default(),
        epoch: Some(epoch),
    };
    let client = system.nats.broker_client().await;
    let subject = natter_actors::subjects::session_command(session);
    let body = serde_json::to_vec(&request).unwrap();
    let answer = client
        .request(subject, body.into())
        .await
        .expect("an answer");
    serde_json::from_slice(&answer.payload).expect("a session reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_actor_refuses_a_machine_user_command_of_an_earlier_epoch() {
    use natter_actors::protocol::SessionErrorKind;
    // The gateway checks the epoch too: going around it shows the actor's own check, which
    // is what holds when a restart lands between the gateway's check and the command.
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, _carol) = system.open_chat().await;
    let path = format!("/api/sessions/{session}");
    // The first login's epoch is accepted…
    let sent = machine_user_send(&system, &session, 0, "m1").await;
    assert!(sent.is_ok(), "{sent:?}");
    for step in ["end", "join"] {
        let (status, body) = alice.post(&format!("{path}/{step}"), &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }
    // The restart asks the agent to open the window again, and its answer is an event of its
    // own: wait until that has landed, so only the refused send could still move `last_seq`.
    nth_chat_url(&system, MACHINE, 2).await;
    let mut before = alice.get(&path).await.1["last_seq"].clone();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = alice.get(&path).await.1["last_seq"].clone();
        if now == before {
            break;
        }
        before = now;
    }

    // …and after the restart it is refused, with nothing stored.
    let refused = machine_user_send(&system, &session, 0, "m2").await;
    let kind = refused.expect_err("a stale epoch is refused").kind;
    assert_eq!(kind, SessionErrorKind::BadToken);
    assert_eq!(alice.get(&path).await.1["last_seq"], before);
    system.shutdown().await;
}
