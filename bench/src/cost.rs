//! The cost curve (issue 13 item 4), so a deployment can be sized: three phases.
//!
//! - `cost-readers`: CPU per delivered message and memory per session at 1, 3, 10 and 100 SSE
//!   readers per session, under one fixed offered load ([`RATE`]).
//! - `cost-sessions`: node memory with 1k, 10k and 100k open sessions.
//! - `cost-agents`: node CPU and memory with 10k, 100k and 300k simulated agents checking in
//!   every 30 s, from several simulator processes (`scripts/bench-fleet --cost`: it takes minutes).
//!
//! Each uses a fresh node process, so its RSS and CPU time (from `/proc`) are its own; CPU of the
//! nats-server is read the same way. [`crate::cost_doc`] writes the table and the plot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use natter::embedded::ServerSecrets;
use natter_actors::protocol::SessionCommand;

use crate::chat::{self, Operator};
use crate::http::Client;
use crate::phases::{Target, node_with_stores, tail};
use crate::procs::{BoxError, Proc, cpu_time};
use crate::say;

/// The offered load of every `cost-readers` step, messages/s (the same for every readers
/// count; at 100 readers it is 20k SSE events/s, below the ~24k/s the throughput phase
/// sustains).
pub const RATE: f64 = 200.0;

/// One `cost-readers` step.
#[derive(Clone, Debug)]
pub struct ReadersPoint {
    pub readers: usize,
    pub sessions: usize,
    pub secs: f64,
    pub sent: u64,
    /// SSE message events the readers received.
    pub delivered: u64,
    /// Every accepted message reached every reader, and no send failed.
    pub complete: bool,
    pub node_cpu: Duration,
    pub nats_cpu: Duration,
    /// Node RSS growth from before the sessions were opened to when they and their readers
    /// were (before any message was sent), per session.
    pub kib_per_session: f64,
    /// Share of a core the node and the nats-server used just before, over as long, with the
    /// sessions and readers open and nothing sent (included in the CPU above).
    pub node_idle: f64,
    pub nats_idle: f64,
}

/// One `cost-sessions` step.
#[derive(Clone, Debug)]
pub struct SessionsPoint {
    /// Sessions asked for.
    pub target: usize,
    /// Sessions open (opened and joined) when the step ended.
    pub open: usize,
    /// Seconds the step took to open its sessions.
    pub secs: f64,
    pub rss_kib: u64,
    /// Node RSS before the first session.
    pub base_kib: u64,
}

/// One `cost-agents` step.
#[derive(Clone, Debug)]
pub struct AgentsPoint {
    pub agents: usize,
    /// Machines the node listed when measured.
    pub listed: usize,
    pub processes: usize,
    /// Share of one core (1.0 = one core busy).
    pub node_cpu: f64,
    pub nats_cpu: f64,
    pub sim_cpu: f64,
    pub rss_kib: u64,
    pub base_kib: u64,
}

/// The pid of the nats-server listening on `port` (a child of this process), from `/proc`.
pub fn nats_server_pid(port: u16) -> Option<u32> {
    let me = std::process::id();
    let port = port.to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_ours = args.first()?.ends_with(b"nats-server")
            && args
                .windows(2)
                .any(|w| w[0] == b"--port" && w[1] == port.as_bytes());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat[stat.rfind(')')? + 2..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (is_ours && ppid == me).then_some(pid)
    })
}

fn cpu(pid: Option<u32>) -> Duration {
    pid.and_then(cpu_time).unwrap_or_default()
}

/// Operators for a cost phase on `node`: the first sends, the others read and join.
async fn operators(
    stores: &natter_actors::store::Stores,
    addr: SocketAddr,
) -> Result<Vec<Operator>, BoxError> {
    chat::operators(stores, addr, &["cost-a", "cost-b", "cost-c", "cost-d"]).await
}

