//! Several nodes on a NATS cluster survive the loss of a node or a server: three `natter`
//! processes (external mode, replicas 3) on a [`TestCluster`] of three nats-servers, three chats
//! with a steady stream of messages from both participants, and each participant's event stream
//! open on some node. Then a node is killed (`kill -9`), a NATS server is killed, every node is
//! restarted in turn, or a node is frozen (`SIGSTOP`) past its lease. Clients behave as browsers
//! do: a send that fails is retried with the same client id on another node, an event stream
//! that ends is reopened on another node with `Last-Event-ID`. Each time every acknowledged
//! message must reach every participant exactly once and in order, and the longest a send had
//! to wait after the event (the recovery time) is printed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, free_port, node_command};
use futures::StreamExt;
use natter::embedded::ServerSecrets;
use natter_agent::{AgentHandle, Presence, RecordingOpener};
use natter_system_tests::{Browser, StatusCode, TestCluster};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Chats under load; each has its own machine (one chat per machine at a time).
const CHATS: usize = 3;
/// Pause between two sends of one chat.
const SEND_EVERY: Duration = Duration::from_millis(100);
/// A browser gives up on one request after this and tries another node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A send not acknowledged by any node within this fails the test.
const SEND_DEADLINE: Duration = Duration::from_secs(20);
/// An event stream silent this long while messages flow is reopened elsewhere (a frozen node
/// keeps its connections open).
const STREAM_STALL: Duration = Duration::from_secs(3);
/// Every acknowledged message must have reached every participant this long after the load.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_loses_and_doubles_nothing() {
    let mut fixture = Fixture::start(3).await;
    let load = fixture.load();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (killed_at, killed_ms) = (Instant::now(), unix_ms());
    fixture.node(0).signal(Signal::SIGKILL);
    fixture.node(0).wait_exit(Duration::from_secs(5));
    load.until_recovered(killed_at).await;
    let report = load.finish().await;
    report.print_recovery("kill -9 of node 1 of 3", killed_at);
    report.assert_exactly_once_in_order();
    // The dead node's agent actors answer on the others: every check-in still counts.
    fixture.assert_check_ins_count_since(killed_ms, 1).await;
}

