//! One identity per machine: agents enroll once with a token and then log in with their own
//! key only; nobody logs in as another machine, with an old shared secret, a wrong token or a
//! forged signature, or as the simulator; suspending or forgetting a machine cuts its agent off.

use std::time::Duration;

use natter_agent::{AgentHandle, Presence, RecordingOpener};
use natter_system_tests::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// One connect attempt as `user` with `password` and, if given, the key `seed`.
async fn login(
    nats: &TestNats,
    user: &str,
    password: &str,
    seed: Option<&str>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut options =
        async_nats::ConnectOptions::new().user_and_password(user.into(), password.into());
    if let Some(seed) = seed {
        options = options.nkey(seed.into());
    }
    options.connect(nats.url()).await
}

async fn machine_listed(node: &TestNode, machine: &str) -> bool {
    let alice = node.operator("alice").await;
    let (status, _) = alice.get(&format!("/api/machines/{machine}")).await;
    status == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_logs_in_later_with_its_key_only_and_checks_in() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let m = "pc1.sales.acme";
    let first = TestAgent::start(&nats, &node, m, Some("carol")).await;
    first.stop().await;
    let stats = node.node.fleet_stats.clone();
    let accepted = || stats.accepted.load(std::sync::atomic::Ordering::Relaxed);
    let before = accepted();

    let mut config = nats.agent_config(m, Duration::from_secs(30)).await;
    config.nats_password = String::new();
    let stop = CancellationToken::new();
    let agent = tokio::spawn(natter_agent::run(
        config,
        AgentHandle::new(Presence::user(Some("carol"))),
        std::sync::Arc::new(RecordingOpener::default()),
        stop.clone(),
    ));
    eventually(WAIT, || async { accepted() > before }).await;
    stop.cancel();
    let _ = agent.await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_logs_in_as_an_enrolled_machine_with_another_key() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let _pc1 = TestAgent::start(&nats, &node, "pc1.sales.acme", Some("carol")).await;
    // Mallory has a valid token of the same group and her own key.
    let token = nats.enroll_token("sales.acme", 5).await;
    let mallory = nkeys::KeyPair::new_user().seed().unwrap();
    let refused = login(&nats, "pc1.sales.acme", &token, Some(&mallory)).await;
    assert!(refused.is_err(), "logged in as pc1 with another key");
    let refused = login(&nats, "pc1.sales.acme", "", Some(&mallory)).await;
    assert!(
        refused.is_err(),
        "logged in as pc1 with another key and no token"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_style_shared_secret_login_without_a_key_is_refused() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let token = nats.enroll_token("sales.acme", 5).await;
    for password in ["agent-test-secret", token.as_str()] {
        let refused = login(&nats, "pc2.sales.acme", password, None).await;
        assert!(refused.is_err(), "logged in without a key ({password})");
    }
    assert!(!machine_listed(&node, "pc2.sales.acme").await);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_and_used_up_tokens_do_not_enroll() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let enrollment = nats.enrollment().await;
    let other_group = nats.enroll_token("support.acme", 5).await;
    let expired = enrollment
        .issue_token("sales.acme", 5, Duration::ZERO)
        .await
        .unwrap();
    let once = nats.enroll_token("sales.acme", 1).await;
    let seed = |m: &str| nats.machine_seed(m);
    for (machine, token) in [
        ("pc1.sales.acme", other_group.as_str()),
        ("pc2.sales.acme", expired.as_str()),
        ("pc3.sales.acme", "nenr_made-up"),
    ] {
        let refused = login(&nats, machine, token, Some(&seed(machine))).await;
        assert!(refused.is_err(), "{machine} enrolled with {token}");
    }
    let first = login(
        &nats,
        "pc4.sales.acme",
        &once,
        Some(&seed("pc4.sales.acme")),
    )
    .await;
    assert!(first.is_ok(), "a fresh one-use token enrolls: {first:?}");
    let again = login(
        &nats,
        "pc5.sales.acme",
        &once,
        Some(&seed("pc5.sales.acme")),
    )
    .await;
    assert!(again.is_err(), "a used-up token enrolled a second machine");
    // A machine that never enrolled never appears in the list.
    for machine in ["pc1.sales.acme", "pc2.sales.acme", "pc5.sales.acme"] {
        assert!(!machine_listed(&node, machine).await, "{machine} listed");
    }
    node.shutdown().await;
}

/// Sends a raw CONNECT with `nkey` and `sig`; returns the server's first answer line.
async fn raw_connect(nats: &TestNats, user: &str, nkey: &str, sig: &str) -> String {
    let address = nats.url().replace("nats://", "");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let info = lines.next_line().await.unwrap().unwrap();
    assert!(
        info.contains("\"nonce\""),
        "the server sends a nonce: {info}"
    );
    let connect = json!({"user": user, "pass": "", "nkey": nkey, "sig": sig, "verbose": false,
        "pedantic": false, "protocol": 1});
    write
        .write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("an answer")
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused() {
    use base64::Engine;
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let _pc1 = TestAgent::start(&nats, &node, "pc1.sales.acme", None).await;
    // pc1's public key is no secret; Mallory signs with her own key.
    let pc1_key = natter_agent::identity::public_key(&nats.machine_seed("pc1.sales.acme")).unwrap();
    let forged = nkeys::KeyPair::new_user().sign(b"any nonce").unwrap();
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
    let answer = raw_connect(&nats, "pc1.sales.acme", &pc1_key, &forged).await;
    assert!(answer.starts_with("-ERR"), "forged login answered {answer}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_log_in_as_the_simulator_with_anything_it_knows() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let m = "pc1.sales.acme";
    let _pc1 = TestAgent::start(&nats, &node, m, None).await;
    let seed = nats.machine_seed(m);
    let token = nats.enroll_token("sales.acme", 5).await;
    for (password, key) in [
        (token.as_str(), Some(seed.as_str())),
        (token.as_str(), None),
        (seed.as_str(), None),
        ("", Some(seed.as_str())),
    ] {
        let refused = login(&nats, "natter-simulator", password, key).await;
        assert!(refused.is_err(), "logged in as the simulator");
    }
    node.shutdown().await;
}

async fn set_suspended(nats: &TestNats, machine: &str, suspended: bool) {
    let answer = nats
        .broker_client()
        .await
        .request(
            natter_actors::subjects::machine_request(machine),
            json!({"op": "suspend", "suspended": suspended})
                .to_string()
                .into(),
        )
        .await
        .expect("the fleet answers");
    let reply: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(reply["Ok"]["suspended"], suspended, "{reply}");
}

/// Waits until `client` has lost its connection and checks it does not come back.
async fn assert_cut_off(client: &async_nats::Client) {
    use async_nats::connection::State;
    eventually(WAIT, || async {
        client.connection_state() != State::Connected
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(client.connection_state(), State::Connected, "it came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_machine_cuts_its_connected_agent_off_until_resumed() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let m = "pc1.sales.acme";
    let _pc1 = TestAgent::start(&nats, &node, m, None).await;
    let connected = nats.agent_client(m).await;
    set_suspended(&nats, m, true).await;
    assert_cut_off(&connected).await;
    let seed = nats.machine_seed(m);
    assert!(login(&nats, m, "", Some(&seed)).await.is_err());
    set_suspended(&nats, m, false).await;
    assert!(login(&nats, m, "", Some(&seed)).await.is_ok());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_key_is_cut_off_and_the_machine_enrolls_a_new_one() {
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let m = "pc1.sales.acme";
    let old = nats.machine_seed(m);
    let connected = nats.agent_client(m).await;
    assert!(node.node.enrollment.forget_key(m).await.unwrap());
    let kicked = natter_actors::revoke::request(&nats.broker_client().await, m)
        .await
        .unwrap();
    assert_eq!(kicked, 1);
    assert_cut_off(&connected).await;
    assert!(login(&nats, m, "", Some(&old)).await.is_err(), "no token");
    // Key rotation: a new key and a new token.
    let new = nkeys::KeyPair::new_user().seed().unwrap();
    let token = nats.enroll_token("sales.acme", 1).await;
    assert!(login(&nats, m, &token, Some(&new)).await.is_ok());
    assert!(login(&nats, m, "", Some(&new)).await.is_ok());
    assert!(login(&nats, m, "", Some(&old)).await.is_err());
    node.shutdown().await;
}
