//! The `fleet-page` phase (issue 13 item 5): the Chat page with a large simulated fleet in
//! scope. A node follows N simulated agents (the agent crate's simulator, 30 s check-ins); then
//! the Chat page's stream is measured paged (`offset=0&limit=200`, what the page asks) and
//! whole (no paging parameters, what it asked before): the bytes of the first `machines`
//! event, the bytes per second while the fleet checks in, and the time from pressing "Log in"
//! to the first screen of machines with their count in Chromium (`tests/browser/fleet-bench.mjs`).

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::chat;
use crate::http::{self, Client};
use crate::phases::Target;
use crate::procs::BoxError;
use crate::say;

/// Rows the Chat page asks for (`gateway/ui/machine-stream.js`, `PAGE_SIZE`).
const PAGE: usize = 200;
/// Measured logins in Chromium (after one warm-up).
const RUNS: usize = 5;

/// What the phase measured.
pub struct FleetPage {
    pub machines: usize,
    pub paged: StreamCost,
    pub whole: StreamCost,
    /// Per run: (the login answered → the first page of rows and its count shown, "Log in"
    /// pressed → the same) in ms; empty when Chromium could not run (the note says why).
    pub first_screen_ms: Vec<(f64, f64)>,
    /// Median time of `GET /api/machines?<query>` (a page of 200) for each of [`PAGE_QUERIES`].
    pub page_ms: Vec<(&'static str, f64)>,
}

/// Pages whose answer time is measured: the middle of the list, and a filter that scans it.
pub const PAGE_QUERIES: [&str; 2] = ["offset=50000&limit=200", "filter=*.sales.*&limit=200"];

/// One Chat page stream's cost.
pub struct StreamCost {
    /// Bytes of the first `machines` event's data.
    pub first_bytes: usize,
    /// Stream bytes per second afterwards, while the fleet checks in.
    pub bytes_per_sec: f64,
}

pub async fn phase_fleet_page(
    at: &Target<'_>,
    quick: bool,
    notes: &mut Vec<String>,
) -> Result<FleetPage, BoxError> {
    let agents = if quick { 5_000 } else { 100_000 };
    let window = Duration::from_secs(if quick { 10 } else { 30 });
    say(format!(
        "fleet-page: the Chat page with {agents} simulated machines in scope"
    ));
    let (node, _, stores) = crate::phases::node_with_stores(at).await?;
    let ops = chat::operators(&stores, node.addr, &["fleet-a"]).await?;
    let cookie = ops[0].cookie.clone();

    let stop = CancellationToken::new();
    let fleet = tokio::spawn(natter_agent::simulate::simulate(
        natter_agent::simulate::Simulation {
            nats_url: at.url.to_string(),
            nats_ca: None,
            nats_user: "natter-simulator".into(),
            nats_password: at.simulator_password.to_string(),
            agents,
            interval: Duration::from_secs(30),
            per_connection: 1000,
        },
        stop.clone(),
    ));
    let result = async {
        wait_for_fleet(
            node.addr,
            &cookie,
            agents,
            Duration::from_secs(600),
            "fleet-page",
        )
        .await?;
        let page_query = format!("offset=0&limit={PAGE}");
        let (paged, whole) = tokio::join!(
            stream_cost(node.addr, &cookie, &page_query, window),
            stream_cost(node.addr, &cookie, "", window),
        );
        let (paged, whole) = (paged?, whole?);
        let mut page_ms = Vec::new();
        for query in PAGE_QUERIES {
            page_ms.push((query, page_time(node.addr, &cookie, query).await?));
        }
        let first_screen_ms = match first_screen(node.addr, agents).await {
            Ok(runs) => runs,
            Err(why) => {
                say(format!("  first screen not measured: {why}"));
                notes.push(format!("Fleet page: first screen not measured: {why}."));
                Vec::new()
            }
        };
        Ok::<_, BoxError>(FleetPage {
            machines: agents,
            paged,
            whole,
            first_screen_ms,
            page_ms,
        })
    }
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), fleet).await;
    node.proc.stop(Duration::from_secs(5)).await;
    result
}

