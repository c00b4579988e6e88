//! TLS between agents and NATS: a nats-server that serves TLS only, with a certificate signed by
//! a CA made at run time. The node and an agent that trust the CA get in; an agent that trusts
//! only the system's roots never does.

use std::time::Duration;

use natter_agent::{AgentHandle, Presence, RecordingOpener};
use natter_system_tests::*;
use tokio_util::sync::CancellationToken;

/// How long an agent that cannot get in is given before we check it did not.
const REFUSED_WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn an_agent_that_trusts_the_ca_checks_in_over_tls() {
    let nats = TestNats::start_tls().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = TestAgent::start(&nats, &node, "pc1.sales.acme", Some("carol")).await;

    let alice = node.operator("alice").await;
    let (status, view) = alice.get("/api/machines/pc1.sales.acme").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["user"], "carol", "{view}");

    agent.stop().await;
    node.shutdown().await;
}

#[tokio::test]
async fn an_agent_without_the_ca_never_gets_in() {
    let nats = TestNats::start_tls().await;
    let node = TestNode::start(nats.node_config()).await;
    let mut config = nats
        .agent_config("pc2.sales.acme", Duration::from_secs(1))
        .await;
    // The server's certificate is signed by the test CA, which the system's roots lack.
    config.nats_ca = None;
    let stop = CancellationToken::new();
    let task = tokio::spawn(natter_agent::run(
        config,
        AgentHandle::new(Presence::user(Some("dave"))),
        std::sync::Arc::new(RecordingOpener::default()),
        stop.clone(),
    ));

    tokio::time::sleep(REFUSED_WAIT).await;
    let alice = node.operator("alice").await;
    let (status, _) = alice.get("/api/machines/pc2.sales.acme").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the agent checked in without TLS trust"
    );
    assert!(
        !task.is_finished(),
        "an agent keeps retrying, it does not give up"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the agent stops")
        .expect("agent task")
        .expect("agent ends cleanly");
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_without_tls_is_refused() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let nats = TestNats::start_tls().await;
    let stream = tokio::net::TcpStream::connect(nats.url().trim_start_matches("nats://"))
        .await
        .expect("tcp connect");
    let mut lines = BufReader::new(stream);
    let mut info = String::new();
    lines.read_line(&mut info).await.expect("INFO");
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let connect = "CONNECT {\"user\":\"natter-broker\",\"pass\":\"x\"}\r\nPING\r\n";
    lines
        .get_mut()
        .write_all(connect.as_bytes())
        .await
        .expect("send");
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), lines.read_line(&mut answer)).await;
    // nats-server closes the connection without a word: no PONG, no error line.
    assert!(read.is_ok(), "the server neither answered nor closed");
    assert!(
        answer.is_empty(),
        "a plain-text client got an answer: {answer}"
    );

    let trusted = nats
        .client_options()
        .user_and_password("natter-broker".into(), nats.broker_password.clone())
        .connect(nats.url())
        .await;
    assert!(trusted.is_ok(), "{:?}", trusted.err());
}
