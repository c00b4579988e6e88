//! The fleet actor: turns agent check-ins into machine records in the machines KV bucket.
//!
//! One per node, fed by a queue subscription on every agent's check-in subject, so each
//! check-in is handled by one node. The subject names the machine (NATS permissions keep an agent
//! to its own subjects); a check-in whose body names another machine, or that does not parse, is
//! counted, logged and dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::kv;
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::protocol::{Checkin, MachineRecord};
use crate::subjects;

/// Counters a node exposes about check-ins.
#[derive(Default, Debug)]
pub struct FleetStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
}

pub struct Fleet;

pub struct FleetArgs {
    pub client: async_nats::Client,
    pub machines: kv::Store,
    pub stats: Arc<FleetStats>,
}

pub struct FleetState {
    machines: kv::Store,
    stats: Arc<FleetStats>,
    pump: tokio::task::JoinHandle<()>,
}

pub enum FleetMsg {
    Checkin(async_nats::Message),
}

impl Actor for Fleet {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FleetMsg>,
        args: FleetArgs,
    ) -> Result<FleetState, ActorProcessingErr> {
        let mut sub = args
            .client
            .queue_subscribe(subjects::ALL_CHECKINS, subjects::FLEET_QUEUE.into())
            .await?;
        let pump = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if myself.cast(FleetMsg::Checkin(msg)).is_err() {
                    break;
                }
            }
        });
        Ok(FleetState {
            machines: args.machines,
            stats: args.stats,
            pump,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<FleetMsg>,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        state.pump.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<FleetMsg>,
        msg: FleetMsg,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        let FleetMsg::Checkin(msg) = msg;
        let record = match parse_checkin(msg.subject.as_str(), &msg.payload) {
            Ok(r) => r,
            Err(why) => {
                state.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, %why, "dropped a malformed check-in");
                return Ok(());
            }
        };
        let json = serde_json::to_vec(&record)?;
        if let Err(e) = state.machines.put(&record.id, json.into()).await {
            tracing::warn!(machine = %record.id, error = %e, "could not store a check-in");
            return Ok(());
        }
        state.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Validates a check-in against the subject it came on.
pub fn parse_checkin(subject: &str, payload: &[u8]) -> Result<MachineRecord, String> {
    let machine = subjects::machine_of_checkin(subject).ok_or("not a check-in subject")?;
    let c: Checkin = serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
    if c.v != 1 {
        return Err(format!("unsupported check-in version {}", c.v));
    }
    if c.machine != machine || !crate::protocol::valid_machine_id(&c.machine) {
        return Err(format!(
            "check-in for {:?} on {machine}'s subject",
            c.machine
        ));
    }
    Ok(MachineRecord {
        id: c.machine,
        last_checkin: crate::now_ms(),
        user: c.user.filter(|u| !u.trim().is_empty()),
        idle_secs: c.idle_secs,
        os: c.os,
        agent_version: c.agent_version,
        ip: c.ip,
        interval_secs: c.interval_secs.max(1),
    })
}
