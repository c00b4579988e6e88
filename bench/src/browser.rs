//! The `browser-join` phase: a chat window in Chromium opening a session with a 10k-message
//! history, from the window's navigation start until the whole history is rendered. Each
//! measured run opens a session of its own twice: first when the gateway has not read its
//! history yet (from the stream), then again (the gateway's kept copy, gateway/src/history.rs).
//! The browser side is `tests/browser/join-bench.mjs` (playwright-core and the browser tests'
//! harness).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::chat::{self, Operator};
use crate::procs::BoxError;
use crate::say;

/// Messages in the session the window opens.
pub const HISTORY: usize = 10_000;
/// Measured window opens (after one warm-up open that is not counted).
const RUNS: usize = 5;

/// What the phase measured: each run's window open → last history message rendered, in ms; or
/// why it did not run.
pub enum BrowserJoin {
    /// Per run: the whole history rendered, and its newest screenful shown (ms), when the
    /// window is opened again (`runs_ms`, `first_ms`) and at its first open (`new_*`).
    Ran {
        runs_ms: Vec<f64>,
        first_ms: Vec<f64>,
        new_runs_ms: Vec<f64>,
        new_first_ms: Vec<f64>,
    },
    Skipped(String),
}

/// Where the browser scripts are (relative to the repository root, where the bench runs).
const SCRIPTS: &str = "tests/browser";

/// Node and Chromium, or why the phase cannot run.
pub(crate) fn environment() -> Result<(PathBuf, PathBuf), String> {
    let scripts = PathBuf::from(SCRIPTS);
    if !scripts.join("node_modules/playwright-core").is_dir() {
        return Err(format!(
            "no {SCRIPTS}/node_modules/playwright-core (scripts/setup installs it)"
        ));
    }
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (set CHROMIUM, or scripts/setup installs it)",
            chromium.display()
        ));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok((scripts, chromium)),
        _ => Err("no `node` on PATH".into()),
    }
}

pub async fn phase_browser_join(
    client: &async_nats::Client,
    addr: std::net::SocketAddr,
    opener: &Operator,
    reader: &Operator,
) -> Result<BrowserJoin, BoxError> {
    say(format!(
        "browser-join: a chat window in Chromium opening a {HISTORY}-message history"
    ));
    let (scripts, chromium) = match environment() {
        Ok(env) => env,
        Err(why) => {
            say(format!("  skipped: {why}"));
            return Ok(BrowserJoin::Skipped(why));
        }
    };
    // One session for the warm-up, one per measured run.
    let mut ids = Vec::new();
    for k in 0..=RUNS {
        let tag = format!("browser-join-{k}"); // a machine each: one chat per machine at a time
        ids.push(chat::history(client, addr, opener, reader, HISTORY, &tag).await?);
    }
    let cookie = reader
        .cookie
        .split_once('=')
        .map_or("", |(_, v)| v)
        .to_string();
    // Another script in its place (same environment), e.g. one that records a Chromium trace.
    let script =
        std::env::var("NATTER_BENCH_BROWSER_SCRIPT").unwrap_or_else(|_| "join-bench.mjs".into());
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("node")
            .arg(Path::new(&scripts).join(script))
            .env("NATTER_URL", format!("http://{addr}"))
            .env("NATTER_COOKIE", cookie)
            .env("NATTER_SESSION", &ids[0])
            .env("NATTER_SESSIONS", ids.join(","))
            .env("NATTER_EXPECT", HISTORY.to_string())
            .env("NATTER_RUNS", RUNS.to_string())
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "browser-join: the Chromium script took over 5 minutes")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        say(format!("  {line}"));
    }
    if !out.status.success() {
        return Err(format!(
            "browser-join: the Chromium script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // Lines `join-ms <total> first <first message shown> …` (one per measured run), and
    // `join-new-ms …` for the first opens (a script that opens one session only has none).
    let times = |prefix: &str| -> (Vec<f64>, Vec<f64>) {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|v| {
                let mut words = v.split_whitespace();
                let total = words.next()?.parse::<f64>().ok()?;
                let first = words.nth(1)?.parse::<f64>().ok()?;
                Some((total, first))
            })
            .unzip()
    };
    let (runs_ms, first_ms) = times("join-ms ");
    let (new_runs_ms, new_first_ms) = times("join-new-ms ");
    if runs_ms.len() != RUNS {
        return Err(format!(
            "browser-join: {} of {RUNS} runs reported a time",
            runs_ms.len()
        )
        .into());
    }
    Ok(BrowserJoin::Ran {
        runs_ms,
        first_ms,
        new_runs_ms,
        new_first_ms,
    })
}

/// Median and max of the runs (ms).
pub fn median_max(runs_ms: &[f64]) -> (f64, f64) {
    let mut v = runs_ms.to_vec();
    v.sort_by(f64::total_cmp);
    (
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}
