//! The `nodes` phase: the same chat load on 1 and on 3 nodes (one nats-server), and what a
//! `kill -9` of a node costs.
//!
//! For each node count: operators and sessions; each session's readers follow it on gateway
//! `i % n` and its sender posts through gateway `(i + 1) % n`, so commands cross nodes; the
//! offered rate steps up until it is not sustained; each gateway's count of events received
//! from NATS (`natter_gateway_events_received_total`) shows its share of the fan-out. Then one
//! node is killed with SIGKILL: with 3 nodes the survivors take its partitions, with 1 node it
//! is started again; the failover time is from the kill until every session has accepted a send
//! again (through a surviving gateway, or the restarted one).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::chat::{self, Operator, Readers, Senders, Step};
use crate::phases::{Target, step_up, tail};
use crate::procs::{BoxError, NodeProc};
use crate::report::fmt_d;
use crate::say;

/// Offered rates of the steps (messages/s over all sessions).
const RATES: &[f64] = &[
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0, 13000.0, 17000.0,
];
const SESSIONS: usize = 60;

/// What one node count measured.
pub struct NodesPoint {
    pub nodes: usize,
    /// The best sustained step and the first that was not.
    pub best: Option<Step>,
    pub failed: Option<Step>,
    /// Events each gateway received from NATS over the steps, and what a gateway receives
    /// when it follows every session (the steps' total).
    pub received: Vec<u64>,
    pub total_events: u64,
    /// From the kill until every session accepted a send again (`None`: not within 30 s).
    pub failover: Option<Duration>,
    /// The same, median over sessions (most sessions were not on the killed node).
    pub failover_p50: Option<Duration>,
}

pub async fn phase_nodes(at: &Target<'_>, quick: bool) -> Result<Vec<NodesPoint>, BoxError> {
    let mut points = Vec::new();
    for n in [1, 3] {
        points.push(one_count(at, n, quick).await?);
    }
    Ok(points)
}

async fn one_count(at: &Target<'_>, n: usize, quick: bool) -> Result<NodesPoint, BoxError> {
    say(format!("nodes: {n} node(s) on one nats-server"));
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(NodeProc::start(at.url, at.password, at.log).await?);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|p| p.addr).collect();
    balanced(&addrs).await;
    let client = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), at.password.into())
        .connect(at.url)
        .await?;
    let stores = natter_actors::store::Stores::ensure(
        client.clone(),
        natter::store_config(&natter::Config::defaults()),
    )
    .await?;
    let names: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|x| format!("nodes{n}-{x}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ops = chat::operators(&stores, addrs[0], &names).await?;
    let tag = format!("n{n}");
    let sessions = chat::sessions(&client, addrs[0], &ops[0], &ops[1..], SESSIONS, &tag).await?;

    let since = tail(&stores).await;
    let received_before = received(&addrs).await;
    let readers = Readers::open_on(&addrs, &sessions, &ops[1..4], since).await?;
    let mut senders = Senders::new_on(&addrs, 1, &ops[0], &sessions);
    let budget = Duration::from_secs(if quick { 30 } else { 80 });
    let report = |rate: f64, s: &Step, ok: bool| {
        say(format!(
            "  {n} node(s), offered {rate:.0}/s: accepted {:.0}/s, delivered {} of {}, p99 {}{}",
            s.accepted_per_s,
            s.delivered,
            s.expected,
            fmt_d(s.latency.p99),
            if ok { "" } else { "  ← not sustained" }
        ))
    };
    let steps = step_up(&mut senders, &readers, RATES, quick, budget, &[], report).await;
    let (best, failed, total_events) = (steps.best, steps.failed, steps.sent);
    drop(readers);
    let received: Vec<u64> = received(&addrs)
        .await
        .iter()
        .zip(&received_before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    say(format!(
        "  events received per gateway: {received:?} (all sessions' events: {total_events})"
    ));

    let (failover, failover_p50) = failover(at, nodes, &ops[0], &sessions).await?;
    say(format!(
        "  kill -9 of a node: every session accepts sends again after {} (median session {})",
        failover.map_or("> 30 s".into(), fmt_d),
        failover_p50.map_or("–".into(), fmt_d),
    ));
    Ok(NodesPoint {
        nodes: n,
        best,
        failed,
        received,
        total_events,
        failover,
        failover_p50,
    })
}

/// Kills the first node; with one node starts it again. Returns (all sessions, median session)
/// back to accepting sends, from the kill.
async fn failover(
    at: &Target<'_>,
    mut nodes: Vec<NodeProc>,
    sender: &Operator,
    sessions: &[String],
) -> Result<(Option<Duration>, Option<Duration>), BoxError> {
    let victim = nodes.remove(0);
    let killed = Instant::now();
    victim.proc.kill().await;
    if nodes.is_empty() {
        nodes.push(NodeProc::start(at.url, at.password, at.log).await?);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|p| p.addr).collect();
    let deadline = killed + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let addr = addrs[i % addrs.len()];
        let cookie = sender.cookie.clone();
        let path = format!("/api/sessions/{session}/messages");
        tasks.push(tokio::spawn(async move {
            let mut client = crate::http::Client::new(addr, &cookie);
            let mut k = 0;
            while Instant::now() < deadline {
                k += 1;
                let body =
                    serde_json::json!({"id": format!("failover-{k}"), "text": "after the kill"});
                if let Ok(r) = client.post_json(&path, &body).await
                    && r.status == 201
                {
                    return Some(killed.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.push(t.await.ok().flatten());
    }
    for node in nodes {
        node.proc.stop(Duration::from_secs(5)).await;
    }
    if times.iter().any(Option::is_none) {
        return Ok((None, None));
    }
    let mut times: Vec<Duration> = times.into_iter().flatten().collect();
    times.sort();
    Ok((times.last().copied(), times.get(times.len() / 2).copied()))
}

/// Waits (at most 15 s) until the nodes share the 32 partitions evenly: nodes started one
/// after another take theirs over a few lease ticks.
async fn balanced(addrs: &[SocketAddr]) {
    let fair = 32_usize.div_ceil(addrs.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let owned = metric(addrs, "natter_partitions_owned").await;
        if owned.iter().sum::<u64>() == 32 && owned.iter().all(|o| *o + 1 >= fair) {
            say(format!("  partitions owned per node: {owned:?}"));
            return;
        }
        if Instant::now() > deadline {
            say(format!("  partitions not balanced after 15 s: {owned:?}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each gateway's `natter_gateway_events_received_total` (0 when it has none).
async fn received(addrs: &[SocketAddr]) -> Vec<u64> {
    metric(addrs, "natter_gateway_events_received_total").await
}

/// Each gateway's value of the series `name` (summed over its labels; 0 when absent).
async fn metric(addrs: &[SocketAddr], name: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for addr in addrs {
        let mut c = crate::http::Client::new(*addr, "");
        let value = match c.request("GET", "/metrics", b"").await {
            Ok(r) if r.status == 200 => String::from_utf8_lossy(&r.body)
                .lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
            _ => 0,
        };
        out.push(value);
    }
    out
}
