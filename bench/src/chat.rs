//! Chat through a node: operators, sessions, send → delivered latency at a fixed rate, the
//! highest sustained rate, and joining a session with a long history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use natter_actors::protocol::{Participant, ParticipantKind, SessionCommand, SessionReply};
use natter_actors::store::Stores;
use natter_actors::subjects;

use crate::http::{self, Client};
use crate::procs::BoxError;
use crate::report::{Lat, new_hist};

/// Chat message text length in bytes (the stored event is about twice this with its JSON).
pub const TEXT_LEN: usize = 100;

/// Nanoseconds since the bench started (one clock for senders and readers in this process).
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One operator: username, cookie, and the participant the gateway sees.
#[derive(Clone)]
pub struct Operator {
    pub who: Participant,
    pub cookie: String,
}

pub const PASSWORD: &str = "bench-password-1";

/// Creates operators `names` in the directory (admins, so scopes never get in the way) and logs
/// each one in at `addr`.
pub async fn operators(
    stores: &Stores,
    addr: SocketAddr,
    names: &[&str],
) -> Result<Vec<Operator>, BoxError> {
    let mut out = Vec::new();
    for name in names {
        let display = format!("Bench {name}");
        natter_actors::directory::put_operator(
            &stores.operators,
            name,
            &display,
            true,
            &[],
            PASSWORD,
        )
        .await?;
        let cookie = http::login(addr, name, PASSWORD).await?;
        out.push(Operator {
            who: Participant {
                kind: ParticipantKind::Operator,
                id: name.to_string(),
                name: display,
            },
            cookie,
        });
    }
    Ok(out)
}

/// Sends a session command over NATS, as a gateway does (retried while its partition changes
/// hands between nodes).
pub async fn command(
    client: &async_nats::Client,
    session: &str,
    cmd: &SessionCommand,
) -> Result<natter_actors::protocol::Ack, BoxError> {
    let (reply, _) = natter_actors::partitions::request_owner::<SessionReply>(
        client,
        subjects::session_command(session),
        serde_json::to_vec(cmd)?.into(),
        Duration::from_secs(10),
        |r| {
            r.as_ref()
                .is_err_and(|e| e.message == natter_actors::partitions::MOVED)
        },
    )
    .await?;
    reply.map_err(|e| format!("session {session}: {e:?}").into())
}

