//! The phases of a run, one function each, in the order they run.

use std::path::Path;
use std::time::{Duration, Instant};

use natter_actors::store::Stores;
use natter_actors::subjects;

use crate::chat::{self, Operator, Step};
use crate::idle_phases::{phase_conns, phase_many, phase_storm};
use crate::procs::{BoxError, NodeProc};
use crate::raw::{self, RawResults};
use crate::report::fmt_d;
use crate::{Results, RunArgs, pause, say};

/// Where the phases run: the server, its broker password and the children's log.
pub struct Target<'a> {
    pub url: &'a str,
    pub password: &'a str,
    /// The `natter-simulator` user's password (the `fleet-page` phase's simulated fleet).
    pub simulator_password: &'a str,
    pub log: &'a Path,
    /// The nats-server's pid (its CPU time is read from `/proc`), when found.
    pub nats_pid: Option<u32>,
}

/// The chat phases' set-up: a node, operators logged in to it, and sessions they are all in.
struct Chat {
    node: NodeProc,
    client: async_nats::Client,
    stores: Stores,
    ops: Vec<Operator>,
    sessions: Vec<String>,
}

pub async fn phases(args: &RunArgs, at: &Target<'_>, res: &mut Results) -> Result<(), BoxError> {
    if args.has("raw") {
        res.raw = Some(phase_raw(at, args.quick).await?);
    }
    let chat_phases = args.has("latency")
        || args.has("throughput")
        || args.has("floor-chat")
        || args.has("join")
        || args.has("browser-join")
        || args.has("nodes");
    let conn_phases = args.has("conns") || args.has("many") || args.has("storm");
    if chat_phases || conn_phases {
        chat_and_conn_phases(args, at, res).await?;
    }
    // Last: its 100k machine records stay in the server, and a node started after it loads and
    // follows them (the gateway's copy, the fleet's deadlines), which the chat figures must not
    // carry.
    if args.has("fleet-page") {
        res.fleet_page =
            Some(crate::fleet_page::phase_fleet_page(at, args.quick, &mut res.notes).await?);
    }
    Ok(())
}

/// The cost curve's phases (on a nats-server of their own: see `run`).
pub async fn cost_phases(
    args: &RunArgs,
    at: &Target<'_>,
    res: &mut Results,
) -> Result<(), BoxError> {
    if args.has("cost-readers") {
        res.cost_readers = Some(crate::cost::phase_readers(at, args.quick).await?);
    }
    if args.has("cost-sessions") {
        res.cost_sessions =
            Some(crate::cost::phase_sessions(at, args.quick, &mut res.notes).await?);
    }
    if args.has("cost-agents") {
        res.cost_agents = Some(crate::cost::phase_agents(at, args.quick).await?);
    }
    Ok(())
}

/// The phases on the chat set-up (one node, 100 sessions) and the idle-connection phases.
async fn chat_and_conn_phases(
    args: &RunArgs,
    at: &Target<'_>,
    res: &mut Results,
) -> Result<(), BoxError> {
    let chat = Chat::start(at).await?;
    if args.has("latency") {
        pause(args, &chat.node, "latency").await;
        let (natter, floor) = phase_latency(at, &chat, args.quick, &mut res.notes).await?;
        res.latency = Some(natter);
        res.latency_floor = Some(floor);
    }
    if args.has("throughput") {
        pause(args, &chat.node, "throughput").await;
        res.throughput = Some(phase_throughput(at, &chat, args.quick, &mut res.notes).await?);
    }
    if args.has("floor-chat") {
        res.floor_chat = Some(phase_floor_chat(at, &chat, args.quick).await?);
    }
    if args.has("join") {
        pause(args, &chat.node, "join").await;
        res.join = Some(phase_join(&chat).await?);
    }
    if args.has("browser-join") {
        pause(args, &chat.node, "browser-join").await;
        let j = crate::browser::phase_browser_join(
            &chat.client,
            chat.node.addr,
            &chat.ops[0],
            &chat.ops[1],
        )
        .await?;
        if let crate::browser::BrowserJoin::Skipped(why) = &j {
            res.notes.push(format!("Browser join not measured: {why}."));
        }
        res.browser_join = Some(j);
    }
    let Chat {
        node,
        client,
        stores,
        ops,
        sessions,
    } = chat;
    node.proc.stop(Duration::from_secs(5)).await;
    if args.has("nodes") {
        res.nodes = Some(crate::nodes::phase_nodes(at, args.quick).await?);
    }

    let cookie = ops[1].cookie.clone();
    // Idle clients resume from the stream's end (as a browser that has seen everything): a
    // connect that needs a replay costs a JetStream consumer, which the server caps per stream.
    let since = tail(&stores).await;
    let sessions: Vec<String> = sessions.iter().map(|s| format!("{s}:{since}")).collect();
    if args.has("conns") {
        res.conns = Some(phase_conns(at, &cookie, &sessions, args.quick).await?);
    }
    if args.has("many") {
        phase_many(args, at, &cookie, &sessions, &mut res.many).await?;
    }
    if args.has("storm") {
        phase_storm(at, &client, &stores, &ops, args.quick, &mut res.storm).await?;
    }
    Ok(())
}

