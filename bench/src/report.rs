//! Percentiles, the results table and `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

/// A histogram of nanoseconds, 3 significant figures, up to 2 minutes.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds")
}

/// Latency percentiles.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl From<&Histogram<u64>> for Lat {
    fn from(h: &Histogram<u64>) -> Lat {
        let q = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
        Lat {
            count: h.len(),
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_nanos(h.max()),
        }
    }
}

/// A duration as µs below 10 ms, else ms.
pub fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

/// One row of the table.
pub struct Row {
    pub what: String,
    pub value: String,
    pub ratio: String,
    pub target: String,
    pub met: String,
}

pub fn row(what: &str, value: String, ratio: String, target: &str, met: Option<bool>) -> Row {
    Row {
        what: what.into(),
        value,
        ratio,
        target: target.into(),
        met: match met {
            Some(true) => "met".into(),
            Some(false) => "**not met**".into(),
            None => "–".into(),
        },
    }
}

/// The table as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| Measure | Value | vs raw NATS | Target | |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.what, r.value, r.ratio, r.target, r.met
        );
    }
    s
}

pub const BEGIN: &str = "<!-- BEGIN bench results (written by scripts/bench) -->";
pub const END: &str = "<!-- END bench results -->";

/// Replaces the results block of `path` (between [`BEGIN`] and [`END`]) with `block`, keeping
/// everything else (the method and the notes are written by hand). A file without the markers
/// gets the block appended.
pub fn write_doc(path: &Path, block: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new_block = format!("{BEGIN}\n{block}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &old[..a], new_block, &old[b + END.len()..])
        }
        _ if old.is_empty() => format!("# Benchmarks\n\n{new_block}\n"),
        _ => format!("{}\n{new_block}\n", old.trim_end()),
    };
    std::fs::write(path, new)
}
