//! A nats-server child process: the node's embedded default, and what system tests start.
//!
//! The child runs `nats-server -c <config> --addr 127.0.0.1 --port <port> --store_dir <dir>` with
//! only the environment `nats.conf` reads, is waited for until it accepts connections, restarted
//! (same port and store, with a growing back-off) if it dies, and stopped with SIGTERM on
//! [`NatsServer::stop`] — or killed when dropped, so a test that panics leaves no server behind.
//! It never outlives its parent process, even one killed with SIGKILL ([`spawn`]), and it is
//! never started on a store or port another process holds ([`procs`]). The node's own data
//! directory (lock, pid file, callout seed) is [`DataDir`].

mod data_dir;
pub mod procs;
mod spawn;
mod supervise;

pub use data_dir::DataDir;
pub use procs::ProcessInfo;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How to start a nats-server.
#[derive(Clone, Debug)]
pub struct NatsServerOptions {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// 0 = pick a free port.
    pub port: u16,
    pub store_dir: PathBuf,
    /// Where the server's log goes (appended).
    pub log_file: Option<PathBuf>,
    /// The secrets `nats.conf` reads from the child's environment.
    pub secrets: ServerSecrets,
    /// Serve TLS only (`--tls`): every client must then use TLS.
    pub tls: Option<ServerTls>,
}

/// The server's certificate and private key, PEM files.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The secrets `nats.conf` reads from its environment. Their variable names are spelled here
/// and in `nats.conf`, nowhere else.
#[derive(Clone, Debug)]
pub struct ServerSecrets {
    /// Password of the `natter-broker` user (nodes, admin commands).
    pub broker_password: String,
    /// Password of the `natter-simulator` user (a simulated fleet only; random when off).
    pub simulator_password: String,
    /// Password of the `natter-system` user (the nodes' system-account connection).
    pub system_password: String,
    /// Public key of the auth callout issuer (the node signs agents' permissions with its seed).
    pub callout_issuer: String,
}

impl ServerSecrets {
    /// Environment variable of the broker password (also read by the node and the scripts).
    pub const BROKER_PASSWORD_VAR: &str = "NATTER_NATS_BROKER_PASSWORD";
    /// Environment variable of the simulator's password (also read by `natter-agent --simulate`
    /// and the node).
    pub const SIMULATOR_PASSWORD_VAR: &str = "NATTER_NATS_SIMULATOR_PASSWORD";
    /// Environment variable of the system user's password (also read by the node).
    pub const SYSTEM_PASSWORD_VAR: &str = "NATTER_NATS_SYSTEM_PASSWORD";
    /// Environment variable of the auth callout issuer's public key.
    pub const CALLOUT_ISSUER_VAR: &str = "NATTER_NATS_CALLOUT_ISSUER";

    /// Every variable name: the child's whole environment (with TZ).
    pub const VARS: [&str; 4] = [
        Self::BROKER_PASSWORD_VAR,
        Self::SIMULATOR_PASSWORD_VAR,
        Self::SYSTEM_PASSWORD_VAR,
        Self::CALLOUT_ISSUER_VAR,
    ];

    /// The variables as (name, value) pairs for the child's environment.
    pub fn env(&self) -> [(&'static str, &str); 4] {
        [
            (Self::BROKER_PASSWORD_VAR, &self.broker_password),
            (Self::SIMULATOR_PASSWORD_VAR, &self.simulator_password),
            (Self::SYSTEM_PASSWORD_VAR, &self.system_password),
            (Self::CALLOUT_ISSUER_VAR, &self.callout_issuer),
        ]
    }
}

/// Why a nats-server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no nats-server found: install one (scripts/setup) or set nats.server_bin")]
    NotFound,
    #[error("nats-server {0} is too old: Natter needs 2.11 or newer")]
    TooOld(String),
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nats-server exited at start ({0}); see its log")]
    Exited(String),
    #[error("nats-server did not accept connections on port {0} within 15 s")]
    NotReady(u16),
    #[error(
        "port {0} is in use by another process (not a nats-server of this node): stop it or \
         choose another nats.embedded_port"
    )]
    PortInUse(u16),
    #[error(
        "the store {store} is in use by another nats-server (pid {}: {}): two servers on one \
         store can corrupt it; stop that server first",
        holder.pid,
        holder.command
    )]
    StoreInUse { store: PathBuf, holder: ProcessInfo },
    #[error(
        "the data directory {path} is used by another natter node (pid {holder}): one node per \
         storage.data_dir"
    )]
    DataDirInUse { path: PathBuf, holder: String },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a valid auth callout seed: {reason}")]
    BadSeed {
        path: PathBuf,
        #[source]
        reason: nkeys::error::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running nats-server.
pub struct NatsServer {
    port: u16,
    stop: CancellationToken,
    stopped: watch::Receiver<bool>,
    /// Set when the server died and cannot be restarted.
    failure: watch::Receiver<Option<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Finds a nats-server: `configured` if set, else one on PATH, else `.tools/nats/bin`.
pub fn find_server_bin(configured: &str) -> Result<PathBuf, EmbeddedError> {
    if !configured.is_empty() && configured.contains('/') {
        return Ok(PathBuf::from(configured));
    }
    // The child's environment has no PATH: a bare name is looked up here, in ours.
    let name = if configured.is_empty() {
        "nats-server"
    } else {
        configured
    };
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() && (!configured.is_empty() || version_ok(&candidate)) {
                return Ok(candidate);
            }
        }
    }
    if !configured.is_empty() {
        return Ok(PathBuf::from(configured));
    }
    let local = PathBuf::from(".tools/nats/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    Err(EmbeddedError::NotFound)
}

fn version_ok(bin: &Path) -> bool {
    check_version(bin).is_ok()
}

/// Checks that `bin` is nats-server 2.11 or newer.
pub fn check_version(bin: &Path) -> Result<(), EmbeddedError> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|source| EmbeddedError::Spawn {
            bin: bin.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text.trim().trim_start_matches("nats-server: v").to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (2, 11) {
        Ok(())
    } else {
        Err(EmbeddedError::TooOld(version))
    }
}

/// Asks the OS for a free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn command(opts: &NatsServerOptions, port: u16) -> Result<Command, EmbeddedError> {
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("-c")
        .arg(&opts.config)
        .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
        .arg("--store_dir")
        .arg(&opts.store_dir)
        // Only the secrets nats.conf reads (and TZ, so its log's times match ours): the node's
        // own environment holds other secrets the server has no use for.
        .env_clear()
        .envs(opts.secrets.env())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(tz) = std::env::var_os("TZ") {
        cmd.env("TZ", tz);
    }
    if let Some(tls) = &opts.tls {
        cmd.args(["--tls", "--tlscert"])
            .arg(&tls.cert)
            .arg("--tlskey")
            .arg(&tls.key);
    }
    match &opts.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    Ok(cmd)
}

