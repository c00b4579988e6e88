//! `natter-bench`: Natter measured against the physical limit (raw NATS on the same server, in
//! the same run). See `docs/benchmarks.md` for the method; `scripts/bench` builds and runs it.
//!
//! The bench starts its own nats-server (the repository's `nats.conf`, a temporary store) and
//! runs every Natter node as a child process (this binary in `node` mode), so the node's memory,
//! CPU and file descriptors are its own. Idle-connection clients run in more child processes
//! (`clients` mode). Every child dies with the bench: `kill_on_drop`, and each exits when its
//! stdin closes.

mod chat;
mod conns;
mod http;
mod modes;
mod procs;
mod raw;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use natter::embedded::{NatsServer, NatsServerOptions, ServerSecrets, find_server_bin};

use crate::procs::{BoxError, NodeProc, raise_nofile};
use crate::report::{Row, fmt_d, fmt_rate, row};

#[derive(Parser)]
#[command(
    name = "natter-bench",
    about = "Natter against raw NATS: latency, throughput, connections, join"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark (the default).
    Run(RunArgs),
    /// (internal) Run a node against an external NATS server until stdin closes.
    #[command(hide = true)]
    Node {
        #[arg(long)]
        nats_url: String,
    },
    /// (internal) Hold idle SSE connections until stdin closes.
    #[command(hide = true)]
    Clients(modes::ClientsArgs),
}