/// Opens `n` sessions as `opener` (each with its own machine) and has every operator of
/// `joiners` join each through the HTTP API.
pub async fn sessions(
    client: &async_nats::Client,
    addr: SocketAddr,
    opener: &Operator,
    joiners: &[Operator],
    n: usize,
    tag: &str,
) -> Result<Vec<String>, BoxError> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = ulid::Ulid::new().to_string();
        command(
            client,
            &id,
            &SessionCommand::Open {
                by: opener.who.clone(),
                machine: format!("pc{i}.{tag}.bench"),
                user: None,
            },
        )
        .await?;
        for j in joiners {
            let mut c = Client::new(addr, &j.cookie);
            let r = c
                .request("POST", &format!("/api/sessions/{id}/join"), b"")
                .await?;
            if r.status != 200 {
                return Err(format!(
                    "join {id}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )
                .into());
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The text of a measured message: `b<step> <start ns> ` then padding.
fn text(step: usize, start_ns: u64) -> String {
    let mut t = format!("b{step} {start_ns} ");
    while t.len() < TEXT_LEN {
        t.push('x');
    }
    t
}

/// Reads `(step, start ns)` back out of an SSE `data` line (a message event's JSON).
fn parse_text(data: &str) -> Option<(usize, u64)> {
    let i = data.find("\"text\":\"b")? + 9;
    let rest = &data[i..];
    let sp = rest.find(' ')?;
    let step = rest[..sp].parse().ok()?;
    let rest = &rest[sp + 1..];
    let sp2 = rest.find(' ')?;
    Some((step, rest[..sp2].parse().ok()?))
}

const MAX_STEPS: usize = 40;

/// What readers record, per step.
pub struct Recorder {
    hists: Mutex<Vec<Histogram<u64>>>,
    delivered: Vec<AtomicU64>,
    last_ns: Vec<AtomicU64>,
    /// Every delivery, when asked for (see [`Recorder::dump`]).
    samples: Option<Mutex<Vec<(usize, u64, u64)>>>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            hists: Mutex::new((0..MAX_STEPS).map(|_| new_hist()).collect()),
            delivered: (0..MAX_STEPS).map(|_| AtomicU64::new(0)).collect(),
            last_ns: (0..MAX_STEPS).map(|_| AtomicU64::new(0)).collect(),
            samples: std::env::var_os("NATTER_BENCH_LATENCY_DUMP").map(|_| Mutex::default()),
        })
    }

    /// With `NATTER_BENCH_LATENCY_DUMP=<file>`: writes step `step`'s deliveries as lines of
    /// `start_ns delivered_ns` and, per stage of `stages`, when that stage saw the message (0 when
    /// it did not), all in ns of [`now_ns`]: to see when slow ones happen, and where.
    pub fn dump(&self, step: usize, stages: &[&[(u64, u64)]]) {
        let (Some(samples), Some(path)) =
            (&self.samples, std::env::var_os("NATTER_BENCH_LATENCY_DUMP"))
        else {
            return;
        };
        let stages: Vec<std::collections::HashMap<u64, u64>> =
            stages.iter().map(|s| s.iter().copied().collect()).collect();
        let mut out = String::new();
        for (_, start, at) in samples.lock().unwrap().iter().filter(|s| s.0 == step) {
            out.push_str(&format!("{start} {at}"));
            for s in &stages {
                out.push_str(&format!(" {}", s.get(start).copied().unwrap_or(0)));
            }
            out.push('\n');
        }
        if let Err(e) = std::fs::write(&path, out) {
            eprintln!("bench: writing {}: {e}", path.to_string_lossy());
        }
    }

    fn record(&self, step: usize, start_ns: u64) {
        let now = now_ns();
        if step >= MAX_STEPS {
            return;
        }
        if let Some(samples) = &self.samples {
            samples.lock().unwrap().push((step, start_ns, now));
        }
        {
            let mut h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
            let _ = h[step].record(now.saturating_sub(start_ns).max(1));
        }
        self.delivered[step].fetch_add(1, Ordering::Relaxed);
        self.last_ns[step].fetch_max(now, Ordering::Relaxed);
    }
}

/// SSE readers on a set of sessions; they record every measured message they receive.
pub struct Readers {
    pub recorder: Arc<Recorder>,
    pub per_session: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub errors: Arc<AtomicU64>,
}

impl Drop for Readers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Readers {
    /// One SSE connection per (session, reader), each waiting for its `hello` before returning.
    pub async fn open(
        addr: SocketAddr,
        sessions: &[String],
        readers: &[Operator],
        since: u64,
    ) -> Result<Readers, BoxError> {
        Readers::open_on(&[addr], sessions, readers, since).await
    }

