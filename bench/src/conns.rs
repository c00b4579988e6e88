//! Idle SSE connections: how many one gateway process holds, what each costs in resident memory,
//! and what the gateway burns while they idle.
//!
//! The node under test runs in its own process (its file limit is its own) and the clients run in
//! several more processes, each from its own loopback source address (127.0.0.2, …) so that
//! neither file descriptors nor ephemeral ports run out.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::procs::{BoxError, NodeProc, Proc, cpu_share};

/// Connections per client process at most (the per-process file limit is 20k here).
const PER_CLIENT_PROC: usize = 9_000;

/// One measurement point.
#[derive(Clone, Debug)]
pub struct ConnPoint {
    pub target: usize,
    pub open: u64,
    pub failed: u64,
    pub nodes: usize,
    /// Sum over the nodes of (RSS now − RSS before any client connected).
    pub rss_delta_kib: u64,
    pub rss_total_kib: u64,
    /// Share of one core all the nodes used while idle.
    pub idle_cpu: f64,
    pub open_secs: f64,
    /// The same measure on a bare hyper SSE server (the `conns` phase only).
    pub floor_kib_per_conn: Option<f64>,
    /// The same measure on warp's SSE reply alone (the `conns` phase only).
    pub warp_kib_per_conn: Option<f64>,
}

impl ConnPoint {
    pub fn kib_per_conn(&self) -> f64 {
        self.rss_delta_kib as f64 / (self.open.max(1)) as f64
    }
}

/// A crowd of client processes.
pub struct Crowd {
    procs: Vec<Proc>,
    next_source: u8,
    expect: usize,
}

impl Crowd {
    /// Each connection must receive `expect` chat events (its replay) to count as open.
    pub fn new(expect: usize) -> Crowd {
        Crowd {
            procs: Vec::new(),
            next_source: 2,
            expect,
        }
    }

    /// Starts client processes that together open `count` connections to `node`.
    pub fn add(
        &mut self,
        node: &NodeProc,
        cookie: &str,
        sessions: &[String],
        count: usize,
        log: &Path,
    ) -> Result<Vec<usize>, BoxError> {
        let mut started = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(PER_CLIENT_PROC);
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, self.next_source));
            self.next_source = self.next_source.wrapping_add(1).max(2);
            let args = vec![
                "clients".to_string(),
                "--addr".into(),
                node.addr.to_string(),
                "--count".into(),
                n.to_string(),
                "--sessions".into(),
                sessions.join(","),
                "--sources".into(),
                source.to_string(),
                "--concurrency".into(),
                "48".into(),
                "--expect".into(),
                self.expect.to_string(),
            ];
            let proc = Proc::spawn(&args, &[("NATTER_BENCH_COOKIE", cookie.to_string())], log)?;
            started.push(self.procs.len());
            self.procs.push(proc);
            left -= n;
        }
        Ok(started)
    }

    /// Waits until the given client processes say DONE (or `limit` passes); returns (open, failed).
    pub async fn wait(&mut self, which: &[usize], limit: Duration) -> (u64, u64) {
        let deadline = Instant::now() + limit;
        let mut last: Vec<(u64, u64)> = vec![(0, 0); which.len()];
        let mut done = vec![false; which.len()];
        while done.iter().any(|d| !d) && Instant::now() < deadline {
            for (k, &i) in which.iter().enumerate() {
                if done[k] {
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match self.procs[i].line(left.min(Duration::from_secs(2))).await {
                    Ok(line) => {
                        let mut parts = line.split_whitespace();
                        let tag = parts.next().unwrap_or("");
                        let o = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                        let f = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                        last[k] = (o, f);
                        if tag == "DONE" {
                            done[k] = true;
                        }
                    }
                    Err(_) => {
                        if self.procs[i].child.try_wait().ok().flatten().is_some() {
                            done[k] = true;
                        }
                    }
                }
            }
        }
        last.iter().fold((0, 0), |(o, f), (a, b)| (o + a, f + b))
    }

    pub async fn stop(self) {
        for p in self.procs {
            p.kill().await;
        }
    }
}

/// Measures idle connections on `nodes`: opens `targets` (cumulative totals, spread evenly over
/// the nodes) one after another and reports each point.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    nodes: &[NodeProc],
    cookie: &str,
    sessions: &[String],
    targets: &[usize],
    open_limit: Duration,
    idle_window: Duration,
    expect: usize,
    log: &Path,
) -> Result<Vec<ConnPoint>, BoxError> {
    // Let the nodes settle, then take the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    let mut crowd = Crowd::new(expect);
    let mut points = Vec::new();
    let mut have = 0usize;
    let (mut open, mut failed) = (0u64, 0u64);
    for &target in targets {
        let add = target.saturating_sub(have);
        let t = Instant::now();
        let mut started = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let share = add / nodes.len() + usize::from(i < add % nodes.len());
            if share > 0 {
                started.extend(crowd.add(node, cookie, sessions, share, log)?);
            }
        }
        let (o, f) = crowd.wait(&started, open_limit).await;
        open += o;
        failed += f;
        have = target;
        let open_secs = t.elapsed().as_secs_f64();
        eprintln!("  {open} connections open ({failed} failed) in {open_secs:.1} s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_cpu = cpu_share(&pids, idle_window).await;
        let now: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
        points.push(ConnPoint {
            target,
            open,
            failed,
            nodes: nodes.len(),
            rss_delta_kib: now
                .iter()
                .zip(&base)
                .map(|(n, b)| n.saturating_sub(*b))
                .sum(),
            rss_total_kib: now.iter().sum(),
            idle_cpu,
            open_secs,
            floor_kib_per_conn: None,
            warp_kib_per_conn: None,
        });
    }
    crowd.stop().await;
    Ok(points)
}
