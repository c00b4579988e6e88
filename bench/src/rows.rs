//! The results table: one function per row group, in the order the table shows them.

use std::time::Duration;

use crate::Results;
use crate::browser::{self, BrowserJoin};
use crate::chat::{JoinResult, Step};
use crate::conns::ConnPoint;
use crate::fleet_page::FleetPage;
use crate::idle_phases::STORM_MESSAGES;
use crate::nodes::NodesPoint;
use crate::raw::RawResults;
use crate::report::{Row, fmt_d, fmt_rate, row};

pub fn rows(res: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let raw = res.raw.as_ref();
    if let Some(r) = raw {
        rows.extend(rows_raw(r));
    }
    if let Some(s) = &res.latency {
        rows.push(row_latency(s, raw));
    }
    if let Some(f) = &res.latency_floor {
        rows.push(row_latency_floor(f, res.latency.as_ref(), raw));
    }
    if let Some((best, failed)) = &res.throughput {
        rows.push(row_throughput(best.as_ref(), failed.as_ref(), raw));
    }
    if let Some((best, failed)) = &res.floor_chat {
        let natter = res.throughput.as_ref().and_then(|(b, _)| b.as_ref());
        rows.push(row_floor_chat(best.as_ref(), failed.as_ref(), natter));
    }
    if let Some(points) = &res.nodes {
        rows.extend(rows_nodes(points));
    }
    if let Some(points) = &res.conns {
        rows.extend(points.iter().map(row_conns));
    }
    if let Some(p) = &res.many {
        rows.push(row_many(p));
    }
    if let Some(p) = &res.storm {
        rows.push(row_storm(p));
    }
    if let Some(j) = &res.join {
        rows.extend(row_join(j));
    }
    if let Some(BrowserJoin::Ran {
        runs_ms,
        first_ms,
        new_runs_ms,
        new_first_ms,
    }) = &res.browser_join
    {
        if !new_runs_ms.is_empty() {
            rows.push(row_browser_join(
                "first open (read from the stream)",
                new_runs_ms,
                new_first_ms,
            ));
        }
        rows.push(row_browser_join(
            "opened again (the gateway's kept copy)",
            runs_ms,
            first_ms,
        ));
    }
    if let Some(f) = &res.fleet_page {
        rows.extend(rows_fleet_page(f));
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

fn rows_raw(r: &RawResults) -> [Row; 3] {
    [
        row(
            "Raw NATS core request/reply round trip (200 B)",
            format!(
                "p50 {} · p99 {}",
                fmt_d(r.core_rtt.p50),
                fmt_d(r.core_rtt.p99)
            ),
            "1×".into(),
            "reference (≈150 µs p50 on such a machine)",
            None,
        ),
        row(
            "Raw JetStream publish with ack (200 B, file stream)",
            format!("p50 {} · p99 {}", fmt_d(r.js_ack.p50), fmt_d(r.js_ack.p99)),
            "1×".into(),
            "reference (≈125 µs p50)",
            None,
        ),
        row(
            "Raw JetStream publish, pipelined (200 B, 4096 acks in flight)",
            format!("{} msg/s", fmt_rate(r.js_pipelined_per_s)),
            "1×".into(),
            "reference (≈215k msg/s)",
            None,
        ),
    ]
}

/// A latency step's percentiles and message count.
fn fmt_latency(s: &Step) -> String {
    format!(
        "p50 {} · p99 {} · p99.9 {} ({} messages)",
        fmt_d(s.latency.p50),
        fmt_d(s.latency.p99),
        fmt_d(s.latency.p999),
        s.latency.count
    )
}

fn row_latency(s: &Step, raw: Option<&RawResults>) -> Row {
    let ratio = raw.map(|r| s.latency.p50.as_secs_f64() / r.js_ack.p50.as_secs_f64());
    let met = ratio.map(|x| x <= 4.0 && s.latency.p99 <= Duration::from_millis(1) && s.complete());
    row(
        "Send (HTTP API) → delivered (other participant's SSE), 1k msg/s over 100 sessions",
        fmt_latency(s),
        ratio.map_or("–".into(), |x| format!("p50 = {x:.1}× publish-ack p50")),
        "p50 ≤ 4× publish-ack p50; p99 ≤ 1 ms",
        met,
    )
}

/// The latency step on the floor of the chat path (`floor_chat.rs`): what this machine allows
/// for the same HTTP, JetStream and SSE work without the command hop, login or actor.
fn row_latency_floor(f: &Step, natter: Option<&Step>, raw: Option<&RawResults>) -> Row {
    let mut vs = Vec::new();
    if let Some(r) = raw {
        let x = f.latency.p50.as_secs_f64() / r.js_ack.p50.as_secs_f64();
        vs.push(format!("p50 = {x:.1}× publish-ack p50"));
    }
    if let Some(n) = natter {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        vs.push(format!(
            "Natter = {:.1}× the floor at p50, {:.1}× at p99",
            ratio(n.latency.p50, f.latency.p50),
            ratio(n.latency.p99, f.latency.p99)
        ));
    }
    row(
        "Floor of the latency: the same 1k msg/s on a bare hyper server appending to JetStream (fenced, de-duplicated) and writing the republished events to the readers",
        fmt_latency(f),
        if vs.is_empty() {
            "–".into()
        } else {
            vs.join("; ")
        },
        "reference (what this machine allows for the same work)",
        None,
    )
}

fn row_throughput(best: Option<&Step>, failed: Option<&Step>, raw: Option<&RawResults>) -> Row {
    let pipelined = raw.map(|r| r.js_pipelined_per_s);
    let value = fmt_steps(best, failed, true);
    let share = match (best, pipelined) {
        (Some(b), Some(p)) => Some(b.delivered_per_s / p),
        _ => None,
    };
    row(
        "Sustained chat messages persisted + delivered to 3 SSE readers each (p99 ≤ 50 ms)",
        value,
        share.map_or("–".into(), |x| {
            format!("{:.1}% of pipelined publish", x * 100.0)
        }),
        "≥ 20% of pipelined publish",
        share.map(|x| x >= 0.20),
    )
}

/// The best sustained step (with its SSE deliveries: 3 readers each) and the first that was not.
fn fmt_steps(best: Option<&Step>, failed: Option<&Step>, deliveries: bool) -> String {
    let Some(b) = best else {
        return "below 1k msg/s".into();
    };
    format!(
        "{} msg/s{}, p99 {}{}",
        fmt_rate(b.delivered_per_s),
        if deliveries {
            format!(" ({} SSE deliveries/s)", fmt_rate(b.delivered_per_s * 3.0))
        } else {
            String::new()
        },
        fmt_d(b.latency.p99),
        failed.map_or(String::new(), |f| format!(
            "; at {} offered: p99 {}, {} accepted/s",
            fmt_rate(f.offered),
            fmt_d(f.latency.p99),
            fmt_rate(f.accepted_per_s)
        ))
    )
}

/// The same load on the floor of the chat path, and Natter's share of it.
fn row_floor_chat(best: Option<&Step>, failed: Option<&Step>, natter: Option<&Step>) -> Row {
    let value = fmt_steps(best, failed, false);
    let share = match (natter, best) {
        (Some(n), Some(f)) => format!(
            "Natter = {:.0}% of the floor",
            100.0 * n.delivered_per_s / f.delivered_per_s
        ),
        _ => "–".into(),
    };
    row(
        "Floor of the chat path: the same load on a bare hyper server appending to JetStream (fenced, de-duplicated) and writing the republished events to the readers",
        value,
        share,
        "reference (what this machine allows for the same work)",
        None,
    )
}

/// Per node count: sustained throughput, each gateway's share of the events, failover.
fn rows_nodes(points: &[NodesPoint]) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in points {
        let nodes = if p.nodes == 1 {
            "1 node".to_string()
        } else {
            format!("{} nodes", p.nodes)
        };
        let value = match &p.best {
            Some(b) => format!(
                "{} msg/s, p99 {}{}",
                fmt_rate(b.delivered_per_s),
                fmt_d(b.latency.p99),
                p.failed.as_ref().map_or(String::new(), |f| format!(
                    "; at {} offered: p99 {}",
                    fmt_rate(f.offered),
                    fmt_d(f.latency.p99)
                ))
            ),
            None => "below 1k msg/s".into(),
        };
        rows.push(row(
            &format!("{nodes}, one nats-server: sustained messages, 60 sessions, 3 readers each spread over the gateways, sent through another gateway"),
            value,
            "–".into(),
            "grows with nodes (2 cores here: see notes)",
            None,
        ));
        let shares: Vec<String> = p
            .received
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * *r as f64 / p.total_events.max(1) as f64))
            .collect();
        let fair = p
            .received
            .iter()
            .all(|r| (*r as f64) <= 1.2 * p.total_events as f64 / p.nodes as f64 + 50.0);
        rows.push(row(
            &format!("{nodes}: events each gateway received from NATS, of all sessions' events"),
            format!("{} of {}", shares.join(" · "), p.total_events),
            "–".into(),
            "its followed sessions only (≈ 1/n each)",
            Some(fair),
        ));
        rows.push(row(
            &format!(
                "{nodes}: kill -9 of a node → every session accepts sends again{}",
                if p.nodes == 1 {
                    " (node restarted)"
                } else {
                    ""
                }
            ),
            match (p.failover, p.failover_p50) {
                (Some(all), Some(median)) => {
                    format!("{} (median session {})", fmt_d(all), fmt_d(median))
                }
                _ => "not within 30 s".into(),
            },
            "–".into(),
            if p.nodes == 1 { "–" } else { "≤ 2 s" },
            (p.nodes > 1).then(|| p.failover.is_some_and(|d| d <= Duration::from_secs(2))),
        ));
    }
    rows
}