    /// [`Readers::open`] over several gateways: session `i`'s readers follow it on gateway
    /// `i % addrs.len()`.
    pub async fn open_on(
        addrs: &[SocketAddr],
        sessions: &[String],
        readers: &[Operator],
        since: u64,
    ) -> Result<Readers, BoxError> {
        let recorder = Recorder::new();
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (i, s) in sessions.iter().enumerate() {
            let addr = addrs[i % addrs.len()];
            for r in readers {
                // Resume from the stream's current end: earlier history is not measured.
                let path = format!("/api/events?sessions={s}:{since}");
                let mut sse = http::open_sse(addr, None, &r.cookie, &path).await?;
                let hello = sse.next().await?;
                if hello.event != "hello" {
                    return Err(format!("expected hello, got {hello:?}").into());
                }
                let (recorder, errors) = (recorder.clone(), errors.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        match sse.next().await {
                            Ok(e) if e.event.is_empty() => {
                                if let Some((step, start)) = parse_text(&e.data) {
                                    recorder.record(step, start);
                                } else if std::env::var_os("BENCH_DEBUG").is_some() {
                                    eprintln!("unparsed: {}", e.data);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }));
            }
        }
        Ok(Readers {
            recorder,
            per_session: readers.len(),
            tasks,
            errors,
        })
    }
}

/// The outcome of sending at one offered rate.
pub struct Step {
    pub offered: f64,
    pub sent: u64,
    pub send_errors: u64,
    pub first_error: Option<String>,
    /// Messages accepted per second by the API over the step.
    pub accepted_per_s: f64,
    /// Messages persisted and delivered to every reader, per second (first send to last
    /// delivery).
    pub delivered_per_s: f64,
    pub expected: u64,
    pub delivered: u64,
    pub latency: Lat,
    /// Send started → the API's answer read (the stored event's ack is in it).
    pub answered: Lat,
    /// How late the slowest send started against its schedule.
    pub max_lag: Duration,
    /// Reader streams that ended so far (the hub cuts off readers that fall behind).
    pub reader_drops: u64,
    /// CPU time per accepted message of each watched process over the step (name, µs); filled
    /// by [`crate::phases::step_up`].
    pub cpu_per_msg: Vec<(&'static str, f64)>,
}

impl Step {
    pub fn complete(&self) -> bool {
        self.send_errors == 0 && self.delivered >= self.expected && self.reader_drops == 0
    }
}

/// Senders: one keep-alive HTTP connection per session, as its operator.
pub struct Senders {
    clients: Vec<Client>,
    sessions: Vec<String>,
    /// Makes client ids unique across phases (a repeated id is a duplicate, not a message).
    tag: u64,
}

static SENDERS: AtomicU64 = AtomicU64::new(0);

impl Senders {
    pub fn new(addr: SocketAddr, sender: &Operator, sessions: &[String]) -> Senders {
        Senders::new_on(&[addr], 0, sender, sessions)
    }

