//! What the `natter` binary tests share: the node as a real process in the embedded mode, on
//! free loopback ports with its own data directory, and what a user can observe of it.

#![allow(dead_code)] // each test file uses a part

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BROKER_PASSWORD: &str = "embedded-test";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn nats_server() -> PathBuf {
    match std::env::var("NATTER_NATS_SERVER") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".tools/nats/bin/nats-server"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A `natter serve` process in the embedded mode.
pub struct Node {
    pub child: Child,
    pub http: u16,
    pub nats_port: u16,
    /// The node's output (its log and its last words).
    pub log: PathBuf,
}

/// Starts `natter serve` on `data` with the given ports; its output goes to `log`.
pub fn spawn_node(data: &Path, http: u16, nats_port: u16, log: &Path) -> Node {
    spawn_node_with(data, http, nats_port, log, &[])
}

/// [`spawn_node`] with more environment (configuration overrides such as `NATTER__NATS__…`).
pub fn spawn_node_with(
    data: &Path,
    http: u16,
    nats_port: u16,
    log: &Path,
    env: &[(&str, &Path)],
) -> Node {
    let mut command = node_command(data, http, log);
    command
        .envs(env.iter().copied())
        .env("NATTER__NATS__SERVER_BIN", nats_server())
        .env("NATTER__NATS__EMBEDDED_PORT", nats_port.to_string())
        .env("NATTER_NATS_BROKER_PASSWORD", BROKER_PASSWORD);
    Node {
        child: command.spawn().unwrap(),
        http,
        nats_port,
        log: log.to_path_buf(),
    }
}

/// `natter serve` with its own data directory and HTTP port, output to `log`; the caller adds
/// how it reaches NATS.
pub fn node_command(data: &Path, http: u16, log: &Path) -> Command {
    let log_file = File::create(log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
    command
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "serve"])
        .env("NATTER__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("NATTER__STORAGE__DATA_DIR", data)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    command
}

impl Node {
    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(self.http, "/readyz").is_some_and(|r| r.contains("200 OK")) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("natter exited during start ({status}): {}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "natter was not ready within 30 s: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit (it must within `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "natter did not exit within {limit:?}: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, and it must stop cleanly.
    pub fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "{status}: {}", self.output());
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live nats-server processes whose command line names `data` (a zombie has none).
pub fn nats_servers_using(data: &Path) -> Vec<u32> {
    let needle = data.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("nats-server") && cmdline.contains(&needle)
        })
        .collect()
}

/// The pid the node recorded for its nats-server.
pub fn recorded_server_pid(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("nats-server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A real agent's settings for `machine`: a fresh key and a one-use enrollment token for its
/// group, issued through the library as `natter admin enroll-token` does (retried until the
/// server answers, e.g. while the node restarts it).
pub async fn agent_config(nats_url: &str, machine: &str) -> natter_agent::AgentConfig {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let token = loop {
        match issue_token(nats_url, natter_actors::machines::group_of(machine)).await {
            Ok(token) => break token,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no enrollment token within 15 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    natter_agent::AgentConfig {
        nats_url: nats_url.to_string(),
        nats_ca: None,
        nats_user: machine.to_string(),
        nats_password: token,
        nkey_seed: Some(nkeys::KeyPair::new_user().seed().unwrap()),
        machine: machine.to_string(),
        interval: Duration::from_secs(1),
        os: "test".into(),
        ip: "127.0.0.1".into(),
    }
}

async fn issue_token(nats_url: &str, group: &str) -> Result<String, Box<dyn std::error::Error>> {
    let broker = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), BROKER_PASSWORD.into())
        .connect(nats_url)
        .await?;
    let enrollment = natter_actors::enrollment::Enrollment::ensure(broker).await?;
    Ok(enrollment
        .issue_token(group, 1, Duration::from_secs(3600))
        .await?)
}

/// Waits until the server admits `agent` (the node answers the auth callout again after a
/// restart of its server). The first admission enrolls it.
pub async fn wait_agent_admitted(agent: &natter_agent::AgentConfig) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .user_and_password(agent.nats_user.clone(), agent.nats_password.clone())
            .nkey(agent.nkey_seed.clone().unwrap_or_default())
            .connect(&agent.nats_url)
            .await;
        match attempt {
            Ok(_) => return,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the agent of {} is still refused after 15 s: {e}",
                agent.machine
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A process the test started by hand, killed when the test ends (even when it fails).
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a nats-server by hand on `data`'s store with the node's arguments and `port`, as a
/// node of an older build (or a person) would have.
pub fn spawn_foreign_server(data: &Path, port: u16) -> KillOnDrop {
    let (_, issuer) = natter_actors::auth_callout::Callout::generate_issuer();
    let secrets = natter::embedded::ServerSecrets {
        broker_password: BROKER_PASSWORD.into(),
        simulator_password: "embedded-simulator".into(),
        system_password: "embedded-system".into(),
        callout_issuer: issuer,
    };
    let child = Command::new(nats_server())
        .arg("-c")
        .arg(repo_root().join("nats.conf"))
        .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
        .arg("--store_dir")
        .arg(data.join("nats"))
        .env_clear()
        .envs(secrets.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not listen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Runs an agent for `machine` against `nats_url` and waits until the node has its check-in in
/// the machines bucket: the server admitted the agent through the node's auth callout.
pub async fn agent_checks_in(nats_url: &str, machine: &str) {
    agent_with_key_checks_in(agent_config(nats_url, machine).await).await
}

/// Runs `agent` and waits until the node has its check-in; see [`agent_checks_in`].
pub async fn agent_with_key_checks_in(agent: natter_agent::AgentConfig) {
    let (nats_url, machine) = (agent.nats_url.clone(), agent.machine.clone());
    let (nats_url, machine) = (nats_url.as_str(), machine.as_str());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut agent = tokio::spawn(natter_agent::run(
        agent,
        natter_agent::AgentHandle::new(natter_agent::Presence::user(None)),
        Arc::new(natter_agent::RecordingOpener::default()),
        stop.clone(),
    ));
    let broker = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), BROKER_PASSWORD.into())
        .connect(nats_url)
        .await
        .unwrap();
    let machines = async_nats::jetstream::new(broker)
        .get_key_value(natter_actors::store::MACHINES_BUCKET)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if machines.get(machine).await.unwrap().is_some() {
            break;
        }
        if agent.is_finished() {
            let result = (&mut agent).await.unwrap();
            panic!("the agent of {machine} stopped: {result:?}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no check-in of {machine} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = agent.await;
}