/// Sessions for each readers count: 100 sessions up to 10 readers each, 10 at 100 readers, so
/// connections stay at most 1000.
fn readers_steps(quick: bool) -> Vec<(usize, usize)> {
    let s = if quick { 20 } else { 100 };
    vec![(1, s), (3, s), (10, s), (100, s / 10)]
}

pub async fn phase_readers(at: &Target<'_>, quick: bool) -> Result<Vec<ReadersPoint>, BoxError> {
    let secs = if quick { 3 } else { 10 };
    say(format!(
        "cost-readers: {RATE:.0} msg/s for {secs} s at 1, 3, 10 and 100 readers per session"
    ));
    if at.nats_pid.is_none() {
        say("  the nats-server's pid was not found: its CPU is reported as 0");
    }
    let mut out = Vec::new();
    for (readers, sessions) in readers_steps(quick) {
        let (node, client, stores) = node_with_stores(at).await?;
        let result = async {
            let ops = operators(&stores, node.addr).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let base = node.rss_kib();
            let tag = format!("cr{readers}");
            let ids = chat::sessions(&client, node.addr, &ops[0], &ops[1..], sessions, &tag).await?;
            // Reader k of a session is operator 1 + k % 3: a session with 100 readers has 33 or
            // 34 streams of each of three members (a browser per window, several windows).
            let who: Vec<Operator> = (0..readers).map(|k| ops[1 + k % 3].clone()).collect();
            let since = tail(&stores).await;
            let rd = chat::Readers::open(node.addr, &ids, &who, since).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let grown = node.rss_kib().saturating_sub(base);
            // What the two processes use with nothing sent.
            let (n0, s0) = (cpu(Some(node.pid())), cpu(at.nats_pid));
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 5 })).await;
            let idle_secs = t0.elapsed().as_secs_f64();
            let node_idle = (cpu(Some(node.pid())).saturating_sub(n0)).as_secs_f64() / idle_secs;
            let nats_idle = (cpu(at.nats_pid).saturating_sub(s0)).as_secs_f64() / idle_secs;
            let mut senders = chat::Senders::new(node.addr, &ops[0], &ids);
            // A short warm-up, then the measured step.
            senders
                .step(&rd, 0, RATE, Duration::from_secs(1), true, Duration::from_secs(3))
                .await;
            let (n0, s0) = (cpu(Some(node.pid())), cpu(at.nats_pid));
            let t0 = Instant::now();
            let step = senders
                .step(
                    &rd,
                    1,
                    RATE,
                    Duration::from_secs(secs),
                    true,
                    Duration::from_secs(5),
                )
                .await;
            let p = ReadersPoint {
                readers,
                sessions,
                secs: t0.elapsed().as_secs_f64(),
                sent: step.sent,
                delivered: step.delivered,
                complete: step.complete(),
                node_cpu: cpu(Some(node.pid())).saturating_sub(n0),
                nats_cpu: cpu(at.nats_pid).saturating_sub(s0),
                kib_per_session: grown as f64 / sessions as f64,
                node_idle,
                nats_idle,
            };
            say(format!(
                "  {readers} readers × {sessions} sessions: {} sent, {} delivered{}; CPU per delivered: node {:.1} µs, nats-server {:.1} µs (idle before: {:.1}% and {:.1}% of a core); {:.1} KiB per session",
                p.sent,
                p.delivered,
                if p.complete { "" } else { " (incomplete)" },
                per_us(p.node_cpu, p.delivered),
                per_us(p.nats_cpu, p.delivered),
                p.node_idle * 100.0,
                p.nats_idle * 100.0,
                p.kib_per_session
            ));
            Ok::<_, BoxError>(p)
        }
        .await;
        node.proc.stop(Duration::from_secs(5)).await;
        out.push(result?);
    }
    Ok(out)
}

