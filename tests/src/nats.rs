//! A real nats-server with JetStream for one test.

use std::path::PathBuf;
use std::time::Duration;

use natter::Config;
use natter::embedded::{
    EmbeddedError, NatsServer, NatsServerOptions, ServerSecrets, ServerTls, find_server_bin,
    free_port,
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
        nats.start_on_a_free_port().await;
        nats
    }

    /// The first start: a port found free may be taken by another test before the server
    /// binds it (seen in CI with many tests at once); then it starts on another one.
    async fn start_on_a_free_port(&mut self) {
        for _ in 0..5 {
            match NatsServer::start(self.options.clone()).await {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(EmbeddedError::PortInUse(_)) => {
                    self.options.port = free_port().expect("a free port");
                }
                Err(e) => panic!("start nats-server: {e:?}"),
            }
        }
        panic!("start nats-server: every port tried was taken");
    }

    /// A server that accepts TLS connections only, with a certificate for 127.0.0.1 and
    /// localhost signed by a CA made now ([`TestNats::tls_ca`]); running.
    pub async fn start_tls() -> TestNats {
        let mut nats = TestNats::prepare();
        let (ca, server) = write_test_ca(nats._dir.path());
        nats.options.tls = Some(server);
        nats.tls_ca = Some(ca);
        nats.start_on_a_free_port().await;
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

/// Three real nats-servers in one cluster (`--cluster_name natter`, routes to each other),
/// JetStream on each, started from the repository's `nats.conf` with the per-server flags a
/// deployment uses (`-n`, `--cluster`, `--routes`, `-p`, `-sd`). Each server can be killed
/// (`SIGKILL`), stopped (`SIGTERM`) and started again on its ports and store; all are killed
/// when the cluster is dropped.
pub struct TestCluster {
    servers: Vec<ClusterServer>,
    bin: PathBuf,
    config: PathBuf,
    secrets: ServerSecrets,
    pub broker_password: String,
    pub simulator_password: String,
    pub system_password: String,
    /// Seed of the auth callout issuer every node signs agents' permissions with.
    pub callout_seed: String,
    /// The agents' key files.
    keys: tempfile::TempDir,
    dir: tempfile::TempDir,
}

/// One server of a [`TestCluster`].
struct ClusterServer {
    name: String,
    port: u16,
    cluster_port: u16,
    store_dir: PathBuf,
    log_file: PathBuf,
    child: Option<std::process::Child>,
}

/// How many servers a [`TestCluster`] has (JetStream replicas 3 need three).
pub const CLUSTER_SIZE: usize = 3;

/// How long a server gets to start, and the cluster to elect a JetStream leader.
const CLUSTER_START: Duration = Duration::from_secs(20);

/// How many times a cluster's first start is tried, each on fresh ports.
const CLUSTER_START_ATTEMPTS: usize = 3;

impl TestCluster {
    /// Three servers on free ports, running, with a JetStream meta leader.
    pub async fn start() -> TestCluster {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let (callout_seed, issuer) = natter_actors::auth_callout::Callout::generate_issuer();
        let secrets = ServerSecrets {
            broker_password: "broker-test-secret".into(),
            simulator_password: "simulator-test-secret".into(),
            system_password: "system-test-secret".into(),
            callout_issuer: issuer,
        };
        let servers = (1..=CLUSTER_SIZE)
            .map(|i| ClusterServer {
                name: format!("natter-test-{i}"),
                port: free_port().expect("a free port"),
                cluster_port: free_port().expect("a free port"),
                store_dir: dir.path().join(format!("js{i}")),
                log_file: dir.path().join(format!("nats{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = TestCluster {
            servers,
            bin: server_bin(),
            config: repo_root().join("nats.conf"),
            broker_password: secrets.broker_password.clone(),
            simulator_password: secrets.simulator_password.clone(),
            system_password: secrets.system_password.clone(),
            secrets,
            callout_seed,
            keys: tempfile::tempdir().expect("temp dir"),
            dir,
        };
        let mut failures = Vec::new();
        for attempt in 1..=CLUSTER_START_ATTEMPTS {
            match cluster.first_start().await {
                Ok(()) => return cluster,
                Err(failure) => {
                    eprintln!("test cluster, start {attempt} failed: {failure}");
                    failures.push(failure);
                    for i in 0..CLUSTER_SIZE {
                        cluster.kill(i);
                    }
                    cluster.move_to_fresh_ports(attempt);
                }
            }
        }
        panic!(
            "the test cluster did not start in {CLUSTER_START_ATTEMPTS} tries:\n{}",
            failures.join("\n")
        );
    }

    /// Starts all three servers and waits until each serves JetStream. A first start needs
    /// every server listed in the routes up before any elects a meta leader, so one server
    /// that dies (a port found free but taken by another test before it bound it) stalls
    /// the other two: every server is watched, and the whole start fails with all logs.
    async fn first_start(&mut self) -> Result<(), String> {
        for i in 0..CLUSTER_SIZE {
            self.spawn(i);
        }
        for i in 0..CLUSTER_SIZE {
            self.wait_until_serving(i, 0..CLUSTER_SIZE).await?;
        }
        Ok(())
    }

    /// New free ports and empty stores for every server, for another first start.
    fn move_to_fresh_ports(&mut self, attempt: usize) {
        for (i, server) in self.servers.iter_mut().enumerate() {
            server.port = free_port().expect("a free port");
            server.cluster_port = free_port().expect("a free port");
            server.store_dir = self.dir.path().join(format!("js{}-{attempt}", i + 1));
            server.log_file = self.dir.path().join(format!("nats{}-{attempt}.log", i + 1));
        }
    }

    /// Every server's client URL, comma-separated (what `nats.url` of a node holds).
    pub fn url(&self) -> String {
        (0..CLUSTER_SIZE)
            .map(|i| self.server_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of server `i` (0-based).
    pub fn server_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].port)
    }

    /// The server that leads JetStream stream `stream` now (for a test that kills the worst
    /// one to lose), if it has a leader.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let js = async_nats::jetstream::new(self.broker_client().await);
        let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
        let leader = info.cluster?.leader?;
        self.servers.iter().position(|s| s.name == leader)
    }

    /// The server's log (for a failing test's message).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log_file).unwrap_or_default()
    }

    /// Kills server `i` with SIGKILL (a crash): it answers nothing from now on.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops server `i` with SIGTERM (lame-duck and JetStream shutdown) and waits for it.
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() {
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it serves JetStream.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.servers[i].child.is_none(), "server {i} is running");
        self.spawn(i);
        if let Err(failure) = self.wait_until_serving(i, i..i + 1).await {
            panic!("{failure}");
        }
    }

    fn spawn(&mut self, i: usize) {
        let routes = self
            .servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let server = &self.servers[i];
        let child = std::process::Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(["-n", &server.name, "-a", "127.0.0.1"])
            .args(["-p", &server.port.to_string()])
            .args(["--cluster_name", "natter"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", server.cluster_port),
            ])
            .args(["--routes", &routes])
            .arg("-sd")
            .arg(&server.store_dir)
            .arg("-l")
            .arg(&server.log_file)
            .env_clear()
            .envs(self.secrets.env())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.servers[i].child = Some(child);
    }

    /// Waits until server `i` accepts the broker and answers JetStream requests (the cluster
    /// has a meta leader); fails, with the logs, when one of the `watched` servers exits or
    /// the time is up.
    async fn wait_until_serving(
        &mut self,
        i: usize,
        watched: std::ops::Range<usize>,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + CLUSTER_START;
        let url = self.server_url(i);
        loop {
            let attempt = async_nats::ConnectOptions::new()
                .user_and_password("natter-broker".into(), self.broker_password.clone())
                .connect(url.as_str())
                .await;
            if let Ok(client) = attempt
                && async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            for w in watched.clone() {
                if let Some(child) = self.servers[w].child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "nats-server {w} exited ({status}): {}",
                        self.log(w)
                    ));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let logs = watched
                    .map(|w| format!("--- nats-server {w}:\n{}", self.log(w)))
                    .collect::<String>();
                return Err(format!(
                    "nats-server {i} did not serve JetStream within {CLUSTER_START:?}:\n{logs}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A node configuration pointing at every server, with replicas 3 and test-friendly
    /// timings (as [`TestNats::node_config`]).
    pub fn node_config(&self) -> Config {
        let mut c = Config::defaults();
        c.nats.url = self.url();
        c.nats.replicas = CLUSTER_SIZE;
        c.nats.password = self.broker_password.clone();
        c.nats.simulator_password = self.simulator_password.clone();
        c.nats.system_password = self.system_password.clone();
        c.nats.callout_seed = self.callout_seed.clone();
        c.http.request_timeout = Duration::from_secs(3);
        c.http.drain_timeout = Duration::from_secs(1);
        c.chat.agent_timeout = Duration::from_secs(2);
        c
    }

    /// A client connected as the broker to every server (it fails over between them).
    pub async fn broker_client(&self) -> async_nats::Client {
        let urls: Vec<String> = (0..CLUSTER_SIZE).map(|i| self.server_url(i)).collect();
        async_nats::ConnectOptions::new()
            .user_and_password("natter-broker".into(), self.broker_password.clone())
            .connect(urls)
            .await
            .expect("connect as broker")
    }

    /// A real agent's settings for `machine` (its own key, a one-use enrollment token),
    /// connecting to server `server` first (it learns the others from the cluster).
    pub async fn agent_config(
        &self,
        machine: &str,
        server: usize,
        interval: Duration,
    ) -> natter_agent::AgentConfig {
        let enrollment = natter_actors::enrollment::Enrollment::ensure_replicated(
            self.broker_client().await,
            CLUSTER_SIZE,
        )
        .await
        .expect("enrollment store");
        let token = enrollment
            .issue_token(
                natter_actors::machines::group_of(machine),
                1,
                Duration::from_secs(86_400),
            )
            .await
            .expect("issue an enrollment token");
        let key_file = self.keys.path().join(format!("{machine}.nk"));
        natter_agent::AgentConfig {
            nats_url: self.server_url(server),
            nats_ca: None,
            nats_user: machine.into(),
            nats_password: token,
            nkey_seed: Some(
                natter_agent::identity::load_or_create(&key_file).expect("machine key"),
            ),
            machine: machine.into(),
            interval,
            os: "linux".into(),
            ip: "127.0.0.1".into(),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
