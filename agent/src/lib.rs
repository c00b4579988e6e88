//! The Natter agent: the program on a managed machine.
//!
//! It connects to NATS with its machine's own key ([`identity`]; the first time with an
//! enrollment token too), publishes a check-in on its own subject every
//! interval (with ±10% jitter so a fleet does not check in in lockstep), and answers commands on
//! its own command subject — today "open the machine user's chat window", which it does with an
//! [`Opener`] and reports back whether the window opened. The demo fleet and the tests run this
//! same code; only the opener differs.

mod connect;
pub mod control;
pub mod desktop;
pub mod identity;
pub mod simulate;

pub use connect::{AUTH_BACKOFF, Backoff, NETWORK_BACKOFF, connect};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use natter_actors::protocol::{
    AgentCommand, AgentReply, ChatUser, Checkin, CheckinUser, StartChatReply, StartChatRequest,
    StartRefusal,
};
use natter_actors::subjects;
use tokio_util::sync::CancellationToken;

/// Opens a chat URL in the machine user's browser.
pub trait Opener: Send + Sync {
    /// Opens `url` in `user`'s desktop session (of several logged on), or the logged-on user's
    /// (`None`); `Err` says why the window could not be opened.
    fn open(&self, machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String>;
}

/// Runs a command with the URL as its last argument (e.g. `xdg-open`). The user whose desktop
/// it is for is in its environment: `NATTER_USER` and `NATTER_USER_SESSION` (unset when the
/// chat is with the machine's only user); a wrapper script runs the browser in that session.
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
    fn open(&self, _machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String> {
        let mut command = std::process::Command::new(&self.program);
        if let Some(u) = user {
            command
                .env("NATTER_USER", &u.name)
                .env("NATTER_USER_SESSION", &u.session);
        }
        command
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
    fn open(&self, machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String> {
        // Plain stdout, one line: a person copies the URL from here. Log lines get the link
        // without its token: a log is kept and shipped, and a link is a login until used.
        match user {
            Some(u) => println!(
                "open chat on {machine} for {} (session {}): {url}",
                u.name, u.session
            ),
            None => println!("open chat on {machine}: {url}"),
        }
        tracing::info!(machine, link = %without_token(url), "chat link printed on stdout");
        Ok(())
    }
}

/// A chat link without its token (the `#t=…` fragment), fit for a log line.
pub fn without_token(url: &str) -> &str {
    url.split_once('#').map_or(url, |(page, _)| page)
}

/// A window a [`RecordingOpener`] opened: the user session it was for (`None`: the machine's
/// only user) and its URL.
pub type OpenedIn = (Option<String>, String);

/// Records the URLs it is asked to open (tests); can be told to fail.
#[derive(Default, Clone)]
pub struct RecordingOpener {
    /// (machine, URL) of every window opened.
    pub opened: Arc<Mutex<Vec<(String, String)>>>,
    /// (user session, URL) of every window opened: whose desktop got it (`None`: the
    /// machine's only user).
    pub opened_in: Arc<Mutex<Vec<OpenedIn>>>,
    pub fail_with: Arc<Mutex<Option<String>>>,
}

impl Opener for RecordingOpener {
    fn open(&self, machine: &str, user: Option<&ChatUser>, url: &str) -> Result<(), String> {
        if let Some(why) = self.fail_with.lock().map_err(|e| e.to_string())?.clone() {
            return Err(why);
        }
        self.opened_in
            .lock()
            .map_err(|e| e.to_string())?
            .push((user.map(|u| u.session.clone()), url.to_string()));
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
    /// Every logged-on user session (a terminal server has several); when not empty it is
    /// what the check-in lists, and `user` / `idle_secs` are sent as its first user's.
    pub users: Vec<CheckinUser>,
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
            users: Vec::new(),
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

    /// Several users logged on: `(name, session)`, all active.
    pub fn users(users: &[(&str, &str)]) -> Presence {
        let users: Vec<CheckinUser> = (users.iter())
            .map(|(name, session)| CheckinUser {
                name: name.to_string(),
                session: session.to_string(),
                idle_secs: 0,
            })
            .collect();
        Presence {
            user: users.first().map(|u| u.name.clone()),
            users,
            ..Presence::default()
        }
    }
}

/// One agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub nats_url: String,
    /// CA (PEM) to trust for the NATS server's certificate; set = TLS is required. A `tls://`
    /// URL requires TLS too, trusting the system's roots.
    pub nats_ca: Option<std::path::PathBuf>,
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

/// A running agent's handle: change what it reports, or ask for the machine user's start page.
#[derive(Clone, Default)]
pub struct AgentHandle {
    presence: Arc<Mutex<Presence>>,
    wake: Arc<tokio::sync::Notify>,
    /// Set while the agent runs: what [`AgentHandle::request_chat`] needs.
    running: Arc<Mutex<Option<Running>>>,
}

/// What a running agent lends its handle for a chat request.
#[derive(Clone)]
struct Running {
    client: async_nats::Client,
    machine: String,
    family: SubjectFamily,
    opener: Arc<dyn Opener>,
}

/// What became of a request for the machine user's start page ([`AgentHandle::request_chat`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatRequest {
    /// The start page was opened in the machine user's browser.
    Opened,
    /// The broker refused, with its reason and a message for a person.
    Refused {
        reason: StartRefusal,
        message: String,
    },
    /// The request could not be made or the page not opened (agent not connected, no answer,
    /// the opener failed).
    Failed(String),
}

impl std::fmt::Display for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatRequest::Opened => write!(f, "opened"),
            ChatRequest::Refused { reason, message } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                write!(f, "refused ({reason}): {message}")
            }
            ChatRequest::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// How long the agent waits for the broker's answer to a start request.
pub const START_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl AgentHandle {
    pub fn new(presence: Presence) -> Self {
        AgentHandle {
            presence: Arc::new(Mutex::new(presence)),
            wake: Arc::default(),
            running: Arc::default(),
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

    /// Asks the broker for the machine user's start page (where they pick an operator to chat
    /// with) and opens it with the agent's opener, as it opens chat links.
    pub async fn request_chat(&self) -> ChatRequest {
        let running = self.running.lock().ok().and_then(|r| r.clone());
        let Some(running) = running else {
            return ChatRequest::Failed("the agent is not running".into());
        };
        if !is_connected(&running.client) {
            return ChatRequest::Failed("the agent is not connected to Natter".into());
        }
        let subject = running.family.start_request(&running.machine);
        let body = serde_json::to_vec(&StartChatRequest { v: 1 }).unwrap_or_default();
        let answer = tokio::time::timeout(
            START_REQUEST_TIMEOUT,
            running.client.request(subject, body.into()),
        )
        .await;
        let msg = match answer {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => return ChatRequest::Failed(format!("no answer from Natter: {e}")),
            Err(_) => return ChatRequest::Failed("no answer from Natter in time".into()),
        };
        let reply = match serde_json::from_slice::<StartChatReply>(&msg.payload) {
            Ok(r) => r,
            Err(e) => return ChatRequest::Failed(format!("an answer I cannot read: {e}")),
        };
        match (reply.ok, reply.url, reply.reason) {
            (true, Some(url), _) => match running.opener.open(&running.machine, None, &url) {
                Ok(()) => ChatRequest::Opened,
                Err(why) => ChatRequest::Failed(why),
            },
            (_, _, Some(reason)) => ChatRequest::Refused {
                reason,
                message: reply.message,
            },
            _ => ChatRequest::Failed("an answer with neither a link nor a reason".into()),
        }
    }

    fn set_running(&self, running: Option<Running>) {
        if let Ok(mut guard) = self.running.lock() {
            *guard = running;
        }
    }
}

fn checkin(config: &AgentConfig, presence: &Presence) -> Checkin {
    Checkin {
        v: 1,
        machine: config.machine.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        os: config.os.clone(),
        ip: config.ip.clone(),
        user: (presence.users.first())
            .map(|u| u.name.clone())
            .or_else(|| presence.user.clone()),
        idle_secs: presence
            .users
            .first()
            .map_or(presence.idle_secs, |u| u.idle_secs),
        users: (!presence.users.is_empty()).then(|| presence.users.clone()),
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

/// How long each shutdown step (flush, drain) may take before it is skipped: a stopping agent
/// must not wait for a NATS server that is gone.
pub const SHUTDOWN_STEP: Duration = Duration::from_secs(1);

/// How long a check-in or a reply may wait for room in the connection's send buffer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest an agent waits, while disconnected, before it looks again whether its check-in
/// can go out; jittered so a fleet does not check in at once when its server comes back.
const RECHECK_WHILE_DISCONNECTED: Duration = Duration::from_secs(5);

/// Runs `step`, or gives up on it after [`SHUTDOWN_STEP`]; says which in the log.
async fn bounded_step<T, E: std::fmt::Display>(
    machine: &str,
    step: &str,
    future: impl std::future::Future<Output = Result<T, E>>,
) {
    match tokio::time::timeout(SHUTDOWN_STEP, future).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(%machine, step, error = %e, "shutdown step failed"),
        Err(_) => tracing::info!(%machine, step, "shutdown step timed out; skipped"),
    }
}

fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Runs one agent on its own NATS connection until `shutdown`. The connection is retried until
/// it succeeds (see [`connect`]), so the agent may start before its server.
pub async fn run(
    config: AgentConfig,
    handle: AgentHandle,
    opener: Arc<dyn Opener>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    if !natter_actors::protocol::valid_machine_id(&config.machine) {
        return Err(AgentError::BadMachineId(config.machine));
    }
    let name = format!("natter-agent {}", config.machine);
    let Some(client) = connect(&config, &name, &shutdown).await? else {
        return Ok(());
    };
    run_on(client.clone(), config.clone(), handle, opener, shutdown).await?;
    if is_connected(&client) {
        bounded_step(&config.machine, "drain", client.drain()).await;
    }
    Ok(())
}

/// Publishes a check-in, unless the connection is down: async-nats would buffer it and send a
/// stale one after the reconnect, and a full buffer would block the agent. Returns whether it
/// went out.
async fn publish_checkin(
    client: &async_nats::Client,
    subject: &str,
    config: &AgentConfig,
    presence: &Presence,
) -> bool {
    if !is_connected(client) {
        return false;
    }
    let body = serde_json::to_vec(&checkin(config, presence)).unwrap_or_default();
    match tokio::time::timeout(
        PUBLISH_TIMEOUT,
        client.publish(subject.to_string(), body.into()),
    )
    .await
    {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(machine = %config.machine, error = %e, "check-in failed");
            false
        }
        Err(_) => {
            tracing::warn!(machine = %config.machine, "check-in timed out");
            false
        }
    }
}

/// Answers one command from the operator's side.
async fn answer(
    client: &async_nats::Client,
    config: &AgentConfig,
    handle: &AgentHandle,
    opener: &dyn Opener,
    msg: async_nats::Message,
) {
    let reply = match serde_json::from_slice::<AgentCommand>(&msg.payload) {
        Ok(AgentCommand::OpenChat { url, user, .. }) => {
            open_chat(config, &handle.presence(), opener, user.as_ref(), &url)
        }
        Err(e) => AgentReply {
            ok: false,
            detail: format!("unknown command: {e}"),
        },
    };
    if let Some(reply_to) = msg.reply {
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        if tokio::time::timeout(PUBLISH_TIMEOUT, client.publish(reply_to, body.into()))
            .await
            .is_err()
        {
            tracing::warn!(machine = %config.machine, "reply to a command timed out");
        }
    }
}

/// Opens a chat window in the desktop session it is for: a user session no longer logged on
/// gets no window (it would open on nobody's screen, or somebody else's).
fn open_chat(
    config: &AgentConfig,
    presence: &Presence,
    opener: &dyn Opener,
    user: Option<&ChatUser>,
    url: &str,
) -> AgentReply {
    if let Some(u) = user
        && !presence.users.iter().any(|p| p.session == u.session)
    {
        return AgentReply {
            ok: false,
            detail: format!("{} is no longer logged on (session {})", u.name, u.session),
        };
    }
    match opener.open(&config.machine, user, url) {
        Ok(()) => AgentReply {
            ok: true,
            detail: match user {
                Some(u) => format!("chat window opened for {} (session {})", u.name, u.session),
                None => "chat window opened".into(),
            },
        },
        Err(why) => AgentReply {
            ok: false,
            detail: why,
        },
    }
}

/// When to look again after a check-in: one jittered interval after one that went out; a few
/// seconds (at most the interval, jittered so a fleet spreads out) after one that could not.
fn next_checkin_delay(interval: Duration, sent: bool) -> Duration {
    if sent {
        jittered(interval)
    } else {
        interval
            .min(RECHECK_WHILE_DISCONNECTED)
            .mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// The subjects an agent uses: a real agent its machine's own, a simulated one the simulator's
/// family (the `natter-simulator` NATS user may use no other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectFamily {
    Real,
    Simulated,
}

impl SubjectFamily {
    fn checkin(self, machine: &str) -> String {
        match self {
            SubjectFamily::Real => subjects::agent_checkin(machine),
            SubjectFamily::Simulated => subjects::simulated_checkin(machine),
        }
    }

    fn command(self, machine: &str) -> String {
        match self {
            SubjectFamily::Real => subjects::agent_command(machine),
            SubjectFamily::Simulated => subjects::simulated_command(machine),
        }
    }

    fn start_request(self, machine: &str) -> String {
        match self {
            SubjectFamily::Real => subjects::agent_start_request(machine),
            SubjectFamily::Simulated => subjects::simulated_start_request(machine),
        }
    }
}

/// Checks in and answers commands, forever: the caller ends it (at any await point) on shutdown.
async fn serve(
    client: &async_nats::Client,
    config: &AgentConfig,
    handle: &AgentHandle,
    opener: &dyn Opener,
    commands: &mut async_nats::Subscriber,
    family: SubjectFamily,
) {
    let checkin_subject = family.checkin(&config.machine);
    let mut next_checkin = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = handle.wake.notified() => next_checkin = tokio::time::Instant::now(),
            _ = tokio::time::sleep_until(next_checkin) => {
                let presence = handle.presence();
                let sent = publish_checkin(client, &checkin_subject, config, &presence).await;
                next_checkin = tokio::time::Instant::now() + next_checkin_delay(config.interval, sent);
            }
            Some(msg) = commands.next() => answer(client, config, handle, opener, msg).await,
        }
    }
}

/// Runs one agent on a given connection (a simulated fleet shares connections: one process
/// cannot hold 100k sockets) until `shutdown`. Same protocol, subjects and payloads as [`run`].
/// While the connection is down the agent keeps running and checks in again once async-nats
/// has reconnected (and resubscribed its command subject).
pub async fn run_on(
    client: async_nats::Client,
    config: AgentConfig,
    handle: AgentHandle,
    opener: Arc<dyn Opener>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    run_on_family(
        client,
        config,
        handle,
        opener,
        shutdown,
        SubjectFamily::Real,
    )
    .await
}

/// [`run_on`] on the subjects of `family` (a simulated fleet uses [`SubjectFamily::Simulated`]).
pub async fn run_on_family(
    client: async_nats::Client,
    config: AgentConfig,
    handle: AgentHandle,
    opener: Arc<dyn Opener>,
    shutdown: CancellationToken,
    family: SubjectFamily,
) -> Result<(), AgentError> {
    if !natter_actors::protocol::valid_machine_id(&config.machine) {
        return Err(AgentError::BadMachineId(config.machine));
    }
    let mut commands = tokio::select! {
        subscribed = client.subscribe(family.command(&config.machine)) => subscribed?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    handle.set_running(Some(Running {
        client: client.clone(),
        machine: config.machine.clone(),
        family,
        opener: opener.clone(),
    }));
    tokio::select! {
        _ = serve(&client, &config, &handle, opener.as_ref(), &mut commands, family) => {}
        _ = shutdown.cancelled() => {}
    }
    handle.set_running(None);
    drop(commands);
    if is_connected(&client) {
        bounded_step(&config.machine, "flush", client.flush()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig {
            nats_url: String::new(),
            nats_ca: None,
            nats_user: "ts1.acme".into(),
            nats_password: String::new(),
            nkey_seed: None,
            machine: "ts1.acme".into(),
            interval: Duration::from_secs(30),
            os: "linux".into(),
            ip: "10.0.0.1".into(),
        }
    }

    #[test]
    fn a_chat_opens_in_its_users_session_or_not_at_all() {
        let opener = RecordingOpener::default();
        let two = Presence::users(&[("carol", "console"), ("dave", "rdp-tcp#3")]);
        let dave = ChatUser {
            name: "dave".into(),
            session: "rdp-tcp#3".into(),
        };
        let reply = open_chat(&config(), &two, &opener, Some(&dave), "http://x/m/S/#t=1");
        assert!(reply.ok, "{}", reply.detail);
        assert_eq!(
            reply.detail,
            "chat window opened for dave (session rdp-tcp#3)"
        );
        let opened = opener.opened_in.lock().unwrap().clone();
        assert_eq!(
            opened,
            [(Some("rdp-tcp#3".into()), "http://x/m/S/#t=1".into())]
        );

        // Dave logged off: nothing opens, on nobody's desktop.
        let carol_only = Presence::users(&[("carol", "console")]);
        let reply = open_chat(
            &config(),
            &carol_only,
            &opener,
            Some(&dave),
            "http://x/m/S/#t=2",
        );
        assert!(!reply.ok);
        assert_eq!(
            reply.detail,
            "dave is no longer logged on (session rdp-tcp#3)"
        );
        assert_eq!(opener.opened_in.lock().unwrap().len(), 1);

        // A chat with a machine's only user opens as it always did.
        let one = Presence::user(Some("erin"));
        let reply = open_chat(&config(), &one, &opener, None, "http://x/m/T/#t=3");
        assert!(reply.ok);
        assert_eq!(opener.opened_in.lock().unwrap()[1].0, None);
    }

    #[test]
    fn a_checkin_lists_the_users_and_names_the_first_for_older_brokers() {
        let c = checkin(
            &config(),
            &Presence::users(&[("carol", "console"), ("dave", "2")]),
        );
        assert_eq!(c.user.as_deref(), Some("carol"));
        assert_eq!(c.users.as_ref().map(Vec::len), Some(2));
        let old = checkin(&config(), &Presence::user(Some("erin")));
        assert_eq!((old.user.as_deref(), old.users), (Some("erin"), None));
    }

    #[test]
    fn a_logged_link_has_no_token() {
        let url = "http://127.0.0.1:8080/m/01J0000000000000000000000/#t=secret";
        assert_eq!(
            without_token(url),
            "http://127.0.0.1:8080/m/01J0000000000000000000000/"
        );
        assert!(!without_token(url).contains("#t="));
        assert_eq!(without_token("http://x/m/S/"), "http://x/m/S/");
    }
}