/// CPU time per item in µs.
pub fn per_us(cpu: Duration, n: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Sessions being opened at once in `cost-sessions`.
const IN_FLIGHT: usize = 64;
/// How long one `cost-sessions` step may take to open its sessions.
pub const SESSIONS_BUDGET: Duration = Duration::from_secs(180);

pub async fn phase_sessions(
    at: &Target<'_>,
    quick: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<SessionsPoint>, BoxError> {
    let targets: &[usize] = if quick {
        &[100, 1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    say(format!(
        "cost-sessions: node memory with {targets:?} open sessions (opened over NATS, joined over HTTP, {IN_FLIGHT} at once)"
    ));
    let (node, client, stores) = node_with_stores(at).await?;
    let result = async {
        let ops = operators(&stores, node.addr).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let base = node.rss_kib();
        let mut out = Vec::new();
        let mut open = 0;
        for &target in targets {
            let t0 = Instant::now();
            open += open_sessions(&client, node.addr, &ops, open, target - open).await?;
            let secs = t0.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let p = SessionsPoint {
                target,
                open,
                secs,
                rss_kib: node.rss_kib(),
                base_kib: base,
            };
            say(format!(
                "  {open} of {target} sessions open after {secs:.0} s: node RSS {} MiB, {:.1} KiB per session",
                p.rss_kib / 1024,
                p.kib_per_session()
            ));
            out.push(p);
            if open < target {
                notes.push(format!(
                    "Cost curve: {open} of {target} sessions opened (a step may take {} s; or opening failed, see the log); measured there.",
                    SESSIONS_BUDGET.as_secs()
                ));
                break;
            }
        }
        Ok::<_, BoxError>(out)
    }
    .await;
    node.proc.stop(Duration::from_secs(10)).await;
    result
}

impl SessionsPoint {
    pub fn kib_per_session(&self) -> f64 {
        self.rss_kib.saturating_sub(self.base_kib) as f64 / self.open.max(1) as f64
    }
}

/// Opens `n` more sessions (numbered from `from`), [`IN_FLIGHT`] at once, within
/// [`SESSIONS_BUDGET`]: each opened by `ops[0]` through its actor over NATS (as a gateway
/// does) and joined by `ops[1]` through the HTTP API. Returns how many were opened and joined.
async fn open_sessions(
    client: &async_nats::Client,
    addr: SocketAddr,
    ops: &[Operator],
    from: usize,
    n: usize,
) -> Result<usize, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + SESSIONS_BUDGET;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (next, done, client) = (next.clone(), done.clone(), client.clone());
        let (opener, joiner) = (ops[0].clone(), ops[1].clone());
        workers.spawn(async move {
            let mut http = Client::new(addr, &joiner.cookie);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n || Instant::now() > deadline {
                    return Ok::<_, BoxError>(());
                }
                let id = ulid::Ulid::new().to_string();
                chat::command(
                    &client,
                    &id,
                    &SessionCommand::Open {
                        by: opener.who.clone(),
                        machine: format!("pc{}.cost.bench", from + k),
                        user: None,
                    },
                )
                .await?;
                let r = http
                    .request("POST", &format!("/api/sessions/{id}/join"), b"")
                    .await?;
                if r.status != 200 {
                    return Err(format!("join {id}: {}", r.status).into());
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d % 10_000 == 0 {
                    say(format!("  {} sessions open", from + d));
                }
            }
        });
    }
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = workers.join_next().await {
        // A worker stops at its first failure; the others go on (a timeout under load is not
        // the end of the step), and the step counts only what was opened and joined.
        if let Err(e) = r? {
            failed += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    if let Some(e) = first_error {
        if failed == IN_FLIGHT {
            return Err(format!("cost-sessions: every worker failed, first: {e}").into());
        }
        say(format!(
            "  {failed} of {IN_FLIGHT} workers stopped on an error, first: {e}"
        ));
    }
    Ok(done.load(Ordering::Relaxed))
}

/// Agents per simulator process.
const PER_PROCESS: usize = 100_000;

pub async fn phase_agents(at: &Target<'_>, quick: bool) -> Result<Vec<AgentsPoint>, BoxError> {
    let targets: &[usize] = if quick {
        &[1_000, 3_000]
    } else {
        &[10_000, 100_000, 300_000]
    };
    let window = Duration::from_secs(if quick { 5 } else { 30 });
    // The default check-in interval; a quick run checks in every 5 s so it is over sooner.
    let interval = Duration::from_secs(if quick { 5 } else { 30 });
    say(format!(
        "cost-agents: node CPU and memory with {targets:?} simulated agents at {} s (at most {PER_PROCESS} per simulator process)",
        interval.as_secs()
    ));
    let (node, _, stores) = node_with_stores(at).await?;
    let mut sims: Vec<Proc> = Vec::new();
    let result = async {
        let ops = chat::operators(&stores, node.addr, &["cost-fleet"]).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let base = node.rss_kib();
        let mut out = Vec::new();
        let mut running = 0;
        for &target in targets {
            let started = Instant::now();
            while running < target {
                let count = (target - running).min(PER_PROCESS);
                let mut p = Proc::spawn(
                    &[
                        "simulate".into(),
                        "--nats-url".into(),
                        at.url.into(),
                        "--first".into(),
                        running.to_string(),
                        "--count".into(),
                        count.to_string(),
                        "--interval".into(),
                        interval.as_secs().to_string(),
                    ],
                    &[(
                        ServerSecrets::SIMULATOR_PASSWORD_VAR,
                        at.simulator_password.to_string(),
                    )],
                    at.log,
                )?;
                p.line(Duration::from_secs(120)).await?;
                sims.push(p);
                running += count;
            }
            // Every agent's first check-in falls within one interval of its start; then the
            // node is in its steady state.
            let listed = crate::fleet_page::wait_for_fleet(
                node.addr,
                &ops[0].cookie,
                target,
                Duration::from_secs(300),
                "cost-agents",
            )
            .await?;
            if let Some(left) = (interval + Duration::from_secs(5)).checked_sub(started.elapsed())
            {
                tokio::time::sleep(left).await;
            }
            let sim_pids: Vec<u32> = sims.iter().map(|p| p.pid).collect();
            let sim_cpu = |pids: &[u32]| -> Duration { pids.iter().map(|p| cpu(Some(*p))).sum() };
            let (n0, s0, a0) = (cpu(Some(node.pid())), cpu(at.nats_pid), sim_cpu(&sim_pids));
            let t0 = Instant::now();
            tokio::time::sleep(window).await;
            let secs = t0.elapsed().as_secs_f64();
            let share = |d: Duration| d.as_secs_f64() / secs;
            let p = AgentsPoint {
                agents: target,
                listed,
                processes: sims.len(),
                node_cpu: share(cpu(Some(node.pid())).saturating_sub(n0)),
                nats_cpu: share(cpu(at.nats_pid).saturating_sub(s0)),
                sim_cpu: share(sim_cpu(&sim_pids).saturating_sub(a0)),
                rss_kib: node.rss_kib(),
                base_kib: base,
            };
            say(format!(
                "  {target} agents ({} listed, {} simulator processes): node {:.1}% of a core, {} MiB ({:.2} KiB per agent); nats-server {:.1}%; simulators {:.1}%",
                p.listed,
                p.processes,
                p.node_cpu * 100.0,
                p.rss_kib / 1024,
                p.kib_per_agent(),
                p.nats_cpu * 100.0,
                p.sim_cpu * 100.0
            ));
            out.push(p);
        }
        Ok::<_, BoxError>(out)
    }
    .await;
    for p in sims {
        p.stop(Duration::from_secs(10)).await;
    }
    node.proc.stop(Duration::from_secs(10)).await;
    result
}

impl AgentsPoint {
    pub fn kib_per_agent(&self) -> f64 {
        self.rss_kib.saturating_sub(self.base_kib) as f64 / self.agents.max(1) as f64
    }
}
