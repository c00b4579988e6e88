//! The cost curve's data, table and plot.
//!
//! `scripts/bench` measures the readers and sessions series and `scripts/bench-fleet --cost` the
//! agents series, in different runs. So each run merges the series it measured into
//! `docs/cost-curve.json` (the others are kept, each with its own run line), and the table in
//! `docs/benchmarks.md` (between [`BEGIN`] and [`END`]) and the plot `docs/cost-curve.svg` are
//! both made from that whole file.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::cost::{AgentsPoint, RATE, ReadersPoint, SessionsPoint, per_us};

pub const BEGIN: &str = "<!-- BEGIN cost curve (written by natter-bench: scripts/bench, scripts/bench-fleet --cost) -->";
pub const END: &str = "<!-- END cost curve -->";

/// What one run measured, as the JSON kept in `docs/cost-curve.json` (series not measured are
/// absent).
pub fn series(
    run: &str,
    readers: Option<&[ReadersPoint]>,
    sessions: Option<&[SessionsPoint]>,
    agents: Option<&[AgentsPoint]>,
) -> Value {
    let mut v = json!({});
    if let Some(points) = readers {
        v["readers"] = json!({
            "run": run,
            "rate": RATE,
            "points": points.iter().map(|p| json!({
                "readers": p.readers,
                "sessions": p.sessions,
                "secs": round(p.secs, 1),
                "sent": p.sent,
                "delivered": p.delivered,
                "complete": p.complete,
                "node_cpu_ms": p.node_cpu.as_millis() as u64,
                "nats_cpu_ms": p.nats_cpu.as_millis() as u64,
                "node_us_per_delivered": round(per_us(p.node_cpu, p.delivered), 2),
                "nats_us_per_delivered": round(per_us(p.nats_cpu, p.delivered), 2),
                "node_us_per_sent": round(per_us(p.node_cpu, p.sent), 1),
                "nats_us_per_sent": round(per_us(p.nats_cpu, p.sent), 1),
                "kib_per_session": round(p.kib_per_session, 1),
                "node_idle_cpu_pct": round(p.node_idle * 100.0, 1),
                "nats_idle_cpu_pct": round(p.nats_idle * 100.0, 1),
            })).collect::<Vec<_>>(),
        });
    }
    if let Some(points) = sessions {
        v["sessions"] = json!({
            "run": run,
            "points": points.iter().map(|p| json!({
                "target": p.target,
                "open": p.open,
                "secs": round(p.secs, 1),
                "rss_kib": p.rss_kib,
                "base_kib": p.base_kib,
                "kib_per_session": round(p.kib_per_session(), 2),
            })).collect::<Vec<_>>(),
        });
    }
    if let Some(points) = agents {
        v["agents"] = json!({
            "run": run,
            "points": points.iter().map(|p| json!({
                "agents": p.agents,
                "listed": p.listed,
                "processes": p.processes,
                "node_cpu_pct": round(p.node_cpu * 100.0, 1),
                "nats_cpu_pct": round(p.nats_cpu * 100.0, 1),
                "simulators_cpu_pct": round(p.sim_cpu * 100.0, 1),
                "rss_kib": p.rss_kib,
                "base_kib": p.base_kib,
                "kib_per_agent": round(p.kib_per_agent(), 2),
            })).collect::<Vec<_>>(),
        });
    }
    v
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Merges `new` into `<dir of out>/cost-curve.json`, then rewrites the cost-curve block of
/// `out` and `<dir of out>/cost-curve.svg` from the whole data.
pub fn write(out: &Path, new: &Value) -> Result<(), crate::procs::BoxError> {
    let json_path = out.with_file_name("cost-curve.json");
    let mut all: Value = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({}));
    if let (Some(all), Some(new)) = (all.as_object_mut(), new.as_object()) {
        for (k, v) in new {
            all.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&all)? + "\n")?;
    std::fs::write(out.with_file_name("cost-curve.svg"), svg(&all))?;
    let doc = std::fs::read_to_string(out).unwrap_or_default();
    std::fs::write(out, replace_block(&doc, &table(&all)))?;
    Ok(())
}

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by `block` (appended in a section
/// of its own when the markers are missing).
pub fn replace_block(doc: &str, block: &str) -> String {
    let new_block = format!("{BEGIN}\n{block}{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &doc[..a], new_block, &doc[b + END.len()..])
        }
        _ => format!("{}\n\n## Cost curve\n\n{new_block}\n", doc.trim_end()),
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

fn points(all: &Value, series: &str) -> Vec<Value> {
    all[series]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown tables of the whole data (what is not measured yet says so).
pub fn table(all: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plot: [cost-curve.svg](cost-curve.svg) · data: [cost-curve.json](cost-curve.json)\n"
    );
    let rate = all["readers"]["rate"].as_f64().unwrap_or(RATE);
    let _ = writeln!(
        s,
        "**CPU and memory by readers per session** ({rate:.0} msg/s offered, sent over HTTP; {})\n",
        all["readers"]["run"]
            .as_str()
            .unwrap_or("not measured yet: scripts/bench")
    );
    let _ = writeln!(
        s,
        "| Readers per session | Sessions (SSE streams) | Sent · delivered | Node CPU per delivered | nats-server CPU per delivered | Node + nats-server CPU per sent message | Idle before sending: node · nats-server | Node memory per session (with its readers) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for p in points(all, "readers") {
        let streams = f(&p, "readers") * f(&p, "sessions");
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} · {}{} | {:.1} µs | {:.1} µs | {:.0} µs | {:.1}% · {:.1}% of a core | {:.1} KiB |",
            f(&p, "readers"),
            f(&p, "sessions"),
            thousands(streams),
            thousands(f(&p, "sent")),
            thousands(f(&p, "delivered")),
            if p["complete"].as_bool().unwrap_or(false) {
                ""
            } else {
                " (not all delivered)"
            },
            f(&p, "node_us_per_delivered"),
            f(&p, "nats_us_per_delivered"),
            f(&p, "node_us_per_sent") + f(&p, "nats_us_per_sent"),
            f(&p, "node_idle_cpu_pct"),
            f(&p, "nats_idle_cpu_pct"),
            f(&p, "kib_per_session"),
        );
    }
    let _ = writeln!(
        s,
        "\n**Node memory by open sessions** (opened and joined, each with its actor alive, no readers; {})\n",
        all["sessions"]["run"]
            .as_str()
            .unwrap_or("not measured yet: scripts/bench")
    );
    let _ = writeln!(
        s,
        "| Open sessions | Time to open them | Node RSS | Per session (RSS growth ÷ sessions) |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for p in points(all, "sessions") {
        let open = if f(&p, "open") < f(&p, "target") {
            format!(
                "{} (of {} asked: cut short)",
                thousands(f(&p, "open")),
                thousands(f(&p, "target"))
            )
        } else {
            thousands(f(&p, "open"))
        };
        let _ = writeln!(
            s,
            "| {open} | {:.1} s | {:.0} MiB | {:.1} KiB |",
            f(&p, "secs"),
            f(&p, "rss_kib") / 1024.0,
            f(&p, "kib_per_session"),
        );
    }
    let _ = writeln!(
        s,
        "\n**Check-ins by agents** (30 s interval, simulated agents in processes of at most 100k; {})\n",
        all["agents"]["run"]
            .as_str()
            .unwrap_or("not measured yet: scripts/bench-fleet --cost")
    );
    let _ = writeln!(
        s,
        "| Agents (listed) | Simulator processes | Node CPU | nats-server CPU | Node RSS | Per agent (RSS growth ÷ agents) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for p in points(all, "agents") {
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {:.1}% of a core | {:.1}% of a core | {:.0} MiB | {:.2} KiB |",
            thousands(f(&p, "agents")),
            thousands(f(&p, "listed")),
            f(&p, "processes"),
            f(&p, "node_cpu_pct"),
            f(&p, "nats_cpu_pct"),
            f(&p, "rss_kib") / 1024.0,
            f(&p, "kib_per_agent"),
        );
    }
    s
}