/// The same with one node: what the cluster alone must keep, whatever the nodes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_events_stream_leader_under_one_node_loses_and_doubles_nothing() {
    let mut fixture = Fixture::start(1).await;
    // nats.replicas = 3: the stream and every bucket are on all three servers.
    let js = async_nats::jetstream::new(fixture.cluster.broker_client().await);
    for stream in [
        natter_actors::store::EVENTS_STREAM.to_string(),
        format!("KV_{}", natter_actors::store::SESSIONS_BUCKET),
        format!("KV_{}", natter_actors::enrollment::AGENT_KEYS_BUCKET),
    ] {
        let mut stream = js.get_stream(&stream).await.unwrap();
        assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);
    }
    let load = fixture.load();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The worst server to lose: the events stream's leader.
    let leader = fixture
        .cluster
        .stream_leader(natter_actors::store::EVENTS_STREAM)
        .await
        .expect("the events stream has a leader");
    let (killed_at, killed_ms) = (Instant::now(), unix_ms());
    fixture.cluster.kill(leader);
    load.until_recovered(killed_at).await;
    let report = load.finish().await;
    report.print_recovery(
        "one node, kill -9 of the events stream's leader, nats-server 1 of 3",
        killed_at,
    );
    report.assert_exactly_once_in_order();
    fixture.assert_check_ins_count_since(killed_ms, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_nats_server_loses_and_doubles_nothing() {
    let mut fixture = Fixture::start(3).await;
    let load = fixture.load();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The worst server to lose: the events stream's leader.
    let leader = fixture
        .cluster
        .stream_leader(natter_actors::store::EVENTS_STREAM)
        .await
        .expect("the events stream has a leader");
    let (killed_at, killed_ms) = (Instant::now(), unix_ms());
    fixture.cluster.kill(leader);
    load.until_recovered(killed_at).await;
    let report = load.finish().await;
    report.print_recovery(
        "kill -9 of the events stream's leader, nats-server 1 of 3",
        killed_at,
    );
    report.assert_exactly_once_in_order();
    fixture.assert_check_ins_count_since(killed_ms, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_and_doubles_nothing() {
    let mut fixture = Fixture::start(3).await;
    let load = fixture.load();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    for i in 0..fixture.nodes.len() {
        fixture.nodes[i].take().expect("running").stop();
        fixture.spawn(i);
        fixture.node(i).wait_ready();
        load.until_recovered(Instant::now()).await;
    }
    let report = load.finish().await;
    report.assert_exactly_once_in_order();
    report.print_recovery("rolling restart (SIGTERM) of 3 nodes", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_is_fenced_off_and_loses_and_doubles_nothing() {
    let mut fixture = Fixture::start(3).await;
    let load = fixture.load();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frozen_at = Instant::now();
    // Past its lease (about 1.2 s): the others take its sessions over meanwhile.
    fixture.node(0).signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    fixture.node(0).signal(Signal::SIGCONT);
    // Whatever it still had in hand when frozen must be refused now, not appended.
    load.until_recovered(Instant::now()).await;
    let report = load.finish().await;
    report.assert_exactly_once_in_order();
    report.print_recovery("SIGSTOP of node 1 of 3 for 3 s", frozen_at);
    assert!(
        fixture.node(0).child.try_wait().unwrap().is_none(),
        "the frozen node died: {}",
        fixture.node(0).output()
    );
}

/// Three nodes on three servers, three chats between alice and each machine's user.
struct Fixture {
    cluster: TestCluster,
    nodes: Vec<Option<Node>>,
    http_ports: Vec<u16>,
    restarts: usize,
    chats: Vec<Chat>,
    agents_stop: CancellationToken,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
}

/// One chat and its two participants' browsers (each logged in on some node).
struct Chat {
    session: String,
    operator: Browser,
    machine_user: Browser,
}

impl Fixture {
    /// `nodes` nodes on a fresh cluster, with the chats open.
    async fn start(nodes: usize) -> Fixture {
        let cluster = TestCluster::start().await;
        let mut fixture = Fixture {
            cluster,
            nodes: Vec::new(),
            http_ports: (0..nodes).map(|_| free_port()).collect(),
            restarts: 0,
            chats: Vec::new(),
            agents_stop: CancellationToken::new(),
            data: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
        };
        fixture.nodes = (0..fixture.http_ports.len()).map(|_| None).collect();
        // The first node alone creates the stream and buckets: three nodes creating replicated
        // streams at once on a fresh cluster time out (nats-server 2.15 answers only one).
        fixture.spawn(0);
        fixture.node(0).wait_ready();
        for i in 1..fixture.nodes.len() {
            fixture.spawn(i);
        }
        for i in 1..fixture.nodes.len() {
            fixture.node(i).wait_ready();
        }
        let operators = async_nats::jetstream::new(fixture.cluster.broker_client().await)
            .get_key_value(natter_actors::store::OPERATORS_BUCKET)
            .await
            .unwrap();
        natter_actors::directory::put_operator(
            &operators,
            "alice",
            "Alice",
            true,
            &[],
            "alice-password",
        )
        .await
        .unwrap();
        for c in 0..CHATS {
            let chat = fixture.open_chat(c).await;
            fixture.chats.push(chat);
        }
        fixture
    }

    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.http_ports[i])
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("node running")
    }

    /// Starts node `i` (again) in the external mode: every node gets every server's URL, the
    /// same passwords and callout seed, its own data directory and HTTP port.
    fn spawn(&mut self, i: usize) {
        self.restarts += 1;
        let data = self.data.path().join(format!("node{i}"));
        let log = self
            .logs
            .path()
            .join(format!("node{i}-{}.log", self.restarts));
        let mut command = node_command(&data, self.http_ports[i], &log);
        command
            .env("NATTER__NATS__URL", self.cluster.url())
            .env("NATTER__NATS__REPLICAS", "3")
            .env(
                ServerSecrets::BROKER_PASSWORD_VAR,
                &self.cluster.broker_password,
            )
            .env(
                ServerSecrets::SIMULATOR_PASSWORD_VAR,
                &self.cluster.simulator_password,
            )
            .env(
                ServerSecrets::SYSTEM_PASSWORD_VAR,
                &self.cluster.system_password,
            )
            .env("NATTER_NATS_CALLOUT_SEED", &self.cluster.callout_seed)
            .env("NATTER__NODE__ID", format!("node{}", i + 1))
            .env("NATTER__HTTP__REQUEST_TIMEOUT", "3s")
            .env("NATTER__HTTP__DRAIN_TIMEOUT", "1s")
            .env("NATTER__CHAT__AGENT_TIMEOUT", "2s");
        self.nodes[i] = Some(Node {
            child: command.spawn().unwrap(),
            http: self.http_ports[i],
            nats_port: 0,
            log,
        });
    }

    /// Starts machine `c`'s agent (on server `c`), opens alice's chat with it through node `c`
    /// and logs its user in through node `c + 1`.
    async fn open_chat(&self, c: usize) -> Chat {
        let machine = format!("pc{c}.failover.test");
        let opener = RecordingOpener::default();
        let agent = self
            .cluster
            .agent_config(&machine, c % 3, Duration::from_secs(1))
            .await;
        tokio::spawn({
            let (opener, stop) = (opener.clone(), self.agents_stop.clone());
            async move {
                let handle = AgentHandle::new(Presence::user(Some("carol")));
                let _ = natter_agent::run(agent, handle, Arc::new(opener), stop).await;
            }
        });
        let nodes = self.http_ports.len();
        let operator = Browser::new(&self.base(c % nodes));
        let (status, body) = operator
            .post(
                "/api/login",
                &json!({"username": "alice", "password": "alice-password"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let session = wait_for_chat(&operator, &machine).await;
        let url = wait_for(Duration::from_secs(10), "the agent's chat link", || {
            opener
                .opened
                .lock()
                .unwrap()
                .last()
                .map(|(_, url)| url.clone())
        })
        .await;
        let token = url.split("#t=").nth(1).expect("a token in the link");
        let machine_user = Browser::new(&self.base((c + 1) % nodes));
        let (status, view) = machine_user
            .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        Chat {
            session,
            operator,
            machine_user,
        }
    }

    /// Starts the load: in each chat the operator and the machine user take turns sending, and
    /// each has the chat's event stream open (on nodes other than the one they send through).
    fn load(&self) -> Load {
        let (stop_sending, stop_reading) = (CancellationToken::new(), CancellationToken::new());
        let bases: Arc<Vec<String>> =
            Arc::new((0..self.http_ports.len()).map(|i| self.base(i)).collect());
        let mut senders = Vec::new();
        let mut readers = Vec::new();
        let mut sent = Vec::new();
        for (c, chat) in self.chats.iter().enumerate() {
            let acknowledged = Arc::new(Mutex::new(Vec::new()));
            senders.push(tokio::spawn(send_steadily(
                chat.session.clone(),
                chat.operator.clone(),
                chat.machine_user.clone(),
                (c, c + 1),
                bases.clone(),
                acknowledged.clone(),
                stop_sending.clone(),
            )));
            sent.push(acknowledged);
            for (who, browser, path, first) in [
                (
                    "operator",
                    &chat.operator,
                    format!("/api/events?sessions={}", chat.session),
                    c + 2,
                ),
                (
                    "machine user",
                    &chat.machine_user,
                    format!("/m/{}/api/events", chat.session),
                    c,
                ),
            ] {
                let seen = Seen::default();
                let task = tokio::spawn(read_events(
                    browser.clone(),
                    path,
                    first,
                    bases.clone(),
                    seen.clone(),
                    stop_reading.clone(),
                ));
                readers.push(Reader {
                    chat: c,
                    who,
                    seen,
                    task,
                });
            }
        }
        Load {
            stop_sending,
            stop_reading,
            senders,
            sent,
            readers,
        }
    }
}

impl Fixture {
    /// Waits until node `node` shows every machine with a check-in after `since_ms` (its agent
    /// checks in every second): the machines' agent actors answer, wherever they run now.
    async fn assert_check_ins_count_since(&self, since_ms: u64, node: usize) {
        let operator = self.chats[0].operator.at(&self.base(node));
        for c in 0..self.chats.len() {
            let path = format!("/api/machines/pc{c}.failover.test");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, machine) = operator.get(&path).await;
                if machine["last_checkin"]
                    .as_u64()
                    .is_some_and(|t| t > since_ms)
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no check-in of pc{c} counted within 10 s: {status} {machine}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Now, in ms since the epoch (the unit of `last_checkin`).
fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.expect("a clock after 1970").as_millis() as u64
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.agents_stop.cancel();
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    eprintln!("---- node {} ----\n{}", i + 1, tail(&node.output(), 40));
                }
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `get` until it returns something, or panics after `limit`.
async fn wait_for<T>(limit: Duration, what: &str, mut get: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = get() {
            return found;
        }
        assert!(Instant::now() < deadline, "no {what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts alice's chat with `machine` once its agent has checked in; returns the session.
async fn wait_for_chat(operator: &Browser, machine: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, answer) = operator.chat_with(machine).await;
        if status == StatusCode::CREATED {
            return natter_system_tests::session_id(&answer);
        }
        assert!(
            Instant::now() < deadline,
            "no chat with {machine} within 15 s: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One acknowledged send.
#[derive(Clone, Debug)]
struct Sent {
    text: String,
    seq: u64,
    started: Instant,
    acknowledged: Instant,
}

/// Sends `s<k>` messages into `session` every [`SEND_EVERY`] until `stop`: even ones as the
/// operator (first through node `first.0`), odd ones as the machine user (node `first.1`). A
/// send that fails or times out is retried with the same client id on the next node.
async fn send_steadily(
    session: String,
    operator: Browser,
    machine_user: Browser,
    first: (usize, usize),
    bases: Arc<Vec<String>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut node = [first.0 % bases.len(), first.1 % bases.len()];
    for k in 0.. {
        if stop.is_cancelled() {
            break;
        }
        let (who, browser, path) = match k % 2 {
            0 => (0, &operator, format!("/api/sessions/{session}/messages")),
            _ => (1, &machine_user, format!("/m/{session}/api/messages")),
        };
        let text = format!("{session}-{k}");
        let body = json!({"id": format!("c{k}"), "text": text});
        let started = Instant::now();
        let mut last_error = String::new();
        let seq = loop {
            if started.elapsed() > SEND_DEADLINE {
                return Err(format!(
                    "{text} was not acknowledged within {SEND_DEADLINE:?}: {last_error}"
                ));
            }
            let base = &bases[node[who]];
            match post(browser, base, &path, &body).await {
                Ok(seq) => break seq,
                Err(e) => {
                    last_error = format!("{base}: {e}");
                    node[who] = (node[who] + 1) % bases.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        sent.lock().unwrap().push(Sent {
            text,
            seq,
            started,
            acknowledged: Instant::now(),
        });
        tokio::time::sleep(SEND_EVERY).await;
    }
    Ok(())
}

/// A POST as the browser sends it to `base`; the message's sequence if it was accepted.
async fn post(browser: &Browser, base: &str, path: &str, body: &Value) -> Result<u64, String> {
    let response = browser
        .client
        .post(format!("{base}{path}"))
        .header("x-natter", "1")
        .header("origin", base)
        .timeout(REQUEST_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    match (status, answer["seq"].as_u64()) {
        (StatusCode::CREATED, Some(seq)) => Ok(seq),
        _ => Err(format!("{status} {answer}")),
    }
}

/// The messages a participant's event stream delivered, as (seq, text), in arrival order, and
/// where it reopened the stream: (messages received before, `Last-Event-ID`, node).
#[derive(Clone, Default)]
struct Seen {
    messages: Arc<Mutex<Vec<(u64, String)>>>,
    reopened: Arc<Mutex<Vec<Reopening>>>,
}

/// Where a stream was reopened: (messages received before, `Last-Event-ID`, node, from 1).
type Reopening = (usize, Option<u64>, usize);

/// Follows a participant's event stream at `path` until `stop`, starting on node `first`; when
/// the stream ends, fails or stalls, reopens it on the next node with `Last-Event-ID` (as
/// EventSource does). Returns how many times it reopened.
async fn read_events(
    browser: Browser,
    path: String,
    first: usize,
    bases: Arc<Vec<String>>,
    seen: Seen,
    stop: CancellationToken,
) -> usize {
    use eventsource_stream::Eventsource;
    let mut last_id: Option<u64> = None;
    let mut node = first % bases.len();
    let mut reopened = 0;
    while !stop.is_cancelled() {
        let mut request = browser
            .client
            .get(format!("{}{path}", bases[node]))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let opened = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(REQUEST_TIMEOUT, request.send()) => r,
        };
        if let Ok(Ok(response)) = opened
            && response.status() == StatusCode::OK
        {
            let mut events = response.bytes_stream().eventsource();
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return reopened,
                    next = tokio::time::timeout(STREAM_STALL, events.next()) => next,
                };
                let Ok(Some(Ok(event))) = next else { break };
                if let Ok(id) = event.id.parse::<u64>() {
                    last_id = Some(id);
                }
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                if event.event == "message" && data["type"] == "message" {
                    let text = data["text"].as_str().unwrap_or_default().to_string();
                    seen.messages
                        .lock()
                        .unwrap()
                        .push((data["seq"].as_u64().unwrap_or(0), text));
                }
            }
        }
        reopened += 1;
        node = (node + 1) % bases.len();
        let received = seen.messages.lock().unwrap().len();
        seen.reopened
            .lock()
            .unwrap()
            .push((received, last_id, node + 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reopened
}

/// A participant's event stream being read.
struct Reader {
    chat: usize,
    who: &'static str,
    seen: Seen,
    task: tokio::task::JoinHandle<usize>,
}

/// The running load.
struct Load {
    stop_sending: CancellationToken,
    stop_reading: CancellationToken,
    senders: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    /// Per chat, every acknowledged send so far, in the order sent.
    sent: Vec<Arc<Mutex<Vec<Sent>>>>,
    readers: Vec<Reader>,
}

/// Sends each chat must have had acknowledged after an event before the load stops.
const SENDS_AFTER: usize = 10;

impl Load {
    /// Goes on until every chat had [`SENDS_AFTER`] sends started after `event` acknowledged
    /// (at most [`SEND_DEADLINE`]): the chats work again, and for a while.
    async fn until_recovered(&self, event: Instant) {
        let deadline = Instant::now() + SEND_DEADLINE;
        let recovered = |sent: &Arc<Mutex<Vec<Sent>>>| {
            let sent = sent.lock().unwrap();
            sent.iter().filter(|s| s.started > event).count() >= SENDS_AFTER
        };
        while !self.sent.iter().all(recovered) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops sending, waits until every acknowledged message reached every participant (or
    /// [`DELIVERY_DEADLINE`] passed), then stops reading.
    async fn finish(self) -> Report {
        let Load {
            stop_sending,
            stop_reading,
            senders,
            sent,
            readers,
        } = self;
        // Senders stop first; readers go on until they have caught up.
        stop_sending.cancel();
        for sender in senders {
            if let Err(e) = sender.await.unwrap() {
                panic!("{e}");
            }
        }
        let sent: Vec<Vec<Sent>> = sent.iter().map(|s| s.lock().unwrap().clone()).collect();
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        let caught_up = |r: &Reader| r.seen.messages.lock().unwrap().len() >= sent[r.chat].len();
        while !readers.iter().all(caught_up) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_reading.cancel();
        let mut seen = Vec::new();
        for reader in readers {
            let _ = reader.task.await;
            let messages = reader.seen.messages.lock().unwrap().clone();
            let reopened = reader.seen.reopened.lock().unwrap().clone();
            seen.push((reader.chat, reader.who, messages, reopened));
        }
        Report { sent, seen }
    }
}

/// What one participant received: (chat, who, messages in order, reopenings as (messages
/// before, `Last-Event-ID`, node)).
type Received = (usize, &'static str, Vec<(u64, String)>, Vec<Reopening>);

/// What was acknowledged and what each participant received.
struct Report {
    /// Per chat, every acknowledged send in the order sent.
    sent: Vec<Vec<Sent>>,
    /// (chat, participant, messages received in order, where its stream was reopened).
    seen: Vec<Received>,
}

impl Report {
    fn assert_exactly_once_in_order(&self) {
        for (chat, sent) in self.sent.iter().enumerate() {
            let seqs: Vec<u64> = sent.iter().map(|s| s.seq).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "chat {chat}: acknowledged sequences out of order: {seqs:?}"
            );
        }
        for (chat, who, received, reopened) in &self.seen {
            let expected: Vec<(u64, String)> = self.sent[*chat]
                .iter()
                .map(|s| (s.seq, s.text.clone()))
                .collect();
            if *received != expected {
                let missing: Vec<_> = expected.iter().filter(|m| !received.contains(m)).collect();
                let mut counts = std::collections::HashMap::new();
                for m in received {
                    *counts.entry(m).or_insert(0) += 1;
                }
                let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
                let unexpected: Vec<_> =
                    received.iter().filter(|m| !expected.contains(m)).collect();
                panic!(
                    "chat {chat}, {who}: received {} of {} acknowledged messages; missing \
                     {missing:?}; doubled {doubled:?}; never acknowledged {unexpected:?}; its \
                     stream reopened at (messages received, Last-Event-ID, node): {reopened:?}",
                    received.len(),
                    expected.len()
                );
            }
        }
    }

    /// Prints the longest any send waited for its acknowledgement after `event`.
    fn print_recovery(&self, what: &str, event: Instant) {
        for (chat, sent) in self.sent.iter().enumerate() {
            let after = sent.iter().filter(|s| s.started > event).count();
            println!(
                "failover: {what}: chat {chat}: {} sends, {after} after it",
                sent.len()
            );
        }
        let waits = self
            .sent
            .iter()
            .flatten()
            .filter(|s| s.acknowledged > event);
        let worst = waits
            .map(|s| s.acknowledged - s.started.max(event))
            .max()
            .unwrap_or_default();
        let total: usize = self.sent.iter().map(Vec::len).sum();
        println!(
            "failover: {what}: {total} messages acknowledged, each delivered once to both \
             participants; longest wait for an acknowledgement after it: {:.2} s",
            worst.as_secs_f64()
        );
    }
}