/// The events stream's last sequence (0 when unknown).
pub(crate) async fn tail(stores: &Stores) -> u64 {
    let mut events = stores.events.clone();
    events
        .info()
        .await
        .map(|i| i.state.last_sequence)
        .unwrap_or(0)
}

/// A node on the target, and the broker's NATS connection with the stores the bench works
/// through (making operators, reading the events stream).
pub(crate) async fn node_with_stores(
    at: &Target<'_>,
) -> Result<(NodeProc, async_nats::Client, Stores), BoxError> {
    let node = NodeProc::start(at.url, at.password, at.log).await?;
    let client = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), at.password.into())
        .connect(at.url)
        .await?;
    let stores = Stores::ensure(
        client.clone(),
        natter::store_config(&natter::Config::defaults()),
    )
    .await?;
    Ok((node, client, stores))
}

impl Chat {
    async fn start(at: &Target<'_>) -> Result<Chat, BoxError> {
        let (node, client, stores) = node_with_stores(at).await?;
        say(format!("node (pid {}) on {}", node.pid(), node.addr));
        let ops = chat::operators(
            &stores,
            node.addr,
            &["bench-a", "bench-b", "bench-c", "bench-d"],
        )
        .await?;
        let sessions = chat::sessions(&client, node.addr, &ops[0], &ops[1..], 100, "s").await?;
        say(format!("{} sessions, 4 operators", sessions.len()));
        Ok(Chat {
            node,
            client,
            stores,
            ops,
            sessions,
        })
    }
}

async fn phase_raw(at: &Target<'_>, quick: bool) -> Result<RawResults, BoxError> {
    say("raw NATS: request/reply, JetStream publish+ack, pipelined publish");
    let r = raw::run(at.url, "natter-broker", at.password, quick).await?;
    say(format!(
        "  core RTT p50 {} p99 {}; publish+ack p50 {} p99 {}; pipelined {:.0} msg/s",
        fmt_d(r.core_rtt.p50),
        fmt_d(r.core_rtt.p99),
        fmt_d(r.js_ack.p50),
        fmt_d(r.js_ack.p99),
        r.js_pipelined_per_s
    ));
    Ok(r)
}

async fn phase_latency(
    at: &Target<'_>,
    chat: &Chat,
    quick: bool,
    notes: &mut Vec<String>,
) -> Result<(Step, Step), BoxError> {
    say("latency: 1k msg/s over 100 sessions, one reader each");
    let since = tail(&chat.stores).await;
    let readers =
        chat::Readers::open(chat.node.addr, &chat.sessions, &chat.ops[1..2], since).await?;
    let mut senders = chat::Senders::new(chat.node.addr, &chat.ops[0], &chat.sessions);
    let commands = chat::NatsStage::watch(&chat.client, subjects::ALL_SESSION_COMMANDS, 1).await?;
    let republished = chat::NatsStage::watch(&chat.client, subjects::ALL_LIVE, 1).await?;
    let s = latency_step(&mut senders, &readers, quick, notes, "Latency").await;
    let (commands, command_times) = commands.finish();
    let (republished, republished_times) = republished.finish();
    readers
        .recorder
        .dump(1, &[&command_times, &republished_times]);
    drop(readers);
    let stages = format!(
        "Latency by stage (1k msg/s, from the send's start, p50 · p99 · p99.9; \
         seen by a plain NATS subscriber of the bench): the gateway's command to the session \
         {} · {} · {}; the stored event republished by the server {} · {} · {}; \
         the API's answer read {} · {} · {}; delivered over SSE {} · {} · {}.",
        fmt_d(commands.p50),
        fmt_d(commands.p99),
        fmt_d(commands.p999),
        fmt_d(republished.p50),
        fmt_d(republished.p99),
        fmt_d(republished.p999),
        fmt_d(s.answered.p50),
        fmt_d(s.answered.p99),
        fmt_d(s.answered.p999),
        fmt_d(s.latency.p50),
        fmt_d(s.latency.p99),
        fmt_d(s.latency.p999),
    );
    say(format!("  {stages}"));
    notes.push(stages);

    say("latency floor: the same on a bare hyper + JetStream server");
    let floor = FloorChat::start(at, chat, 1).await?;
    let (mut senders, readers) = (floor.senders, floor.readers);
    let f = latency_step(&mut senders, &readers, quick, notes, "Latency floor").await;
    drop(readers);
    floor.proc.stop(Duration::from_secs(2)).await;
    Ok((s, f))
}