/// One line of a plot.
struct Line {
    name: &'static str,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// One panel: log x axis over the data's x values, linear y axis from 0.
struct Panel {
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    lines: Vec<Line>,
    empty: &'static str,
}

const NODE: &str = "#1f77b4";
const NATS: &str = "#d62728";

/// The plot: four panels, 2 × 2.
pub fn svg(all: &Value) -> String {
    let xy = |series: &str, x: &str, y: &str| -> Vec<(f64, f64)> {
        points(all, series)
            .iter()
            .map(|p| (f(p, x), f(p, y)))
            .filter(|(x, _)| *x > 0.0)
            .collect()
    };
    let panels = [
        Panel {
            title: "CPU per delivered message",
            x_label: "SSE readers per session",
            y_label: "CPU µs per delivered message",
            lines: vec![
                Line {
                    name: "node",
                    color: NODE,
                    points: xy("readers", "readers", "node_us_per_delivered"),
                },
                Line {
                    name: "nats-server",
                    color: NATS,
                    points: xy("readers", "readers", "nats_us_per_delivered"),
                },
            ],
            empty: "not measured yet (scripts/bench)",
        },
        Panel {
            title: "Memory per session by readers",
            x_label: "SSE readers per session",
            y_label: "node KiB per session",
            lines: vec![Line {
                name: "node RSS",
                color: NODE,
                points: xy("readers", "readers", "kib_per_session"),
            }],
            empty: "not measured yet (scripts/bench)",
        },
        Panel {
            title: "Memory per open session",
            x_label: "open sessions",
            y_label: "node KiB per session",
            lines: vec![Line {
                name: "node RSS",
                color: NODE,
                points: xy("sessions", "open", "kib_per_session"),
            }],
            empty: "not measured yet (scripts/bench)",
        },
        Panel {
            title: "Check-in CPU (30 s interval)",
            x_label: "agents",
            y_label: "% of one core",
            lines: vec![
                Line {
                    name: "node",
                    color: NODE,
                    points: xy("agents", "agents", "node_cpu_pct"),
                },
                Line {
                    name: "nats-server",
                    color: NATS,
                    points: xy("agents", "agents", "nats_cpu_pct"),
                },
            ],
            empty: "not measured yet (scripts/bench-fleet --cost)",
        },
    ];
    let (pw, ph) = (480.0, 320.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
        w = pw * 2.0,
        h = ph * 2.0 + 30.0
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Natter cost curve (natter-bench; see docs/benchmarks.md)</text>"#,
        pw
    );
    for (i, p) in panels.iter().enumerate() {
        let x0 = (i % 2) as f64 * pw;
        let y0 = 30.0 + (i / 2) as f64 * ph;
        panel(&mut s, x0, y0, pw, ph, p);
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A short number for a tick or a point label: 1k, 10k, 300k, 2.5, 120.
fn short(x: f64) -> String {
    if x >= 1000.0 && (x / 1000.0).fract() == 0.0 {
        format!("{}k", x / 1000.0)
    } else if x >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A point's value: one decimal below 100, none above.
fn value(y: f64) -> String {
    if y >= 100.0 {
        format!("{y:.0}")
    } else {
        format!("{y:.1}")
    }
}

/// A round upper bound for the y axis and its tick step (about 5 ticks).
fn y_scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn panel(s: &mut String, x0: f64, y0: f64, w: f64, h: f64, p: &Panel) {
    let (left, right, top, bottom) = (x0 + 70.0, x0 + w - 20.0, y0 + 60.0, y0 + h - 50.0);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        (left + right) / 2.0,
        y0 + 22.0,
        esc(p.title)
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 38.0,
        esc(&format!("{} (log scale)", p.x_label))
    );
    let _ = writeln!(
        s,
        r#"<text x="{x}" y="{y}" text-anchor="middle" transform="rotate(-90 {x} {y})">{}</text>"#,
        esc(p.y_label),
        x = x0 + 18.0,
        y = (top + bottom) / 2.0
    );
    let mut xs: Vec<f64> = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(x, _)| *x))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#777">{}</text>"##,
            (left + right) / 2.0,
            (top + bottom) / 2.0,
            esc(p.empty)
        );
        return;
    }
    let (lo, hi) = (xs[0].ln(), xs[xs.len() - 1].ln());
    let pad = 0.08 * (hi - lo).max(1.0);
    let sx = |x: f64| left + (x.ln() - (lo - pad)) / (hi - lo + 2.0 * pad) * (right - left);
    let y_max = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let (y_top, step) = y_scale(y_max * 1.1);
    let sy = |y: f64| bottom - y / y_top * (bottom - top);
    let mut y = 0.0;
    while y <= y_top + step / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py}" x2="{right}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left - 6.0,
            sy(y) + 4.0,
            if step >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y}")
            },
            py = sy(y)
        );
        y += step;
    }
    for x in &xs {
        let _ = writeln!(
            s,
            r#"<line x1="{px}" y1="{bottom}" x2="{px}" y2="{}" stroke="black"/><text x="{px}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 5.0,
            bottom + 18.0,
            short(*x),
            px = sx(*x)
        );
    }
    for (i, l) in p.lines.iter().enumerate() {
        let pts: Vec<String> = l
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            pts.join(" "),
            l.color
        );
        for (x, y) in &l.points {
            // A value goes above its point, or below when another line is higher there (so two
            // close points' values do not overlap), but not below the axis.
            let higher_other = (p.lines.iter().enumerate())
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, o)| o.points.iter())
                .any(|(ox, oy)| ox == x && oy > y);
            let label_y = if higher_other {
                (sy(*y) + 15.0).min(bottom - 4.0)
            } else {
                sy(*y) - 6.0
            };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/><text x="{:.1}" y="{:.1}" fill="{c}" font-size="11">{}</text>"#,
                sx(*x),
                sy(*y),
                sx(*x) + 6.0,
                label_y,
                value(*y),
                c = l.color
            );
        }
        // The legend: one row under the title, above the plot.
        let (lx, ly) = (left + 10.0 + i as f64 * 130.0, y0 + 40.0);
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            esc(l.name),
            c = l.color
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "readers": {"run": "run A", "rate": 200.0, "points": [
                {"readers": 1, "sessions": 100, "sent": 2000, "delivered": 2000, "complete": true,
                 "node_us_per_delivered": 375.0, "nats_us_per_delivered": 520.0,
                 "node_us_per_sent": 375.0, "nats_us_per_sent": 520.0, "kib_per_session": 76.8},
                {"readers": 100, "sessions": 10, "sent": 2000, "delivered": 199000, "complete": false,
                 "node_us_per_delivered": 9.9, "nats_us_per_delivered": 5.3,
                 "node_us_per_sent": 990.0, "nats_us_per_sent": 530.0, "kib_per_session": 2065.2}
            ]},
            "sessions": {"run": "run B", "points": [
                {"target": 1000, "open": 1000, "secs": 0.4, "rss_kib": 106496, "kib_per_session": 31.0},
                {"target": 100000, "open": 61000, "secs": 180.0, "rss_kib": 2809856, "kib_per_session": 27.3}
            ]}
        })
    }

    #[test]
    fn table_shows_every_series_and_says_what_is_missing_or_cut_short() {
        let t = table(&sample());
        assert!(t.contains("| 1 | 100 (100) | 2,000 · 2,000 | 375.0 µs | 520.0 µs | 895 µs |"));
        assert!(t.contains("2,000 · 199,000 (not all delivered)"));
        assert!(
            t.contains("| 61,000 (of 100,000 asked: cut short) | 180.0 s | 2744 MiB | 27.3 KiB |")
        );
        assert!(t.contains("run A") && t.contains("run B"));
        assert!(t.contains("not measured yet: scripts/bench-fleet --cost"));
    }

    #[test]
    fn the_block_is_replaced_between_its_markers_and_the_rest_kept() {
        let doc = format!("# B\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let new = replace_block(&doc, "new\n");
        assert_eq!(
            new,
            format!("# B\n\nbefore\n\n{BEGIN}\nnew\n{END}\n\nafter\n")
        );
        let appended = replace_block("# B\n", "new\n");
        assert!(appended.starts_with("# B\n\n## Cost curve\n\n"));
        assert!(appended.contains(&format!("{BEGIN}\nnew\n{END}")));
    }

    #[test]
    fn the_plot_labels_its_axes_and_marks_panels_without_data() {
        let s = svg(&sample());
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("CPU µs per delivered message"));
        assert!(s.contains("SSE readers per session (log scale)"));
        assert!(s.contains("open sessions (log scale)"));
        assert!(s.contains("% of one core"));
        assert!(s.contains("not measured yet (scripts/bench-fleet --cost)"));
        // One line per series with data: node and nats-server CPU, and two memory lines.
        assert_eq!(s.matches("<polyline").count(), 4);
    }

    #[test]
    fn y_axis_ends_on_a_round_number_above_the_data() {
        assert_eq!(y_scale(9.9), (10.0, 2.0));
        assert_eq!(y_scale(572.0), (600.0, 200.0));
        assert_eq!(y_scale(0.0), (1.0, 0.2));
    }
}