fn row_conns(p: &ConnPoint) -> Row {
    let target = if p.target >= 19_000 {
        "≤ 12 KiB each at 19k"
    } else {
        "–"
    };
    // Beside the floor: what a bare hyper SSE server holds per connection, measured the same way.
    let ratio = p.floor_kib_per_conn.map_or("–".to_string(), |f| {
        let warp = p
            .warp_kib_per_conn
            .map_or(String::new(), |w| format!("; warp's SSE alone {w:.1} KiB"));
        format!(
            "{:.2}× a bare hyper SSE server ({f:.1} KiB{warp})",
            p.kib_per_conn() / f.max(0.1)
        )
    });
    let met = (p.target >= 19_000).then(|| p.kib_per_conn() <= 12.0 && p.failed == 0);
    row(
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
        ratio,
        target,
        met,
    )
}

fn row_many(p: &ConnPoint) -> Row {
    row(
        &format!(
            "Idle SSE connections across {} gateway processes (one NATS)",
            p.nodes
        ),
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
    )
}

fn row_storm(p: &ConnPoint) -> Row {
    row(
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
    )
}

/// The median of the join rounds; none when no round ran.
fn row_join(j: &[JoinResult]) -> Option<Row> {
    let mut fb: Vec<Duration> = j.iter().map(|r| r.first_byte_to_last).collect();
    let mut tot: Vec<Duration> = j.iter().map(|r| r.total).collect();
    fb.sort();
    tot.sort();
    if fb.is_empty() {
        return None;
    }
    let (fb, tot) = (fb[fb.len() / 2], tot[tot.len() / 2]);
    Some(row(
        "Join: a session's 10k-message history to a new SSE client (median of 3)",
        format!(
            "first byte → last event {:.0} ms; request → last event {:.0} ms",
            fb.as_secs_f64() * 1e3,
            tot.as_secs_f64() * 1e3
        ),
        "–".into(),
        "≤ 300 ms to the browser",
        Some(tot <= Duration::from_millis(300)),
    ))
}

