//! The floors of one machine's state in a node (issue 13, item 3), beside the node's own
//! per-agent figure: how much resident memory `count` of each costs, one kind per process (freed
//! memory would be reused by the next kind and hide its cost).
//!
//! - `actor`: an idle ractor actor (as an agent actor was), after it handled one message;
//! - `task`: a tokio task waiting on its own mpsc channel;
//! - `record`: a 200-byte record under a 24-byte key in a `HashMap`.

use std::collections::HashMap;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::procs::BoxError;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FloorKind {
    Actor,
    Task,
    Record,
}

/// `natter-bench floor-fleet --kind K --count N`: prints `FLOOR <kind> <bytes per item>`.
pub async fn floor_fleet(kind: FloorKind, count: usize) -> Result<(), BoxError> {
    let before = resident_bytes()?;
    let (name, keep): (&str, Box<dyn std::any::Any>) = match kind {
        FloorKind::Actor => ("actor", Box::new(actors(count).await?)),
        FloorKind::Task => ("task", Box::new(tasks(count).await)),
        FloorKind::Record => ("record", Box::new(records(count))),
    };
    // Let the runtime settle (spawned tasks polled once, queues drained).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = resident_bytes()?;
    println!(
        "FLOOR {name} {}",
        after.saturating_sub(before) / count as u64
    );
    drop(keep);
    Ok(())
}

struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

async fn actors(count: usize) -> Result<Vec<ActorRef<()>>, BoxError> {
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        let (actor, _) = Actor::spawn(None, Idle, ()).await?;
        actor.cast(())?;
        all.push(actor);
    }
    Ok(all)
}

async fn tasks(count: usize) -> Vec<tokio::sync::mpsc::Sender<()>> {
    (0..count)
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(8);
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            tx
        })
        .collect()
}

fn records(count: usize) -> HashMap<Box<str>, Box<[u8; 200]>> {
    (0..count)
        .map(|i| {
            let key = format!("sim-{i:08}.bench.acme-xx").into_boxed_str();
            (key, Box::new([1u8; 200]))
        })
        .collect()
}

fn resident_bytes() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}