/// The floor of the chat path (`floor_chat.rs`) in a process of its own, with as many sessions
/// as the node's, `per_session` readers on each and the node's sender.
struct FloorChat {
    proc: crate::procs::Proc,
    senders: chat::Senders,
    readers: chat::Readers,
}

impl FloorChat {
    async fn start(
        at: &Target<'_>,
        chat: &Chat,
        per_session: usize,
    ) -> Result<FloorChat, BoxError> {
        let floor = NodeProc::start_floor_chat(at.url, at.password, at.log).await?;
        let sessions: Vec<String> = (0..chat.sessions.len())
            .map(|_| ulid::Ulid::new().to_string())
            .collect();
        let readers =
            chat::Readers::open(floor.addr, &sessions, &chat.ops[1..1 + per_session], 0).await?;
        let senders = chat::Senders::new(floor.addr, &chat.ops[0], &sessions);
        Ok(FloorChat {
            proc: floor.proc,
            senders,
            readers,
        })
    }
}

/// 2 s of warm-up, then the measured step (step 1) of 1k msg/s spread over the senders'
/// sessions; an incomplete run is noted under `what`.
async fn latency_step(
    senders: &mut chat::Senders,
    readers: &chat::Readers,
    quick: bool,
    notes: &mut Vec<String>,
    what: &str,
) -> Step {
    let secs = if quick { 4 } else { 12 };
    let warm = senders
        .step(
            readers,
            0,
            1000.0,
            Duration::from_secs(2),
            false,
            Duration::from_secs(2),
        )
        .await;
    if !warm.complete() {
        say(format!("  warm-up incomplete: {:?}", warm.first_error));
    }
    let s = senders
        .step(
            readers,
            1,
            1000.0,
            Duration::from_secs(secs),
            false,
            Duration::from_secs(3),
        )
        .await;
    say(format!(
        "  {} sent, {} delivered: p50 {} p99 {} p99.9 {} max {}",
        s.sent,
        s.delivered,
        fmt_d(s.latency.p50),
        fmt_d(s.latency.p99),
        fmt_d(s.latency.p999),
        fmt_d(s.latency.max)
    ));
    if !s.complete() {
        notes.push(format!(
            "{what} run incomplete: {} send errors (first: {}), {} of {} delivered.",
            s.send_errors,
            s.first_error.clone().unwrap_or_default(),
            s.delivered,
            s.expected
        ));
    }
    s
}

/// The offered rates of the throughput steps, messages/s.
const RATES: &[f64] = &[
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0, 13000.0, 17000.0, 22000.0,
    30000.0, 40000.0, 55000.0,
];

/// The best sustained step, and the first one that was not sustained.
type Throughput = (Option<Step>, Option<Step>);

async fn phase_throughput(
    at: &Target<'_>,
    chat: &Chat,
    quick: bool,
    notes: &mut Vec<String>,
) -> Result<Throughput, BoxError> {
    say("throughput: stepping the offered rate up, 3 readers per session");
    let addr = chat.node.addr;
    let since = tail(&chat.stores).await;
    let readers = chat::Readers::open(addr, &chat.sessions, &chat.ops[1..4], since).await?;
    let mut senders = chat::Senders::new(addr, &chat.ops[0], &chat.sessions);
    let steps =
        throughput_steps(at, &mut senders, &readers, quick, ("node", chat.node.pid())).await;
    if steps.budget_ended {
        notes.push("Throughput: the time budget ended the steps.".into());
    }
    Ok((steps.best, steps.failed))
}

/// The throughput phase's load (the same sessions and senders' pacing, 3 readers per session)
/// on the floor of the chat path (`floor_chat.rs`), in a process of its own.
async fn phase_floor_chat(
    at: &Target<'_>,
    chat: &Chat,
    quick: bool,
) -> Result<Throughput, BoxError> {
    say("floor-chat: the same load on a bare hyper + JetStream server");
    let floor = FloorChat::start(at, chat, 3).await?;
    let (mut senders, readers) = (floor.senders, floor.readers);
    let pid = floor.proc.pid;
    let steps = throughput_steps(at, &mut senders, &readers, quick, ("floor", pid)).await;
    drop(readers);
    floor.proc.stop(Duration::from_secs(2)).await;
    Ok((steps.best, steps.failed))
}

