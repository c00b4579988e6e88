//! A real nats-server with JetStream for one test.

use std::path::PathBuf;
use std::time::Duration;

use natter::Config;
use natter::embedded::{NatsServer, NatsServerOptions, ServerSecrets, find_server_bin};

use crate::{init_logging, repo_root};

/// A real nats-server with JetStream, started from the repository's `nats.conf` on a free port
/// with its own store directory; killed when dropped.
pub struct TestNats {
    pub server: NatsServer,
    pub broker_password: String,
    pub simulator_password: String,
    pub system_password: String,
    /// Seed of the auth callout issuer (the node signs agents' permissions with it).
    pub callout_seed: String,
    /// The agents' key files ([`TestNats::key_file`]).
    pub(crate) keys: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl TestNats {
    pub async fn start() -> TestNats {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let broker_password = "broker-test-secret".to_string();
        let simulator_password = "simulator-test-secret".to_string();
        let system_password = "system-test-secret".to_string();
        let (callout_seed, issuer) = natter_actors::auth_callout::Callout::generate_issuer();
        let server = NatsServer::start(NatsServerOptions {
            bin: server_bin(),
            config: repo_root().join("nats.conf"),
            port: 0,
            store_dir: dir.path().join("js"),
            log_file: Some(dir.path().join("nats.log")),
            secrets: ServerSecrets {
                broker_password: broker_password.clone(),
                simulator_password: simulator_password.clone(),
                system_password: system_password.clone(),
                callout_issuer: issuer,
            },
        })
        .await
        .expect("start nats-server");
        TestNats {
            server,
            callout_seed,
            broker_password,
            simulator_password,
            system_password,
            keys: tempfile::tempdir().expect("temp dir"),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A node configuration pointing at this server, with test-friendly timings.
    pub fn node_config(&self) -> Config {
        let mut c = Config::defaults();
        c.nats.url = self.url();
        c.nats.password = self.broker_password.clone();
        c.nats.simulator_password = self.simulator_password.clone();
        c.nats.system_password = self.system_password.clone();
        c.nats.callout_seed = self.callout_seed.clone();
        c.http.request_timeout = Duration::from_secs(3);
        c.http.drain_timeout = Duration::from_secs(1);
        c.chat.agent_timeout = Duration::from_secs(2);
        c
    }

    /// A client connected as the broker (full access), for setting up state.
    pub async fn broker_client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .user_and_password("natter-broker".into(), self.broker_password.clone())
            .connect(self.url())
            .await
            .expect("connect as broker")
    }
}

/// `NATTER_NATS_SERVER`, else the one `scripts/setup` installs, else one on the `PATH`.
fn server_bin() -> PathBuf {
    match std::env::var("NATTER_NATS_SERVER") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let local = repo_root().join(".tools/nats/bin/nats-server");
            if local.is_file() {
                local
            } else {
                find_server_bin("").expect("nats-server: run scripts/setup")
            }
        }
    }
}