/// Waits (at most `limit`) until the node lists at least `agents` machines (each simulated
/// agent checked in once); returns how many it lists. `what` names the caller in the error.
pub(crate) async fn wait_for_fleet(
    addr: std::net::SocketAddr,
    cookie: &str,
    agents: usize,
    limit: Duration,
    what: &str,
) -> Result<usize, BoxError> {
    let started = Instant::now();
    let mut c = Client::new(addr, cookie);
    loop {
        let r = c.request("GET", "/api/machines?limit=1", b"").await?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let total = v["total"].as_u64().unwrap_or(0) as usize;
        if total >= agents {
            say(format!(
                "  {total} machines listed after {:.0} s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(total);
        }
        if started.elapsed() > limit {
            return Err(
                format!("{what}: only {total} of {agents} machines after {limit:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The median time of 20 requests `GET /api/machines?<query>` on one kept-alive connection (ms).
async fn page_time(addr: std::net::SocketAddr, cookie: &str, query: &str) -> Result<f64, BoxError> {
    let mut c = Client::new(addr, cookie);
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = c
            .request("GET", &format!("/api/machines?{query}"), b"")
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if r.status != 200 {
            return Err(format!("GET /api/machines?{query}: {}", r.status).into());
        }
    }
    let (median, _) = crate::browser::median_max(&times);
    say(format!(
        "  GET /api/machines?{query}: median {median:.1} ms"
    ));
    Ok(median)
}

/// Opens the Chat page's stream with `query`; measures its first `machines` event and then
/// its bytes per second over `window`.
async fn stream_cost(
    addr: std::net::SocketAddr,
    cookie: &str,
    query: &str,
    window: Duration,
) -> Result<StreamCost, BoxError> {
    let mut sse =
        http::open_sse(addr, None, cookie, &format!("/api/machines/events?{query}")).await?;
    let first_bytes = loop {
        let e = sse.next().await?;
        if e.event == "machines" {
            break e.data.len();
        }
    };
    // Whatever came with the first event (operators, …) is not the steady state; a stream that
    // never falls quiet (every change of the fleet) is measured from 1 s on.
    let settle = Instant::now() + Duration::from_secs(1);
    while let Some(left) = settle.checked_duration_since(Instant::now()) {
        if !matches!(sse.next_within(left).await, Some(Ok(_))) {
            break;
        }
    }
    let before = sse.received();
    let started = Instant::now();
    let end = started + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(Err(e)) = sse.next_within(left).await {
            return Err(e.into());
        }
    }
    let bytes_per_sec = (sse.received() - before) as f64 / started.elapsed().as_secs_f64();
    say(format!(
        "  /api/machines/events?{query}: first event {first_bytes} B, then {bytes_per_sec:.0} B/s"
    ));
    Ok(StreamCost {
        first_bytes,
        bytes_per_sec,
    })
}

/// Logins to the Chat page in Chromium until the first screen shows (ms per measured run).
async fn first_screen(
    addr: std::net::SocketAddr,
    agents: usize,
) -> Result<Vec<(f64, f64)>, String> {
    let (scripts, chromium) = crate::browser::environment()?;
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("node")
            .arg(Path::new(&scripts).join("fleet-bench.mjs"))
            .env("NATTER_URL", format!("http://{addr}"))
            .env("NATTER_OPERATOR", "fleet-a")
            .env("NATTER_PASSWORD", chat::PASSWORD)
            .env("NATTER_EXPECT_TOTAL", agents.to_string())
            .env("NATTER_RUNS", RUNS.to_string())
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "the Chromium script took over 5 minutes".to_string())?
    .map_err(|e| format!("node: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        say(format!("  {line}"));
    }
    if !out.status.success() {
        return Err(format!(
            "the Chromium script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Lines `first-screen-ms <ms> login <ms>`, both from pressing "Log in".
    let runs: Vec<(f64, f64)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("first-screen-ms "))
        .filter_map(|v| {
            let mut words = v.split_whitespace();
            let shown: f64 = words.next()?.parse().ok()?;
            let login: f64 = words.nth(1)?.parse().ok()?;
            Some((shown - login, shown))
        })
        .collect();
    if runs.len() != RUNS {
        return Err(format!("{} of {RUNS} runs reported a time", runs.len()));
    }
    Ok(runs)
}