/// Refuses a start that would put a second server on our store or connect us to a stranger on
/// our port.
fn preflight(opts: &NatsServerOptions, port: u16) -> Result<(), EmbeddedError> {
    if let Some(holder) = procs::servers_on_store(&opts.store_dir, None)
        .into_iter()
        .next()
    {
        return Err(EmbeddedError::StoreInUse {
            store: opts.store_dir.clone(),
            holder,
        });
    }
    if !procs::port_is_free(port) {
        return Err(EmbeddedError::PortInUse(port));
    }
    Ok(())
}

/// Spawns the server and waits until it accepts connections.
async fn start_child(opts: &NatsServerOptions, port: u16) -> Result<Child, EmbeddedError> {
    let mut child = spawn::spawn_tied(command(opts, port)?)
        .await
        .map_err(|source| EmbeddedError::Spawn {
            bin: opts.bin.display().to_string(),
            source,
        })?;
    if let Err(e) = wait_ready(&mut child, port).await {
        let _ = child.kill().await;
        return Err(e);
    }
    Ok(child)
}

async fn wait_ready(child: &mut Child, port: u16) -> Result<(), EmbeddedError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(EmbeddedError::Exited(status.to_string()));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            // Whoever answered, it must be our child (still running), not a process that took
            // the port after our check.
            return match child.try_wait()? {
                Some(status) => Err(EmbeddedError::Exited(status.to_string())),
                None => Ok(()),
            };
        }
        if tokio::time::Instant::now() > deadline {
            return Err(EmbeddedError::NotReady(port));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl NatsServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(opts: NatsServerOptions) -> Result<NatsServer, EmbeddedError> {
        Self::launch(opts, None).await
    }

    /// Starts a node's server from its data directory: as [`NatsServer::start`], and each
    /// server's pid is recorded in the directory so a later node can find an orphan.
    pub async fn start_in(
        opts: NatsServerOptions,
        data_dir: &DataDir,
    ) -> Result<NatsServer, EmbeddedError> {
        data_dir.stop_orphan(&opts)?;
        Self::launch(opts, Some(data_dir.server_pid_file())).await
    }

    async fn launch(
        opts: NatsServerOptions,
        pid_file: Option<PathBuf>,
    ) -> Result<NatsServer, EmbeddedError> {
        check_version(&opts.bin)?;
        std::fs::create_dir_all(&opts.store_dir)?;
        let port = if opts.port == 0 {
            free_port()?
        } else {
            opts.port
        };
        preflight(&opts, port)?;
        let child = start_child(&opts, port).await?;
        let stop = CancellationToken::new();
        let (stopped_tx, stopped) = watch::channel(false);
        let (failure_tx, failure) = watch::channel(None);
        let supervisor = supervise::Supervisor {
            opts,
            port,
            pid_file,
            stop: stop.clone(),
            failure: failure_tx,
        };
        supervisor.record_pid(&child)?;
        let task = tokio::spawn(async move {
            supervisor.run(child).await;
            let _ = stopped_tx.send(true);
        });
        Ok(NatsServer {
            port,
            stop,
            stopped,
            failure,
            task: Some(task),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Resolves, with the reason, if the server died and cannot be restarted (its port was
    /// taken by another process); never resolves otherwise.
    pub fn failure(&self) -> impl Future<Output = String> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let why = match failure.wait_for(Option::is_some).await {
                Ok(why) => why.clone(),
                Err(_) => None,
            };
            match why {
                Some(why) => why,
                // The server was stopped on purpose: no failure will ever come.
                None => std::future::pending().await,
            }
        }
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after 2 s) and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = self.stopped.wait_for(|s| *s).await;
        self.task.take();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Abort the supervising task: its child is kill_on_drop, so the server dies with it.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