    /// [`Senders::new`] over several gateways: session `i` is sent to through gateway
    /// `(i + shift) % addrs.len()`.
    pub fn new_on(
        addrs: &[SocketAddr],
        shift: usize,
        sender: &Operator,
        sessions: &[String],
    ) -> Senders {
        Senders {
            clients: (0..sessions.len())
                .map(|i| Client::new(addrs[(i + shift) % addrs.len()], &sender.cookie))
                .collect(),
            sessions: sessions.to_vec(),
            tag: SENDERS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sends at `rate` messages/s for `duration`, spread evenly over the sessions, then waits
    /// (at most `drain`) for every reader to get every accepted message. Latency runs from the
    /// moment a send starts (`from_schedule` = false) or from when it was due (true: a sender
    /// that falls behind its schedule is charged for it).
    pub async fn step(
        &mut self,
        readers: &Readers,
        step: usize,
        rate: f64,
        duration: Duration,
        from_schedule: bool,
        drain: Duration,
    ) -> Step {
        let schedule = Schedule {
            step,
            tag: self.tag,
            stride: self.sessions.len(),
            total: (rate * duration.as_secs_f64()).round() as usize,
            t0: tokio::time::Instant::now() + Duration::from_millis(20),
            t0_ns: now_ns() + 20_000_000,
            interval_ns: 1e9 / rate,
            from_schedule,
        };
        let stats = Arc::new(SendStats::default());
        let mut tasks = Vec::new();
        for (j, client) in self.clients.drain(..).enumerate() {
            let session = self.sessions[j].clone();
            tasks.push(tokio::spawn(send_session(
                client,
                session,
                j,
                schedule,
                stats.clone(),
            )));
        }
        for t in tasks {
            if let Ok(c) = t.await {
                self.clients.push(c);
            }
        }
        // Keep the session order stable for the next step.
        let send_end = now_ns();
        let sent = stats.sent.load(Ordering::Relaxed);
        let expected = sent * readers.per_session as u64;
        let deadline = Instant::now() + drain;
        while readers.recorder.delivered[step].load(Ordering::Relaxed) < expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        measured(readers, &schedule, rate, send_end, expected, &stats)
    }
}

/// When and what one step sends.
#[derive(Clone, Copy)]
struct Schedule {
    step: usize,
    /// The senders' tag (see [`Senders`]).
    tag: u64,
    /// Sessions: message `k` goes to session `k % stride`.
    stride: usize,
    total: usize,
    /// The moment message 0 is due, on both clocks.
    t0: tokio::time::Instant,
    t0_ns: u64,
    interval_ns: f64,
    from_schedule: bool,
}

/// What the senders of one step count.
struct SendStats {
    sent: AtomicU64,
    errors: AtomicU64,
    max_lag: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Send started → the API's answer (201) read, ns.
    answered: Mutex<Histogram<u64>>,
}

impl Default for SendStats {
    fn default() -> SendStats {
        SendStats {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_lag: AtomicU64::new(0),
            first_error: Mutex::new(None),
            answered: Mutex::new(new_hist()),
        }
    }
}

impl SendStats {
    fn failed(&self, error: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert_with(error);
    }
}

/// Sends session `j`'s share of the step (messages `j`, `j + stride`, …), each when it is due;
/// hands the client back for the next step.
async fn send_session(
    mut client: Client,
    session: String,
    j: usize,
    sc: Schedule,
    stats: Arc<SendStats>,
) -> Client {
    let path = format!("/api/sessions/{session}/messages");
    let mut k = j;
    while k < sc.total {
        let due_ns = sc.t0_ns + (k as f64 * sc.interval_ns) as u64;
        tokio::time::sleep_until(sc.t0 + Duration::from_nanos(due_ns - sc.t0_ns)).await;
        let start = now_ns();
        stats
            .max_lag
            .fetch_max(start.saturating_sub(due_ns), Ordering::Relaxed);
        let stamp = if sc.from_schedule {
            due_ns.min(start)
        } else {
            start
        };
        let body = serde_json::json!({"id": format!("p{}-s{}-{k}", sc.tag, sc.step), "text": text(sc.step, stamp)});
        match client.post_json(&path, &body).await {
            Ok(r) if r.status == 201 && http::find(&r.body, b"\"duplicate\":true").is_none() => {
                let took = now_ns().saturating_sub(stamp).max(1);
                let _ = stats.answered.lock().unwrap().record(took);
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                stats.failed(|| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
            }
            Err(e) => stats.failed(|| e.to_string()),
        }
        k += sc.stride;
    }
    client
}

/// The step's outcome from what the senders counted and the readers recorded.
fn measured(
    readers: &Readers,
    sc: &Schedule,
    rate: f64,
    send_end: u64,
    expected: u64,
    stats: &SendStats,
) -> Step {
    let step = sc.step;
    let sent = stats.sent.load(Ordering::Relaxed);
    let delivered = readers.recorder.delivered[step].load(Ordering::Relaxed);
    let last = readers.recorder.last_ns[step]
        .load(Ordering::Relaxed)
        .max(send_end);
    let hist = readers.recorder.hists.lock().unwrap()[step].clone();
    let per_reader = delivered as f64 / readers.per_session as f64;
    let send_secs = (send_end.saturating_sub(sc.t0_ns)) as f64 / 1e9;
    Step {
        offered: rate,
        sent,
        send_errors: stats.errors.load(Ordering::Relaxed),
        first_error: stats.first_error.lock().unwrap().clone(),
        accepted_per_s: sent as f64 / send_secs.max(1e-9),
        delivered_per_s: per_reader / ((last.saturating_sub(sc.t0_ns)) as f64 / 1e9).max(1e-9),
        expected,
        delivered,
        latency: Lat::from(&hist),
        answered: Lat::from(&*stats.answered.lock().unwrap()),
        max_lag: Duration::from_nanos(stats.max_lag.load(Ordering::Relaxed)),
        reader_drops: readers.errors.load(Ordering::Relaxed),
        cpu_per_msg: Vec::new(),
    }
}

/// A plain NATS subscriber on `subject` that records, for step `step`'s messages, send started
/// → the message seen here: on [`subjects::ALL_SESSION_COMMANDS`] the part of the latency in the
/// gateway (HTTP in, the command out), on [`subjects::ALL_LIVE`] everything before the gateway's
/// delivery (… the command to the session's owner, its JetStream append, the server's
/// republish). Stop it with [`NatsStage::finish`].
pub struct NatsStage {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`NatsStage`] saw: the latencies, and each message's (start, seen).
struct Seen(Histogram<u64>, Vec<(u64, u64)>);

impl NatsStage {
    pub async fn watch(
        client: &async_nats::Client,
        subject: &'static str,
        step: usize,
    ) -> Result<NatsStage, BoxError> {
        let mut sub = client.subscribe(subject).await?;
        client.flush().await?;
        let seen = Arc::new(Mutex::new(Seen(new_hist(), Vec::new())));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let now = now_ns();
                let Ok(data) = std::str::from_utf8(&m.payload) else {
                    continue;
                };
                if let Some((at_step, start)) = parse_text(data)
                    && at_step == step
                {
                    let mut s = s.lock().unwrap();
                    let _ = s.0.record(now.saturating_sub(start).max(1));
                    s.1.push((start, now));
                }
            }
        });
        Ok(NatsStage { seen, task })
    }