const ALL_PHASES: &str = "raw,latency,throughput,join,conns,many,storm";

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The nats-server binary (default: on PATH if ≥ 2.11, else .tools/nats/bin/nats-server).
    #[arg(long, env = "NATTER_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// The server configuration.
    #[arg(long, default_value = "nats.conf")]
    nats_conf: PathBuf,
    /// Where the results block is written (between its markers; the rest is kept).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Print only; do not write `--out`.
    #[arg(long)]
    no_write: bool,
    /// Shorter phases (smoke runs, profiling).
    #[arg(long)]
    quick: bool,
    /// Phases to run: raw, latency, throughput, join, conns (10k and 19k on one gateway), many
    /// (across several gateway processes), storm (many connects at once that need a replay).
    #[arg(long, value_delimiter = ',', default_value = ALL_PHASES)]
    phases: Vec<String>,
    /// Connections for the `many` phase.
    #[arg(long, default_value_t = 100_000)]
    many: usize,
    /// Gateway processes for the `many` phase.
    #[arg(long, default_value_t = 6)]
    many_nodes: usize,
    /// Seconds to wait before each chat phase, with the node's pid printed (to attach a
    /// profiler).
    #[arg(long, default_value_t = 0)]
    pause: u64,
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Node { nats_url }) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(modes::node(nats_url)),
        Some(Cmd::Clients(args)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(modes::clients(args)),
        Some(Cmd::Run(args)) => runtime()?.block_on(run(args)),
        None => runtime()?.block_on(run(RunArgs::parse_from(["run"]))),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

impl RunArgs {
    fn parse_from<const N: usize>(argv: [&str; N]) -> RunArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: RunArgs,
        }
        Only::parse_from(argv).args
    }

    fn has(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// Everything measured (absent when a phase did not run).
#[derive(Default)]
struct Results {
    raw: Option<raw::RawResults>,
    latency: Option<chat::Step>,
    throughput: Option<(Option<chat::Step>, Option<chat::Step>)>,
    join: Option<Vec<chat::JoinResult>>,
    conns: Option<Vec<conns::ConnPoint>>,
    many: Option<conns::ConnPoint>,
    storm: Option<conns::ConnPoint>,
    notes: Vec<String>,
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    let t_start = Instant::now();
    let nofile = raise_nofile();
    let tmp = tempfile::Builder::new().prefix("natter-bench-").tempdir()?;
    let logs = std::env::temp_dir().join("natter-bench-logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let child_log = logs.join("children.log");
    say(format!("logs in {}", logs.display()));

    let bin = match &args.nats_server {
        Some(p) => p.clone(),
        None => find_server_bin("")?,
    };
    let nats_version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let password = hex(&rand_bytes());
    let server = NatsServer::start(NatsServerOptions {
        bin: bin.clone(),
        config: args.nats_conf.clone(),
        port: 0,
        store_dir: tmp.path().join("js"),
        log_file: Some(logs.join("nats-server.log")),
        secrets: ServerSecrets {
            broker_password: password.clone(),
            // The bench runs no agents and no simulator: nobody needs to know these.
            simulator_password: hex(&rand_bytes()),
            system_password: hex(&rand_bytes()),
            // nats.conf names the auth callout issuer; the bench runs no real agents.
            callout_issuer: natter_actors::auth_callout::Callout::generate_issuer().1,
        },
        tls: None,
    })
    .await?;
    let url = server.url();
    say(format!(
        "{nats_version} on {url}; open files limit {nofile}"
    ));
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut res = Results::default();
    // On Ctrl-C or SIGTERM the phases are dropped (their child processes are killed on drop)
    // and the server is stopped below, so nothing outlives the bench.
    let outcome = tokio::select! {
        r = phases(&args, &url, &password, &child_log, &mut res) => r,
        s = interrupted() => Err(format!("interrupted by {s}").into()),
    };
    if let Err(e) = &outcome {
        say(format!("stopped early: {e}"));
        res.notes.push(format!("The run stopped early: {e}."));
    }
    server.stop().await;

    let rows = rows(&res);
    let table = report::table(&rows);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let header = format!(
        "Run of {} · {} · {cores} cores · load average before the run {} · total {:.0} s{}\n\n",
        std::env::var("NATTER_BENCH_DATE").unwrap_or_else(|_| "now".into()),
        nats_version,
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        t_start.elapsed().as_secs_f64(),
        std::env::var("NATTER_BENCH_COMMIT")
            .map(|c| format!(" · commit {c}"))
            .unwrap_or_default(),
    );
    let mut block = format!("{header}{table}");
    for n in &res.notes {
        block.push_str(&format!("\n- {n}"));
    }
    block.push('\n');
    println!("\n{block}");
    if !args.no_write && args.phases.len() == ALL_PHASES.split(',').count() {
        report::write_doc(&args.out, &block)?;
        say(format!("results written to {}", args.out.display()));
    } else if !args.no_write {
        say("not every phase ran: results not written");
    }
    outcome
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ (std::process::id() as u128) << 64;
    for (i, x) in b.iter_mut().enumerate() {
        *x = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
    }
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn pause(args: &RunArgs, node: &NodeProc, what: &str) {
    if args.pause > 0 {
        say(format!(
            "node pid {} — {what} starts in {} s",
            node.pid(),
            args.pause
        ));
        tokio::time::sleep(Duration::from_secs(args.pause)).await;
    }
}

async fn phases(
    args: &RunArgs,
    url: &str,
    password: &str,
    log: &std::path::Path,
    res: &mut Results,
) -> Result<(), BoxError> {
    let quick = args.quick;
    if args.has("raw") {
        say("raw NATS: request/reply, JetStream publish+ack, pipelined publish");
        let r = raw::run(url, "natter-broker", password, quick).await?;
        say(format!(
            "  core RTT p50 {} p99 {}; publish+ack p50 {} p99 {}; pipelined {:.0} msg/s",
            fmt_d(r.core_rtt.p50),
            fmt_d(r.core_rtt.p99),
            fmt_d(r.js_ack.p50),
            fmt_d(r.js_ack.p99),
            r.js_pipelined_per_s
        ));
        res.raw = Some(r);
    }

    let chat_phases = args.has("latency") || args.has("throughput") || args.has("join");
    let conn_phases = args.has("conns") || args.has("many") || args.has("storm");
    if !chat_phases && !conn_phases {
        return Ok(());
    }
    let node = NodeProc::start(url, password, log).await?;
    say(format!("node (pid {}) on {}", node.pid(), node.addr));
    let client = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), password.into())
        .connect(url)
        .await?;
    let stores = natter_actors::store::Stores::ensure(
        client.clone(),
        natter::store_config(&natter::Config::defaults()),
    )
    .await?;
    let ops = chat::operators(
        &stores,
        node.addr,
        &["bench-a", "bench-b", "bench-c", "bench-d"],
    )
    .await?;
    let sessions = chat::sessions(&client, node.addr, &ops[0], &ops[1..], 100, "s").await?;
    say(format!("{} sessions, 4 operators", sessions.len()));
    let tail = || {
        let mut events = stores.events.clone();
        async move {
            events
                .info()
                .await
                .map(|i| i.state.last_sequence)
                .unwrap_or(0)
        }
    };

    if args.has("latency") {
        pause(args, &node, "latency").await;
        say("latency: 1k msg/s over 100 sessions, one reader each");
        let readers = chat::Readers::open(node.addr, &sessions, &ops[1..2], tail().await).await?;
        let mut senders = chat::Senders::new(node.addr, &ops[0], &sessions);
        let secs = if quick { 4 } else { 12 };
        let warm = senders
            .step(
                &readers,
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
                &readers,
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
            res.notes.push(format!(
                "Latency run incomplete: {} send errors (first: {}), {} of {} delivered.",
                s.send_errors,
                s.first_error.clone().unwrap_or_default(),
                s.delivered,
                s.expected
            ));
        }
        res.latency = Some(s);
    }

    if args.has("throughput") {
        pause(args, &node, "throughput").await;
        say("throughput: stepping the offered rate up, 3 readers per session");
        let readers = chat::Readers::open(node.addr, &sessions, &ops[1..4], tail().await).await?;
        let mut senders = chat::Senders::new(node.addr, &ops[0], &sessions);
        let rates: &[f64] = &[
            1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0, 13000.0, 17000.0,
            22000.0, 30000.0, 40000.0, 55000.0,
        ];
        let secs = if quick { 2 } else { 4 };
        let budget = Instant::now() + Duration::from_secs(if quick { 40 } else { 100 });
        let (mut best, mut failed) = (None, None);
        for (i, &rate) in rates.iter().enumerate() {
            let s = senders
                .step(
                    &readers,
                    i,
                    rate,
                    Duration::from_secs(secs),
                    true,
                    Duration::from_secs(3),
                )
                .await;
            let ok = s.complete()
                && s.latency.p99 <= Duration::from_millis(50)
                && s.accepted_per_s >= 0.95 * rate;
            say(format!(
                "  offered {rate:.0}/s: accepted {:.0}/s, delivered {:.0}/s ({} of {}), p50 {} p99 {}, max send lag {}{}",
                s.accepted_per_s,
                s.delivered_per_s,
                s.delivered,
                s.expected,
                fmt_d(s.latency.p50),
                fmt_d(s.latency.p99),
                fmt_d(s.max_lag),
                if ok { "" } else { "  ← not sustained" }
            ));
            if ok {
                best = Some(s);
            } else {
                failed = Some(s);
                break;
            }
            if Instant::now() > budget {
                res.notes
                    .push("Throughput: the time budget ended the steps.".into());
                break;
            }
        }
        res.throughput = Some((best, failed));
    }

    if args.has("join") {
        pause(args, &node, "join").await;
        say("join: 10k-message history to a new SSE client");
        let j = chat::join(&client, node.addr, &ops[0], &ops[1], 10_000, 3).await?;
        for r in &j {
            say(format!(
                "  {} messages: first byte {} then last event after {}",
                r.messages,
                fmt_d(r.to_first_byte),
                fmt_d(r.first_byte_to_last)
            ));
        }
        res.join = Some(j);
    }
    node.proc.stop(Duration::from_secs(5)).await;

    let cookie = ops[1].cookie.clone();
    // Idle clients resume from the stream's end (as a browser that has seen everything): a
    // connect that needs a replay costs a JetStream consumer, which the server caps per stream.
    let since = tail().await;
    let sessions: Vec<String> = sessions.iter().map(|s| format!("{s}:{since}")).collect();
    if args.has("conns") {
        say("idle SSE connections on one gateway process: 10k, then 19k");
        let node = NodeProc::start(url, password, log).await?;
        let targets: &[usize] = if quick {
            &[2_000, 4_000]
        } else {
            &[10_000, 19_000]
        };
        let points = conns::measure(
            std::slice::from_ref(&node),
            &cookie,
            &sessions,
            targets,
            Duration::from_secs(120),
            natter_gateway::sse::KEEP_ALIVE,
            0,
            log,
        )
        .await?;
        for p in &points {
            say(format!(
                "  {} open: {:.1} KiB each, idle CPU {:.1}% of a core",
                p.open,
                p.kib_per_conn(),
                p.idle_cpu * 100.0
            ));
        }
        node.proc.stop(Duration::from_secs(10)).await;
        res.conns = Some(points);
    }

    if args.has("many") {
        let n = args.many_nodes.max(1);
        let total = if quick {
            args.many.min(12_000)
        } else {
            args.many
        };
        say(format!(
            "idle SSE connections: {total} across {n} gateway processes"
        ));
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(NodeProc::start(url, password, log).await?);
        }
        let points = conns::measure(
            &nodes,
            &cookie,
            &sessions,
            &[total],
            Duration::from_secs(240),
            natter_gateway::sse::KEEP_ALIVE,
            0,
            log,
        )
        .await?;
        if let Some(p) = points.into_iter().next() {
            say(format!(
                "  {} open ({} failed) in {:.0} s: {:.1} KiB each, idle CPU {:.1}% of a core",
                p.open,
                p.failed,
                p.open_secs,
                p.kib_per_conn(),
                p.idle_cpu * 100.0
            ));
            res.many = Some(p);
        }
        for node in nodes {
            node.proc.kill().await;
        }
    }

    if args.has("storm") {
        // Browsers coming back at once (say, after a gateway restart), each with a few missed
        // messages: every such connect replays through a short-lived JetStream consumer.
        let total = if quick { 500 } else { STORM };
        say(format!(
            "reconnect storm: {total} connects at once, each replaying {STORM_MESSAGES} missed messages"
        ));
        let node = NodeProc::start(url, password, log).await?;
        let storm = chat::sessions(&client, node.addr, &ops[0], &ops[1..2], 20, "storm").await?;
        let since = tail().await;
        for id in &storm {
            for k in 0..STORM_MESSAGES {
                chat::command(
                    &client,
                    id,
                    &natter_actors::protocol::SessionCommand::Send {
                        by: ops[0].who.clone(),
                        client_id: format!("storm-{k}"),
                        text: format!("missed message {k}"),
                    },
                )
                .await?;
            }
        }
        let storm: Vec<String> = storm.iter().map(|s| format!("{s}:{since}")).collect();
        let points = conns::measure(
            std::slice::from_ref(&node),
            &cookie,
            &storm,
            &[total],
            Duration::from_secs(90),
            Duration::from_secs(1),
            STORM_MESSAGES,
            log,
        )
        .await?;
        if let Some(p) = points.into_iter().next() {
            say(format!(
                "  {} of {} got their missed messages ({} failed after 3 tries) in {:.1} s",
                p.open, p.target, p.failed, p.open_secs
            ));
            res.storm = Some(p);
        }
        node.proc.kill().await;
    }
    Ok(())
}

