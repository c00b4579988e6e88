//! Test harness for Natter's system tests: real nats-server processes on free ports, real nodes
//! in-process (through [`natter::Node`], the same seam `main` uses), real agents, and HTTP/SSE
//! clients that behave like browsers (cookies, `Origin`, `Last-Event-ID`).

mod enroll;

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use natter::Config;
use natter::embedded::{NatsServer, NatsServerOptions, ServerSecrets, find_server_bin};
use natter_agent::{AgentHandle, Presence, RecordingOpener};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use reqwest::StatusCode;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

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
    keys: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl TestNats {
    pub async fn start() -> TestNats {
        init_logging();
        let bin = match std::env::var("NATTER_NATS_SERVER") {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let local = repo_root().join(".tools/nats/bin/nats-server");
                if local.is_file() {
                    local
                } else {
                    find_server_bin("").expect("nats-server: run scripts/setup")
                }
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let broker_password = "broker-test-secret".to_string();
        let simulator_password = "simulator-test-secret".to_string();
        let system_password = "system-test-secret".to_string();
        let (callout_seed, issuer) = natter_actors::auth_callout::Callout::generate_issuer();
        let server = NatsServer::start(NatsServerOptions {
            bin,
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

/// A node running in-process on a free port.
pub struct TestNode {
    pub node: natter::Node,
    pub base: String,
    pub config: Config,
}

impl TestNode {
    pub async fn start(config: Config) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = config;
        config.http.listen = addr;
        config.http.public_url = format!("http://{addr}");
        let node = natter::Node::start(listener, &config)
            .await
            .expect("start node");
        TestNode {
            node,
            base: format!("http://{addr}"),
            config,
        }
    }

    /// Adds an admin operator (sees every machine).
    pub async fn add_operator(&self, username: &str, name: &str, password: &str) {
        self.add_scoped_operator(username, name, password, None)
            .await
    }

    /// Adds an operator; `scopes: None` makes an admin.
    pub async fn add_scoped_operator(
        &self,
        username: &str,
        name: &str,
        password: &str,
        scopes: Option<&[&str]>,
    ) {
        let grants: Vec<String> = scopes
            .unwrap_or(&[])
            .iter()
            .map(|s| s.to_string())
            .collect();
        natter_actors::directory::put_operator(
            &self.node.stores.operators,
            username,
            name,
            scopes.is_none(),
            &grants,
            password,
        )
        .await
        .expect("add operator");
    }

    /// A logged-in admin operator's browser.
    pub async fn operator(&self, username: &str) -> Browser {
        self.scoped_operator(username, None).await
    }

    /// A logged-in operator's browser; `scopes: None` makes an admin.
    pub async fn scoped_operator(&self, username: &str, scopes: Option<&[&str]>) -> Browser {
        let password = format!("{username}-password");
        self.add_scoped_operator(
            username,
            &format!("{username} (operator)"),
            &password,
            scopes,
        )
        .await;
        let b = Browser::new(&self.base);
        let (status, body) = b
            .post(
                "/api/login",
                &serde_json::json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        b
    }

    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

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
        TestAgent {
            handle,
            opener,
            machine: machine.into(),
            stop,
            task,
        }
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

/// Polls `check` until it holds, or panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client that behaves like a browser on the gateway's origin: a cookie jar, the
/// `Origin` header and the CSRF header on POSTs.
#[derive(Clone)]
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
            base: base.into(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("x-natter", "1")
            .header("origin", &self.base)
            .json(body)
            .send()
            .await
            .expect("POST");
        read(r).await
    }

    /// A POST with a raw body and content type (for bad-input tests), with CSRF headers.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("x-natter", "1")
            .header("origin", &self.base)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        read(r).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("GET");
        read(r).await
    }

    /// Sends a chat message as an operator; returns the answer.
    pub async fn send(&self, session: &str, client_id: &str, text: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/sessions/{session}/messages"),
            &serde_json::json!({"id": client_id, "text": text}),
        )
        .await
    }

    /// Opens an SSE stream at `path`, optionally resuming from `last_event_id`.
    pub async fn events(&self, path: &str, last_event_id: Option<u64>) -> Sse {
        let mut req = self
            .client
            .get(format!("{}{}", self.base, path))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let r = req.send().await.expect("open SSE");
        let status = r.status();
        if status != StatusCode::OK {
            let body = r.text().await.unwrap_or_default();
            return Sse {
                status,
                error_body: body,
                stream: None,
            };
        }
        use eventsource_stream::Eventsource;
        Sse {
            status,
            error_body: String::new(),
            stream: Some(Box::pin(r.bytes_stream().eventsource())),
        }
    }
}

async fn read(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

type EventStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// An open SSE stream.
pub struct Sse {
    pub status: StatusCode,
    pub error_body: String,
    stream: Option<EventStream>,
}

/// One SSE event as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl SseEvent {
    pub fn seq(&self) -> u64 {
        self.data["seq"].as_u64().unwrap_or(0)
    }
}

impl Sse {
    /// The next event (keep-alive comments are skipped), or `None` on timeout or end.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let stream = self.stream.as_mut()?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(e))) => Some(SseEvent {
                event: e.event,
                id: e.id,
                data: serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
            }),
            _ => None,
        }
    }

    /// The next chat event (skipping `hello` and other control events).
    pub async fn next_chat(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await?;
            if e.event == "message" {
                return Some(e);
            }
        }
    }

    /// Collects chat events until `n` have arrived or `timeout` passes.
    pub async fn collect_chat(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_chat(left).await {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// Asserts no chat event arrives within `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        if let Some(e) = self.next_chat(wait).await {
            panic!("unexpected event: {e:?}");
        }
    }

    /// Closes the stream (the client goes away).
    pub fn close(&mut self) {
        self.stream = None;
    }
}

/// The session id in a `POST /api/chats` answer.
pub fn session_id(answer: &Value) -> String {
    answer["session"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {answer}"))
        .to_string()
}