    /// The latencies, and each message's (start, seen) in ns of [`now_ns`].
    pub fn finish(self) -> (Lat, Vec<(u64, u64)>) {
        self.task.abort();
        let mut s = self.seen.lock().unwrap();
        (Lat::from(&s.0), std::mem::take(&mut s.1))
    }
}

/// The join measurement: a fresh SSE client receiving a session's whole history.
pub struct JoinResult {
    pub messages: usize,
    /// Request sent → the answer's first byte.
    pub to_first_byte: Duration,
    /// First byte → the last history event parsed.
    pub first_byte_to_last: Duration,
    pub total: Duration,
}

/// Puts `n` messages into a new session (through the session actor over NATS, 64 in flight),
/// then has `reader` open a stream on it `rounds` times; returns each round's timings.
pub async fn join(
    client: &async_nats::Client,
    addr: SocketAddr,
    opener: &Operator,
    reader: &Operator,
    n: usize,
    rounds: usize,
) -> Result<Vec<JoinResult>, BoxError> {
    let id = history(client, addr, opener, reader, n, "join").await?;
    let mut out = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let mut sse = http::open_sse(
            addr,
            None,
            &reader.cookie,
            &format!("/api/events?sessions={id}"),
        )
        .await?;
        let first = t0.elapsed();
        let mut got = 0;
        while got < n {
            match sse.next_within(Duration::from_secs(30)).await {
                Some(Ok(e)) => {
                    if e.event.is_empty() && e.data.contains("\"type\":\"message\"") {
                        got += 1;
                    }
                }
                _ => return Err(format!("join: stream ended after {got} of {n}").into()),
            }
        }
        let total = t0.elapsed();
        out.push(JoinResult {
            messages: got,
            to_first_byte: first,
            first_byte_to_last: total - first,
            total,
        });
    }
    Ok(out)
}

/// A new session of `opener` with machine `pc0.<tag>.bench` (one chat per machine: each caller
/// its own tag), joined by `reader`, with `n` messages from `opener` (sent to its actor over
/// NATS, 64 in flight, 100-byte texts); returns its ID.
pub async fn history(
    client: &async_nats::Client,
    addr: SocketAddr,
    opener: &Operator,
    reader: &Operator,
    n: usize,
    tag: &str,
) -> Result<String, BoxError> {
    let ids = sessions(client, addr, opener, std::slice::from_ref(reader), 1, tag).await?;
    let id = ids[0].clone();
    let sent = futures::stream::iter(0..n)
        .map(|k| {
            let (client, id, by) = (client.clone(), id.clone(), opener.who.clone());
            async move {
                command(
                    &client,
                    &id,
                    &SessionCommand::Send {
                        by,
                        client_id: format!("h{k}"),
                        text: text(MAX_STEPS, 0),
                    },
                )
                .await
            }
        })
        .buffer_unordered(64)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    if sent < n {
        return Err(format!("history: only {sent} of {n} messages stored").into());
    }
    Ok(id)
}