/// The throughput steps against one server process (`server`: its name and pid), with its CPU
/// and the nats-server's per message.
async fn throughput_steps(
    at: &Target<'_>,
    senders: &mut chat::Senders,
    readers: &chat::Readers,
    quick: bool,
    server: (&'static str, u32),
) -> StepUp {
    let mut watched = vec![server];
    watched.extend(at.nats_pid.map(|pid| ("nats-server", pid)));
    let budget = Duration::from_secs(if quick { 40 } else { 100 });
    step_up(
        senders,
        readers,
        RATES,
        quick,
        budget,
        &watched,
        say_throughput_step,
    )
    .await
}

/// What [`step_up`] found.
pub(crate) struct StepUp {
    /// The best sustained step and the first that was not.
    pub best: Option<Step>,
    pub failed: Option<Step>,
    /// Messages accepted over all the steps.
    pub sent: u64,
    /// The time budget, not a failed step, ended the steps.
    pub budget_ended: bool,
}

/// Steps the offered rate up through `rates` (4 s each, 2 s with `quick`) until a step is not
/// sustained — every accepted message at every reader, p99 ≤ 50 ms, ≥ 95% of the rate
/// accepted — or `budget` has passed; `report` is told each step.
pub(crate) async fn step_up(
    senders: &mut chat::Senders,
    readers: &chat::Readers,
    rates: &[f64],
    quick: bool,
    budget: Duration,
    watched: &[(&'static str, u32)],
    report: impl Fn(f64, &Step, bool),
) -> StepUp {
    let secs = if quick { 2 } else { 4 };
    let until = Instant::now() + budget;
    let mut out = StepUp {
        best: None,
        failed: None,
        sent: 0,
        budget_ended: false,
    };
    for (i, &rate) in rates.iter().enumerate() {
        let cpu_before: Vec<Duration> = watched
            .iter()
            .map(|(_, pid)| crate::procs::cpu_time(*pid).unwrap_or_default())
            .collect();
        let mut s = senders
            .step(
                readers,
                i,
                rate,
                Duration::from_secs(secs),
                true,
                Duration::from_secs(3),
            )
            .await;
        out.sent += s.sent;
        s.cpu_per_msg = watched
            .iter()
            .zip(&cpu_before)
            .map(|((name, pid), before)| {
                let used = crate::procs::cpu_time(*pid)
                    .unwrap_or_default()
                    .saturating_sub(*before);
                (*name, used.as_secs_f64() * 1e6 / s.sent.max(1) as f64)
            })
            .collect();
        let ok = s.complete()
            && s.latency.p99 <= Duration::from_millis(50)
            && s.accepted_per_s >= 0.95 * rate;
        report(rate, &s, ok);
        if !ok {
            out.failed = Some(s);
            break;
        }
        out.best = Some(s);
        if Instant::now() > until {
            out.budget_ended = true;
            break;
        }
    }
    out
}

fn say_throughput_step(rate: f64, s: &Step, ok: bool) {
    say(format!(
        "  offered {rate:.0}/s: accepted {:.0}/s, delivered {:.0}/s ({} of {}), p50 {} p99 {}, max send lag {}, CPU per message {}{}",
        s.accepted_per_s,
        s.delivered_per_s,
        s.delivered,
        s.expected,
        fmt_d(s.latency.p50),
        fmt_d(s.latency.p99),
        fmt_d(s.max_lag),
        fmt_cpu(&s.cpu_per_msg),
        if ok { "" } else { "  ← not sustained" }
    ));
}

/// `node 95 µs + nats-server 60 µs`: CPU time per accepted message of each watched process.
pub(crate) fn fmt_cpu(cpu: &[(&str, f64)]) -> String {
    cpu.iter()
        .map(|(name, us)| format!("{name} {us:.0} µs"))
        .collect::<Vec<_>>()
        .join(" + ")
}

async fn phase_join(chat: &Chat) -> Result<Vec<chat::JoinResult>, BoxError> {
    say("join: 10k-message history to a new SSE client");
    let j = chat::join(
        &chat.client,
        chat.node.addr,
        &chat.ops[0],
        &chat.ops[1],
        10_000,
        3,
    )
    .await?;
    for r in &j {
        say(format!(
            "  {} messages: first byte {} then last event after {}",
            r.messages,
            fmt_d(r.to_first_byte),
            fmt_d(r.first_byte_to_last)
        ));
    }
    Ok(j)
}
