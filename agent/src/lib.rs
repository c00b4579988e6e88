//! The Natter agent: the program on a managed machine.
//!
//! It connects to NATS with its machine's own key ([`identity`]; the first time with an
//! enrollment token too), publishes a check-in on its own subject every
//! interval (with ±10% jitter so a fleet does not check in in lockstep), and answers commands on
//! its own command subject — today "open the machine user's chat window", which it does with an
//! [`Opener`] and reports back whether the window opened. The demo fleet and the tests run this
//! same code; only the opener differs.

pub mod identity;
pub mod simulate;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use natter_actors::protocol::{AgentCommand, AgentReply, Checkin};
use natter_actors::subjects;
use tokio_util::sync::CancellationToken;

/// Opens a chat URL in the machine user's browser.
pub trait Opener: Send + Sync {
    /// Opens `url`; `Err` says why the window could not be opened.
    fn open(&self, machine: &str, url: &str) -> Result<(), String>;
}

/// Runs a command with the URL as its last argument (e.g. `xdg-open`).
pub struct CommandOpener {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandOpener {
    /// From a command line such as `"xdg-open"` or `"firefox --new-window"`.
    pub fn parse(command: &str) -> Option<CommandOpener> {
        let mut parts = command.split_whitespace().map(String::from);
        Some(CommandOpener {
            program: parts.next()?,
            args: parts.collect(),
        })
    }
}

impl Opener for CommandOpener {
    fn open(&self, _machine: &str, url: &str) -> Result<(), String> {
        std::process::Command::new(&self.program)
            .args(&self.args)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("could not run {}: {e}", self.program))
    }
}

/// For machines with no browser (the demo): prints the URL for a person to open.
pub struct PrintOpener;

impl Opener for PrintOpener {
    fn open(&self, machine: &str, url: &str) -> Result<(), String> {
        // Plain stdout, one line: a person copies the URL from here.
        println!("open chat on {machine}: {url}");
        Ok(())
    }
}

/// Records the URLs it is asked to open (tests); can be told to fail.
#[derive(Default, Clone)]
pub struct RecordingOpener {
    pub opened: Arc<Mutex<Vec<(String, String)>>>,
    pub fail_with: Arc<Mutex<Option<String>>>,
}

impl Opener for RecordingOpener {
    fn open(&self, machine: &str, url: &str) -> Result<(), String> {
        if let Some(why) = self.fail_with.lock().map_err(|e| e.to_string())?.clone() {
            return Err(why);
        }
        self.opened
            .lock()
            .map_err(|e| e.to_string())?
            .push((machine.to_string(), url.to_string()));
        Ok(())
    }
}

/// What the next check-in reports about the machine.
#[derive(Clone, Debug)]
pub struct Presence {
    /// The logged-on user, if any.
    pub user: Option<String>,
    /// Seconds since the user's last input.
    pub idle_secs: u64,
    /// Whether the first audit has completed.
    pub audit_done: bool,
    /// Whether remote control is enabled.
    pub remote_control: bool,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            user: None,
            idle_secs: 0,
            audit_done: true,
            remote_control: true,
        }
    }
}

impl Presence {
    /// Someone (or nobody) logged on, everything else normal.
    pub fn user(user: Option<&str>) -> Presence {
        Presence {
            user: user.map(String::from),
            ..Presence::default()
        }
    }
}

