//! A real nats-server with JetStream for one test.

use std::path::PathBuf;
use std::time::Duration;

use natter::Config;
use natter::embedded::{
    NatsServer, NatsServerOptions, ServerSecrets, ServerTls, find_server_bin, free_port,
};

use crate::{init_logging, repo_root};

/// A real nats-server with JetStream, started from the repository's `nats.conf` with its own
/// store directory; killed when dropped. It can be stopped and started again on the same port,
/// store and secrets (a NATS outage under a running node or agent).
pub struct TestNats {
    options: NatsServerOptions,
    server: Option<NatsServer>,
    pub broker_password: String,
    pub simulator_password: String,
    pub system_password: String,
    /// Seed of the auth callout issuer (the node signs agents' permissions with it).
    pub callout_seed: String,
    /// The agents' key files ([`TestNats::key_file`]).
    pub(crate) keys: tempfile::TempDir,
    /// TLS mode: the test CA (PEM) that signed the server's certificate.
    pub tls_ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl TestNats {
    /// A server on a free port, running.
    pub async fn start() -> TestNats {
        let mut nats = TestNats::prepare();
        nats.resume().await;
        nats
    }

    /// A server that accepts TLS connections only, with a certificate for 127.0.0.1 and
    /// localhost signed by a CA made now ([`TestNats::tls_ca`]); running.
    pub async fn start_tls() -> TestNats {
        let mut nats = TestNats::prepare();
        let (ca, server) = write_test_ca(nats._dir.path());
        nats.options.tls = Some(server);
        nats.tls_ca = Some(ca);
        nats.resume().await;
        nats
    }

    /// A server whose port is chosen now but which is not running yet (so clients can be
    /// pointed at it first); [`TestNats::resume`] starts it.
    pub fn prepare() -> TestNats {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let broker_password = "broker-test-secret".to_string();
        let simulator_password = "simulator-test-secret".to_string();
        let system_password = "system-test-secret".to_string();
        let (callout_seed, issuer) = natter_actors::auth_callout::Callout::generate_issuer();
        let options = NatsServerOptions {
            bin: server_bin(),
            config: repo_root().join("nats.conf"),
            port: free_port().expect("a free port"),
            store_dir: dir.path().join("js"),
            log_file: Some(dir.path().join("nats.log")),
            secrets: ServerSecrets {
                broker_password: broker_password.clone(),
                simulator_password: simulator_password.clone(),
                system_password: system_password.clone(),
                callout_issuer: issuer,
            },
            tls: None,
        };
        TestNats {
            options,
            server: None,
            callout_seed,
            broker_password,
            simulator_password,
            system_password,
            keys: tempfile::tempdir().expect("temp dir"),
            tls_ca: None,
            _dir: dir,
        }
    }

    /// Starts the server (again) on its port, store and secrets.
    pub async fn resume(&mut self) {
        assert!(self.server.is_none(), "nats-server is already running");
        let server = NatsServer::start(self.options.clone())
            .await
            .expect("start nats-server");
        self.server = Some(server);
    }

    /// Stops the server; the store stays for [`TestNats::resume`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.options.port)
    }

    /// A node configuration pointing at this server, with test-friendly timings.
    pub fn node_config(&self) -> Config {
        let mut c = Config::defaults();
        c.nats.url = self.url();
        c.nats.password = self.broker_password.clone();
        c.nats.simulator_password = self.simulator_password.clone();
        c.nats.system_password = self.system_password.clone();
        c.nats.callout_seed = self.callout_seed.clone();
        c.nats.tls_ca = self.tls_ca.clone();
        c.http.request_timeout = Duration::from_secs(3);
        c.http.drain_timeout = Duration::from_secs(1);
        c.chat.agent_timeout = Duration::from_secs(2);
        c
    }

    /// A client connected as the broker (full access), for setting up state.
    pub async fn broker_client(&self) -> async_nats::Client {
        self.client_options()
            .user_and_password("natter-broker".into(), self.broker_password.clone())
            .connect(self.url())
            .await
            .expect("connect as broker")
    }
}

impl TestNats {
    /// Connect options that trust the test CA in TLS mode.
    pub fn client_options(&self) -> async_nats::ConnectOptions {
        let options = async_nats::ConnectOptions::new();
        match &self.tls_ca {
            Some(ca) => options.require_tls(true).add_root_certificates(ca.clone()),
            None => options,
        }
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 and localhost signed by it, writes them
/// (PEM) under `dir`, and returns the CA's path and the server's files.
fn write_test_ca(dir: &std::path::Path) -> (PathBuf, ServerTls) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Natter test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let server_params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("server params");
    let server_cert = server_params
        .signed_by(&server_key, &Issuer::new(ca_params, ca_key))
        .expect("server certificate");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    let ca = write("ca.pem", ca_cert.pem());
    let tls = ServerTls {
        cert: write("server.pem", server_cert.pem()),
        key: write("server-key.pem", server_key.serialize_pem()),
    };
    (ca, tls)
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