fn row_browser_join(which: &str, runs_ms: &[f64], first_ms: &[f64]) -> Row {
    let (median, max) = browser::median_max(runs_ms);
    let (first, _) = browser::median_max(first_ms);
    row(
        &format!(
            "Join in the browser: chat window opened → its {}k-message history rendered, {which} (Chromium, {} runs)",
            browser::HISTORY / 1000,
            runs_ms.len()
        ),
        format!(
            "median {median:.0} ms · max {max:.0} ms (newest screenful shown: median {first:.0} ms)"
        ),
        "–".into(),
        "≤ 300 ms",
        Some(median <= 300.0),
    )
}

fn rows_fleet_page(f: &FleetPage) -> Vec<Row> {
    let k = f.machines / 1000;
    let kb = |b: f64| format!("{:.1} KB", b / 1000.0);
    let mut rows = vec![
        row(
            &format!(
                "Chat page, {k}k machines in scope: bytes per page load (first `machines` event)"
            ),
            format!(
                "{} a page of 200 (the whole list, without paging: {})",
                kb(f.paged.first_bytes as f64),
                kb(f.whole.first_bytes as f64)
            ),
            "–".into(),
            "–",
            None,
        ),
        row(
            &format!(
                "Chat page, {k}k machines checking in every 30 s: bytes per second per open page"
            ),
            format!(
                "{}/s a page of 200 (the whole list, without paging: {}/s)",
                kb(f.paged.bytes_per_sec),
                kb(f.whole.bytes_per_sec)
            ),
            "–".into(),
            "–",
            None,
        ),
    ];
    rows.push(row(
        &format!("Chat page, {k}k machines: one page of 200 from the server (`GET /api/machines`, median of 20)"),
        f.page_ms
            .iter()
            .map(|(q, ms)| format!("`{q}` {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(" · "),
        "–".into(),
        "–",
        None,
    ));
    if !f.first_screen_ms.is_empty() {
        let (after, from_press): (Vec<f64>, Vec<f64>) = f.first_screen_ms.iter().copied().unzip();
        let (median, max) = browser::median_max(&after);
        let (pressed, _) = browser::median_max(&from_press);
        rows.push(row(
            &format!(
                "Chat page, {k}k machines: login answered → first screen of machines with the count (Chromium, {} runs)",
                f.first_screen_ms.len()
            ),
            format!(
                "median {median:.0} ms · max {max:.0} ms (from pressing \"Log in\", password hash included: median {pressed:.0} ms)"
            ),
            "–".into(),
            "≤ 300 ms",
            Some(median <= 300.0),
        ));
    }
    rows
}
