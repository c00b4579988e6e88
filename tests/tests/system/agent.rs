//! The agent's availability with a real node: an agent started before NATS goes online once NATS
//! and the node are up (no restart), resumes checking in after NATS restarts under it, and stops
//! within 5 s when NATS is gone. NATS runs on a port chosen before it starts, so the agent can be
//! pointed at it first. (The binary's signals are tested in agent/tests/availability.rs.)

use std::time::Duration;

use futures::StreamExt;
use natter::embedded::{NatsServer, NatsServerOptions, ServerSecrets, free_port};
use natter_agent::{AgentConfig, AgentHandle, Presence, RecordingOpener};
use natter_system_tests::*;
use tokio_util::sync::CancellationToken;


const MACHINE: &str = "pc1.sales.acme";
/// What the agent promises: it stops within this long, whatever NATS does.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// A nats-server (repository `nats.conf`) on a port fixed before it first starts, which can be
/// stopped and started again on that port with the same store and secrets.
struct NatsOnPort {
    options: NatsServerOptions,
    server: Option<NatsServer>,
    callout_seed: String,
    /// The agent's enrollment token, made before the server runs and stored once it does.
    token: String,
    _dir: tempfile::TempDir,
}

impl NatsOnPort {
    fn new() -> NatsOnPort {
        let dir = tempfile::tempdir().expect("temp dir");
        let (callout_seed, callout_issuer) =
            natter_actors::auth_callout::Callout::generate_issuer();
        let bin = std::env::var("NATTER_NATS_SERVER")
            .map(Into::into)
            .unwrap_or_else(|_| repo_root().join(".tools/nats/bin/nats-server"));
        let options = NatsServerOptions {
            bin,
            config: repo_root().join("nats.conf"),
            port: free_port().expect("free port"),
            store_dir: dir.path().join("js"),
            log_file: Some(dir.path().join("nats.log")),
            secrets: ServerSecrets {
                broker_password: "broker-test-secret".into(),
                simulator_password: "simulator-test-secret".into(),
                system_password: "system-test-secret".into(),
                callout_issuer,
            },
        };
        NatsOnPort {
            options,
            server: None,
            callout_seed,
            token: natter_actors::enrollment::new_token(),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.options.port)
    }

    /// Starts the server; the first time, stores the agent's token (one use, for its group).
    async fn start(&mut self) {
        let first = !self.options.store_dir.exists();
        let server = NatsServer::start(self.options.clone())
            .await
            .expect("start nats-server");
        self.server = Some(server);
        if first {
            let enrollment = natter_actors::enrollment::Enrollment::ensure(self.broker().await)
                .await
                .expect("enrollment store");
            enrollment
                .register_token(&self.token, "sales.acme", 1, Duration::from_secs(3600))
                .await
                .expect("store the token");
        }
    }

    fn key_file(&self) -> std::path::PathBuf {
        self._dir.path().join("agent.nk")
    }

    async fn broker(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .user_and_password(
                "natter-broker".into(),
                self.options.secrets.broker_password.clone(),
            )
            .connect(self.url())
            .await
            .expect("connect as broker")
    }

    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    fn node_config(&self) -> natter::Config {
        let mut c = natter::Config::defaults();
        c.nats.url = self.url();
        c.nats.password = self.options.secrets.broker_password.clone();
        c.nats.system_password = self.options.secrets.system_password.clone();
        c.nats.callout_seed = self.callout_seed.clone();
        c
    }

    /// Every check-in from now on, seen as the broker sees them.
    async fn checkins(&self) -> async_nats::Subscriber {
        let client = self.broker().await;
        let checkins = client
            .subscribe(natter_actors::subjects::ALL_CHECKINS)
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        checkins
    }
}

/// An agent (the library's `run`, as the binary runs it) checking in every second.
struct RunningAgent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), natter_agent::AgentError>>,
}

impl RunningAgent {
    fn start(nats: &NatsOnPort) -> RunningAgent {
        let config = AgentConfig {
            nats_url: nats.url(),
            nats_user: MACHINE.into(),
            nats_password: nats.token.clone(),
            nkey_seed: Some(
                natter_agent::identity::load_or_create(&nats.key_file()).expect("agent key"),
            ),
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
        RunningAgent { stop, task }
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
    init_logging();
    let mut nats = NatsOnPort::new();
    let agent = RunningAgent::start(&nats);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    nats.start().await;
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
    init_logging();
    let mut nats = NatsOnPort::new();
    nats.start().await;
    let node = TestNode::start(nats.node_config()).await;
    let agent = RunningAgent::start(&nats);
    next_checkin_from_machine(&mut nats.checkins().await).await;

    nats.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.start().await;
    next_checkin_from_machine(&mut nats.checkins().await).await;

    agent.stop_within_limit().await;
    node.shutdown().await;
}