/// Connects in the reconnect storm, and the messages each one missed.
const STORM: usize = 2_000;
const STORM_MESSAGES: usize = 5;

fn rows(res: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let raw = res.raw.as_ref();
    if let Some(r) = raw {
        rows.push(row(
            "Raw NATS core request/reply round trip (200 B)",
            format!(
                "p50 {} · p99 {}",
                fmt_d(r.core_rtt.p50),
                fmt_d(r.core_rtt.p99)
            ),
            "1×".into(),
            "reference (≈150 µs p50 on such a machine)",
            None,
        ));
        rows.push(row(
            "Raw JetStream publish with ack (200 B, file stream)",
            format!("p50 {} · p99 {}", fmt_d(r.js_ack.p50), fmt_d(r.js_ack.p99)),
            "1×".into(),
            "reference (≈125 µs p50)",
            None,
        ));
        rows.push(row(
            "Raw JetStream publish, pipelined (200 B, 4096 acks in flight)",
            format!("{} msg/s", fmt_rate(r.js_pipelined_per_s)),
            "1×".into(),
            "reference (≈215k msg/s)",
            None,
        ));
    }
    if let Some(s) = &res.latency {
        let ratio = raw.map(|r| s.latency.p50.as_secs_f64() / r.js_ack.p50.as_secs_f64());
        let met =
            ratio.map(|x| x <= 4.0 && s.latency.p99 <= Duration::from_millis(5) && s.complete());
        rows.push(row(
            "Send (HTTP API) → delivered (other participant's SSE), 1k msg/s over 100 sessions",
            format!(
                "p50 {} · p99 {} · p99.9 {} ({} messages)",
                fmt_d(s.latency.p50),
                fmt_d(s.latency.p99),
                fmt_d(s.latency.p999),
                s.latency.count
            ),
            ratio.map_or("–".into(), |x| format!("p50 = {x:.1}× publish-ack p50")),
            "p50 ≤ 4× publish-ack p50; p99 ≤ 5 ms",
            met,
        ));
    }
    if let Some((best, failed)) = &res.throughput {
        let pipelined = raw.map(|r| r.js_pipelined_per_s);
        let value = match best {
            Some(b) => format!(
                "{} msg/s ({} SSE deliveries/s), p99 {}{}",
                fmt_rate(b.delivered_per_s),
                fmt_rate(b.delivered_per_s * 3.0),
                fmt_d(b.latency.p99),
                failed.as_ref().map_or(String::new(), |f| format!(
                    "; at {} offered: p99 {}, {} accepted/s",
                    fmt_rate(f.offered),
                    fmt_d(f.latency.p99),
                    fmt_rate(f.accepted_per_s)
                ))
            ),
            None => "below 1k msg/s".into(),
        };
        let share = match (best, pipelined) {
            (Some(b), Some(p)) => Some(b.delivered_per_s / p),
            _ => None,
        };
        rows.push(row(
            "Sustained chat messages persisted + delivered to 3 SSE readers each (p99 ≤ 50 ms)",
            value,
            share.map_or("–".into(), |x| {
                format!("{:.1}% of pipelined publish", x * 100.0)
            }),
            "≥ 20% of pipelined publish",
            share.map(|x| x >= 0.20),
        ));
    }
    if let Some(points) = &res.conns {
        for p in points {
            let target = if p.target >= 19_000 {
                "≤ 12 KiB each at 19k"
            } else {
                "–"
            };
            let met = (p.target >= 19_000).then(|| p.kib_per_conn() <= 12.0 && p.failed == 0);
            rows.push(row(
                &format!(
                    "Idle SSE connections held by one gateway process: {}k",
                    p.target / 1000
                ),
                format!(
                    "{} open{}: {:.1} KiB RSS each; idle CPU {:.1}% of a core",
                    p.open,
                    if p.failed > 0 {
                        format!(" ({} failed)", p.failed)
                    } else {
                        String::new()
                    },
                    p.kib_per_conn(),
                    p.idle_cpu * 100.0
                ),
                "–".into(),
                target,
                met,
            ));
        }
    }
    if let Some(p) = &res.many {
        rows.push(row(
            &format!("Idle SSE connections across {} gateway processes (one NATS)", p.nodes),
            format!(
                "{} of {} open in {:.0} s: {:.1} KiB RSS each, {:.0} MiB in all; idle CPU {:.1}% of a core",
                p.open,
                p.target,
                p.open_secs,
                p.kib_per_conn(),
                p.rss_total_kib as f64 / 1024.0,
                p.idle_cpu * 100.0
            ),
            "–".into(),
            "100k across processes",
            Some(p.open >= 100_000),
        ));
    }
    if let Some(p) = &res.storm {
        rows.push(row(
            &format!(
                "Reconnect storm: {} SSE connects at once, each resuming {STORM_MESSAGES} missed messages",
                p.target
            ),
            format!(
                "{} resumed, {} failed (3 tries each) in {:.1} s",
                p.open, p.failed, p.open_secs
            ),
            "–".into(),
            "every one resumes (BRIEF §1: zero-loss resume)",
            Some(p.failed == 0),
        ));
    }
    if let Some(j) = &res.join {
        let mut fb: Vec<Duration> = j.iter().map(|r| r.first_byte_to_last).collect();
        let mut tot: Vec<Duration> = j.iter().map(|r| r.total).collect();
        fb.sort();
        tot.sort();
        if !fb.is_empty() {
            let (fb, tot) = (fb[fb.len() / 2], tot[tot.len() / 2]);
            rows.push(row(
                "Join: a session's 10k-message history to a new SSE client (median of 3)",
                format!(
                    "first byte → last event {:.0} ms; request → last event {:.0} ms",
                    fb.as_secs_f64() * 1e3,
                    tot.as_secs_f64() * 1e3
                ),
                "–".into(),
                "≤ 300 ms to the browser",
                Some(tot <= Duration::from_millis(300)),
            ));
        }
    }
    rows.push(row(
        "Agents per node at a 30 s check-in interval",
        "see \"Check-ins\" below (scripts/bench-fleet)".into(),
        "–".into(),
        "100k on one node, < 50% of a core",
        None,
    ));
    rows
}
