//! The idle-connection phases: many SSE clients held open on gateway processes (child
//! processes of their own), and a storm of reconnects that each need a replay.

use std::time::Duration;

use natter_actors::store::Stores;

use crate::chat::{self, Operator};
use crate::conns::{self, ConnPoint};
use crate::phases::{Target, tail};
use crate::procs::{BoxError, NodeProc};
use crate::{RunArgs, say};

/// Connects in the reconnect storm, and the messages each one missed.
const STORM: usize = 2_000;
pub const STORM_MESSAGES: usize = 5;

pub async fn phase_conns(
    at: &Target<'_>,
    cookie: &str,
    sessions: &[String],
    quick: bool,
) -> Result<Vec<ConnPoint>, BoxError> {
    say("idle SSE connections on one gateway process: 10k, then 19k");
    let node = NodeProc::start(at.url, at.password, at.log).await?;
    let targets: &[usize] = if quick {
        &[2_000, 4_000]
    } else {
        &[10_000, 19_000]
    };
    // One process's idle connections, opened and measured as for every server below.
    let held_by = |server: NodeProc| async move {
        let points = conns::measure(
            std::slice::from_ref(&server),
            cookie,
            sessions,
            targets,
            Duration::from_secs(120),
            natter_gateway::sse::KEEP_ALIVE,
            0,
            at.log,
        )
        .await;
        server.proc.stop(Duration::from_secs(10)).await;
        points
    };
    let mut points = held_by(node).await?;
    // The floors, measured the same way right after: a bare hyper SSE server, and warp's SSE.
    for warp in [false, true] {
        say(if warp {
            "the same connections on warp's SSE reply alone (the floor of the web framework)"
        } else {
            "the same connections on a bare hyper SSE server (the floor of the HTTP stack)"
        });
        let floor_points = held_by(NodeProc::start_floor(warp, at.log).await?).await?;
        for (p, f) in points.iter_mut().zip(&floor_points) {
            let kib = (f.failed == 0 && f.open > 0).then(|| f.kib_per_conn());
            if warp {
                p.warp_kib_per_conn = kib;
            } else {
                p.floor_kib_per_conn = kib;
            }
        }
    }
    let kib = |k: Option<f64>| k.map_or("-".to_string(), |f| format!("{f:.1} KiB"));
    for p in &points {
        say(format!(
            "  {} open: {:.1} KiB each (bare hyper: {}, warp SSE: {}), idle CPU {:.1}% of a core",
            p.open,
            p.kib_per_conn(),
            kib(p.floor_kib_per_conn),
            kib(p.warp_kib_per_conn),
            p.idle_cpu * 100.0
        ));
    }
    Ok(points)
}

pub async fn phase_many(
    args: &RunArgs,
    at: &Target<'_>,
    cookie: &str,
    sessions: &[String],
    out: &mut Option<ConnPoint>,
) -> Result<(), BoxError> {
    let n = args.many_nodes.max(1);
    let total = if args.quick {
        args.many.min(12_000)
    } else {
        args.many
    };
    say(format!(
        "idle SSE connections: {total} across {n} gateway processes"
    ));
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(NodeProc::start(at.url, at.password, at.log).await?);
    }
    let points = conns::measure(
        &nodes,
        cookie,
        sessions,
        &[total],
        Duration::from_secs(240),
        natter_gateway::sse::KEEP_ALIVE,
        0,
        at.log,
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
        // Kept before the kill: an interrupt during it keeps the measurement.
        *out = Some(p);
    }
    for node in nodes {
        node.proc.kill().await;
    }
    Ok(())
}

/// Browsers coming back at once (say, after a gateway restart), each with a few missed
/// messages: every such connect replays through a short-lived JetStream consumer.
pub async fn phase_storm(
    at: &Target<'_>,
    client: &async_nats::Client,
    stores: &Stores,
    ops: &[Operator],
    quick: bool,
    out: &mut Option<ConnPoint>,
) -> Result<(), BoxError> {
    let total = if quick { 500 } else { STORM };
    say(format!(
        "reconnect storm: {total} connects at once, each replaying {STORM_MESSAGES} missed messages"
    ));
    let node = NodeProc::start(at.url, at.password, at.log).await?;
    let storm = chat::sessions(client, node.addr, &ops[0], &ops[1..2], 20, "storm").await?;
    let since = tail(stores).await;
    send_missed(client, &ops[0], &storm).await?;
    let storm: Vec<String> = storm.iter().map(|s| format!("{s}:{since}")).collect();
    let points = conns::measure(
        std::slice::from_ref(&node),
        &ops[1].cookie,
        &storm,
        &[total],
        Duration::from_secs(90),
        Duration::from_secs(1),
        STORM_MESSAGES,
        at.log,
    )
    .await?;
    if let Some(p) = points.into_iter().next() {
        say(format!(
            "  {} of {} got their missed messages ({} failed after 3 tries) in {:.1} s",
            p.open, p.target, p.failed, p.open_secs
        ));
        *out = Some(p);
    }
    node.proc.kill().await;
    Ok(())
}

/// Sends `STORM_MESSAGES` messages into each session, as `by`.
async fn send_missed(
    client: &async_nats::Client,
    by: &Operator,
    sessions: &[String],
) -> Result<(), BoxError> {
    for id in sessions {
        for k in 0..STORM_MESSAGES {
            chat::command(
                client,
                id,
                &natter_actors::protocol::SessionCommand::Send {
                    by: by.who.clone(),
                    client_id: format!("storm-{k}"),
                    text: format!("missed message {k}"),
                },
            )
            .await?;
        }
    }
    Ok(())
}
