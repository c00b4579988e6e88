//! The agent's availability with a real node: an agent started before NATS goes online once NATS
//! and the node are up (no restart), resumes checking in after NATS restarts under it, and stops
//! within 5 s when NATS is gone. NATS runs on a port chosen before it starts, so the agent can be
//! pointed at it first. (The binary's signals are tested in agent/tests/availability.rs.) And a
//! simulated agent serves only machines no real agent enrolled.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use natter_agent::{AgentConfig, AgentHandle, Presence, RecordingOpener};
use natter_system_tests::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const MACHINE: &str = "pc1.sales.acme";
/// What the agent promises: it stops within this long, whatever NATS does.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Every check-in from now on, seen as the broker sees them.
async fn checkins(nats: &TestNats) -> async_nats::Subscriber {
    let client = nats.broker_client().await;
    let checkins = client
        .subscribe(natter_actors::subjects::ALL_CHECKINS)
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    checkins
}

/// An agent (the library's `run`, as the binary runs it) checking in every second.
struct RunningAgent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), natter_agent::AgentError>>,
    /// Its enrollment token: made before the server may be running, stored by
    /// [`RunningAgent::register_token`].
    token: String,
}

impl RunningAgent {
    fn start(nats: &TestNats) -> RunningAgent {
        let token = natter_actors::enrollment::new_token();
        let config = AgentConfig {
            nats_url: nats.url(),
            nats_ca: None,
            nats_user: MACHINE.into(),
            nats_password: token.clone(),
            nkey_seed: Some(nats.machine_seed(MACHINE)),
            machine: MACHINE.into(),
            interval: Duration::from_secs(1),
            os: "linux".into(),
            ip: "127.0.0.1".into(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(natter_agent::run(
            config,
            AgentHandle::new(Presence::user(Some("carol"))),
            std::sync::Arc::new(RecordingOpener::default()),
            stop.clone(),
        ));
        RunningAgent { stop, task, token }
    }

    /// Stores the agent's token (one use, for its group) once the server runs.
    async fn register_token(&self, nats: &TestNats) {
        nats.enrollment()
            .await
            .register_token(&self.token, "sales.acme", 1, Duration::from_secs(3600))
            .await
            .expect("store the token");
    }

    async fn stop_within_limit(self) {
        assert!(!self.task.is_finished(), "the agent gave up by itself");
        self.stop.cancel();
        let result = tokio::time::timeout(STOP_LIMIT, self.task)
            .await
            .unwrap_or_else(|_| panic!("agent still running {STOP_LIMIT:?} after stop"));
        result.expect("agent task").expect("agent stops cleanly");
    }
}

async fn machine_status(node: &TestNode) -> Option<String> {
    let bytes = node.node.stores.machines.get(MACHINE).await.ok()??;
    let record: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    record["status"].as_str().map(String::from)
}

async fn next_checkin_from_machine(checkins: &mut async_nats::Subscriber) {
    let subject = natter_actors::subjects::agent_checkin(MACHINE);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, checkins.next())
            .await
            .expect("a check-in within the wait")
            .expect("subscription open");
        if msg.subject.as_str() == subject {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_nats_goes_online_once_nats_and_the_node_are_up() {
    let mut nats = TestNats::prepare();
    let agent = RunningAgent::start(&nats);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    nats.resume().await;
    agent.register_token(&nats).await;
    let node = TestNode::start(nats.node_config()).await;
    eventually(WAIT, || async {
        machine_status(&node).await.as_deref() == Some("user")
    })
    .await;

    nats.stop().await;
    agent.stop_within_limit().await;
    // The node is dropped, not shut down: its NATS is gone and its shutdown is not tested here.
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_resume_after_nats_restarts_under_a_running_agent() {
    let mut nats = TestNats::prepare();
    nats.resume().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = RunningAgent::start(&nats);
    agent.register_token(&nats).await;
    next_checkin_from_machine(&mut checkins(&nats).await).await;

    nats.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.resume().await;
    next_checkin_from_machine(&mut checkins(&nats).await).await;

    agent.stop_within_limit().await;
    node.shutdown().await;
}

/// A simulated agent: the real agent code on the simulator's connection and subject family.
fn simulated_agent(
    client: &async_nats::Client,
    nats: &TestNats,
    machine: &str,
    user: &str,
    stop: &CancellationToken,
) -> RecordingOpener {
    let opener = RecordingOpener::default();
    let config = AgentConfig {
        nats_url: nats.url(),
        nats_ca: None,
        nats_user: "natter-simulator".into(),
        nats_password: nats.simulator_password.clone(),
        nkey_seed: None,
        machine: machine.into(),
        interval: Duration::from_secs(1),
        os: "simulated".into(),
        ip: "10.0.0.7".into(),
    };
    tokio::spawn(natter_agent::run_on_family(
        client.clone(),
        config,
        AgentHandle::new(Presence::user(Some(user))),
        std::sync::Arc::new(opener.clone()),
        stop.clone(),
        natter_agent::SubjectFamily::Simulated,
    ));
    opener
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_agent_serves_unenrolled_machines_only() {
    const SIM: &str = "sim1.sales.acme";
    let s = Scenario::new()
        .machine(MACHINE, "carol")
        .operator("alice")
        .start()
        .await;
    let alice = s.operator("alice");
    let simulator = async_nats::ConnectOptions::new()
        .user_and_password("natter-simulator".into(), s.nats.simulator_password.clone())
        .connect(s.nats.url())
        .await
        .expect("the simulator connects");
    let stop = CancellationToken::new();
    let sim = simulated_agent(&simulator, &s.nats, SIM, "ana", &stop);
    // The simulator also claims the enrolled pc1, with its own user.
    let spoof = simulated_agent(&simulator, &s.nats, MACHINE, "mallory", &stop);

    // The simulated machine checks in and its user gets a chat window that works.
    alice
        .wait_for(&format!("/api/machines/{SIM}"), |v| v["user"] == "ana")
        .await;
    let session = alice.new_chat(SIM).await;
    eventually(WAIT, || async { !sim.opened.lock().unwrap().is_empty() }).await;
    let url = sim.opened.lock().unwrap()[0].1.clone();
    let token = url.split_once("#t=").expect("a link with a token").1;
    let user = Browser::new(&s.node.base);
    let (status, view) = user
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");

    // pc1's check-ins from the simulator are refused (each second), and its chat link goes to
    // its real agent only.
    let rejected = &s.node.node.fleet_stats.rejected;
    eventually(WAIT, || async { rejected.load(Ordering::Relaxed) >= 2 }).await;
    let (_, pc1) = alice.get(&format!("/api/machines/{MACHINE}")).await;
    assert_eq!(pc1["user"], "carol", "{pc1}");
    s.open_chat().await;
    assert!(spoof.opened.lock().unwrap().is_empty());
    stop.cancel();
    s.shutdown().await;
}
