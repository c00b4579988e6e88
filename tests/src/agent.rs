//! A real agent for one machine, run in-process against the test's nats-server.

use std::time::Duration;

use natter_agent::{AgentHandle, Presence, RecordingOpener};
use tokio_util::sync::CancellationToken;

use crate::{TestNats, TestNode, eventually};

/// A running test agent whose opener records URLs.
pub struct TestAgent {
    pub handle: AgentHandle,
    pub opener: RecordingOpener,
    pub machine: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestAgent {
    /// Starts an agent for `machine` with `user` logged on, and waits until its first check-in
    /// is visible to the node.
    pub async fn start(
        nats: &TestNats,
        node: &TestNode,
        machine: &str,
        user: Option<&str>,
    ) -> TestAgent {
        Self::start_with(
            nats,
            node,
            machine,
            Presence::user(user),
            Duration::from_secs(30),
        )
        .await
    }

    /// Starts an agent reporting `presence` every `interval`; waits for its first check-in.
    pub async fn start_with(
        nats: &TestNats,
        node: &TestNode,
        machine: &str,
        presence: Presence,
        interval: Duration,
    ) -> TestAgent {
        let handle = AgentHandle::new(presence);
        let opener = RecordingOpener::default();
        let stop = CancellationToken::new();
        let config = nats.agent_config(machine, interval).await;
        let task = tokio::spawn({
            let (handle, opener, stop) = (handle.clone(), opener.clone(), stop.clone());
            async move {
                natter_agent::run(config, handle, std::sync::Arc::new(opener), stop)
                    .await
                    .expect("agent runs");
            }
        });
        wait_for_first_checkin(node, machine).await;
        TestAgent {
            handle,
            opener,
            machine: machine.into(),
            stop,
            task,
        }
    }

    /// Reports `presence` at once instead of at the next interval.
    pub fn check_in(&self, presence: Presence) {
        self.handle.set_presence(presence);
        self.handle.checkin_now();
    }

    /// Makes the agent's opener fail with `reason` from now on (no browser on the machine).
    pub fn fail_to_open(&self, reason: &str) {
        *self.opener.fail_with.lock().unwrap() = Some(reason.into());
    }

    /// The URL the agent was last asked to open, waiting up to 10 s for it.
    pub async fn wait_for_chat_url(&self) -> String {
        let opened = self.opener.opened.clone();
        eventually(Duration::from_secs(10), || {
            let opened = opened.clone();
            async move { !opened.lock().unwrap().is_empty() }
        })
        .await;
        self.opener.opened.lock().unwrap().last().unwrap().1.clone()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Waits until the node's machine store holds a check-in of `machine`.
async fn wait_for_first_checkin(node: &TestNode, machine: &str) {
    let machines = node.node.stores.machines.clone();
    eventually(Duration::from_secs(10), || {
        let machines = machines.clone();
        let machine = machine.to_string();
        async move {
            machines
                .get(machine)
                .await
                .ok()
                .flatten()
                .and_then(|b| {
                    serde_json::from_slice::<natter_actors::machines::MachineRecord>(&b).ok()
                })
                .is_some_and(|m| m.last_checkin.is_some())
        }
    })
    .await;
}
