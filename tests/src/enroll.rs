//! Agents' credentials in tests, as on real machines: each machine has its own key file (under
//! the test server's directory, so a restarted agent keeps its key) and enrolls with a token
//! issued through the same library function as `natter admin enroll-token`.

use std::path::PathBuf;
use std::time::Duration;

use natter_actors::enrollment::Enrollment;
use natter_actors::machines::group_of;
use natter_agent::AgentConfig;

use crate::TestNats;

impl TestNats {
    /// The enrollment store (a node must have been started on this server, or not: it is
    /// created on first use).
    pub async fn enrollment(&self) -> Enrollment {
        Enrollment::ensure(self.broker_client().await)
            .await
            .expect("enrollment store")
    }

    /// A token enrolling up to `uses` machines of `group` within a day.
    pub async fn enroll_token(&self, group: &str, uses: u32) -> String {
        self.enrollment()
            .await
            .issue_token(group, uses, Duration::from_secs(86_400))
            .await
            .expect("issue an enrollment token")
    }

    /// Where `machine`'s agent keeps its key.
    pub fn key_file(&self, machine: &str) -> PathBuf {
        self.keys.path().join(format!("{machine}.nk"))
    }

    /// `machine`'s key seed, created on first use (the agent's first start).
    pub fn machine_seed(&self, machine: &str) -> String {
        natter_agent::identity::load_or_create(&self.key_file(machine)).expect("machine key")
    }

    /// A real agent's settings for `machine`: its own key and a fresh one-use token for its
    /// group (ignored by the node once the machine is enrolled).
    pub async fn agent_config(&self, machine: &str, interval: Duration) -> AgentConfig {
        // Boxed: opening the buckets is a large future, and tests nest this one deeply on a
        // thread's default stack.
        let token = Box::pin(self.enroll_token(group_of(machine), 1)).await;
        AgentConfig {
            nats_url: self.url(),
            nats_ca: self.tls_ca.clone(),
            nats_user: machine.into(),
            nats_password: token,
            nkey_seed: Some(self.machine_seed(machine)),
            machine: machine.into(),
            interval,
            os: "linux".into(),
            ip: "127.0.0.1".into(),
        }
    }

    /// A client connected as the enrolled agent of `machine` (a node must be running: it
    /// answers the auth callout).
    pub async fn agent_client(&self, machine: &str) -> async_nats::Client {
        // One attempt (natter_agent::connect retries forever): a refusal fails the test.
        self.agent_options(machine)
            .await
            .connect(self.url())
            .await
            .expect("connect as agent")
    }

    /// What the enrolled agent of `machine` connects with (machine ID, token, its key), for a
    /// test that adds its own options (an event callback) before connecting.
    pub async fn agent_options(&self, machine: &str) -> async_nats::ConnectOptions {
        let config = self.agent_config(machine, Duration::from_secs(30)).await;
        self.client_options()
            .user_and_password(config.nats_user, config.nats_password)
            .nkey(config.nkey_seed.expect("an agent key"))
    }
}