/// One agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub nats_url: String,
    /// The machine ID for a real agent; `natter-simulator` for the simulator.
    pub nats_user: String,
    /// A real agent's enrollment token (empty once enrolled: its key is enough), or the
    /// simulator's password.
    pub nats_password: String,
    /// A real agent's NKey seed ([`identity::load_or_create`]); it signs the server's nonce.
    pub nkey_seed: Option<String>,
    pub machine: String,
    pub interval: Duration,
    pub os: String,
    pub ip: String,
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0:?} is not a machine ID (like pc1.sales.acme)")]
    BadMachineId(String),
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("subscribing to commands: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A running agent's handle: change what it reports.
#[derive(Clone, Default)]
pub struct AgentHandle {
    presence: Arc<Mutex<Presence>>,
    wake: Arc<tokio::sync::Notify>,
}

impl AgentHandle {
    pub fn new(presence: Presence) -> Self {
        AgentHandle {
            presence: Arc::new(Mutex::new(presence)),
            wake: Arc::default(),
        }
    }
    pub fn set_presence(&self, p: Presence) {
        if let Ok(mut guard) = self.presence.lock() {
            *guard = p;
        }
    }
    pub fn presence(&self) -> Presence {
        self.presence.lock().map(|p| p.clone()).unwrap_or_default()
    }
    /// Asks the agent to check in now (instead of at its next interval).
    pub fn checkin_now(&self) {
        self.wake.notify_one();
    }
}

fn checkin(config: &AgentConfig, presence: &Presence) -> Checkin {
    Checkin {
        v: 1,
        machine: config.machine.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        os: config.os.clone(),
        ip: config.ip.clone(),
        user: presence.user.clone(),
        idle_secs: presence.idle_secs,
        interval_secs: config.interval.as_secs().max(1),
        audit_done: presence.audit_done,
        remote_control: presence.remote_control,
    }
}

/// The interval with ±10% jitter.
fn jittered(interval: Duration) -> Duration {
    let factor = 0.9 + rand::random::<f64>() * 0.2;
    interval.mul_f64(factor)
}

/// Connects as an agent.
pub async fn connect(config: &AgentConfig, name: &str) -> Result<async_nats::Client, AgentError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .user_and_password(config.nats_user.clone(), config.nats_password.clone());
    if let Some(seed) = &config.nkey_seed {
        // Sent along with user and password: the node checks the signature and the binding.
        options = options.nkey(seed.clone());
    }
    Ok(options.connect(&config.nats_url).await?)
}

/// Runs one agent on its own NATS connection until `shutdown`.
pub async fn run(
    config: AgentConfig,
    handle: AgentHandle,
    opener: Arc<dyn Opener>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    if !natter_actors::protocol::valid_machine_id(&config.machine) {
        return Err(AgentError::BadMachineId(config.machine));
    }
    let client = connect(&config, &format!("natter-agent {}", config.machine)).await?;
    run_on(client, config, handle, opener, shutdown).await
}

/// Runs one agent on a given connection (a simulated fleet shares connections: one process
/// cannot hold 100k sockets) until `shutdown`. Same protocol, subjects and payloads as [`run`].
pub async fn run_on(
    client: async_nats::Client,
    config: AgentConfig,
    handle: AgentHandle,
    opener: Arc<dyn Opener>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    if !natter_actors::protocol::valid_machine_id(&config.machine) {
        return Err(AgentError::BadMachineId(config.machine));
    }
    let mut commands = client
        .subscribe(subjects::agent_command(&config.machine))
        .await?;
    let checkin_subject = subjects::agent_checkin(&config.machine);
    let mut next_checkin = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = handle.wake.notified() => next_checkin = tokio::time::Instant::now(),
            _ = tokio::time::sleep_until(next_checkin) => {
                let body = serde_json::to_vec(&checkin(&config, &handle.presence())).unwrap_or_default();
                if let Err(e) = client.publish(checkin_subject.clone(), body.into()).await {
                    tracing::warn!(machine = %config.machine, error = %e, "check-in failed");
                }
                next_checkin = tokio::time::Instant::now() + jittered(config.interval);
            }
            Some(msg) = commands.next() => {
                let reply = match serde_json::from_slice::<AgentCommand>(&msg.payload) {
                    Ok(AgentCommand::OpenChat { url, .. }) => match opener.open(&config.machine, &url) {
                        Ok(()) => AgentReply { ok: true, detail: "chat window opened".into() },
                        Err(why) => AgentReply { ok: false, detail: why },
                    },
                    Err(e) => AgentReply { ok: false, detail: format!("unknown command: {e}") },
                };
                if let Some(reply_to) = msg.reply {
                    let body = serde_json::to_vec(&reply).unwrap_or_default();
                    let _ = client.publish(reply_to, body.into()).await;
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    let _ = client.flush().await;
    Ok(())
}
