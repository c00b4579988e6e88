//! The fleet: one actor per agent, and the supervisor that feeds them.
//!
//! - [`FleetSupervisor`] queue-subscribes to every agent's check-in subject and to machine
//!   requests (so each reaches one node), validates check-ins (the subject names the machine; a
//!   check-in whose body names another machine or does not parse is counted, logged and
//!   dropped), routes them to the machine's [`AgentActor`] (started on demand, and at start for
//!   every known machine), and keeps one timer wheel of "offline at" deadlines so 100k agents
//!   need one timer, not 100k.
//! - [`AgentActor`] turns check-ins and timer ticks into the machine's status and keeps its
//!   [`MachineRecord`] in the machines KV bucket (the only writer of that key). Gateways watch the
//!   bucket, so each change reaches browsers without polling. It writes on a change of status or
//!   details, and otherwise at most every `refresh` so a quiet fleet costs little.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::machines::{MachineRecord, MachineReply, MachineRequest, MachineStatus};
use crate::protocol::{Checkin, valid_machine_id};
use crate::subjects;

/// Counters a node exposes about check-ins.
#[derive(Default, Debug)]
pub struct FleetStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Check-ins of suspended agents (they change nothing).
    pub ignored: AtomicU64,
    /// Machine records written to KV.
    pub writes: AtomicU64,
}

/// Fleet settings.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// An agent is offline after this many missed intervals.
    pub offline_after: u32,
    /// A record whose status did not change is rewritten at most this often.
    pub refresh: Duration,
    /// How often the timer wheel is checked.
    pub sweep: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            offline_after: 3,
            refresh: Duration::from_secs(300),
            sweep: Duration::from_millis(250),
        }
    }
}

pub struct FleetArgs {
    pub client: async_nats::Client,
    pub machines: kv::Store,
    pub stats: Arc<FleetStats>,
    pub config: FleetConfig,
}

/// Validates a check-in against the subject it came on.
pub fn parse_checkin(subject: &str, payload: &[u8]) -> Result<Checkin, String> {
    let machine = subjects::machine_of_checkin(subject).ok_or("not a check-in subject")?;
    let c: Checkin = serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
    if c.v != 1 {
        return Err(format!("unsupported check-in version {}", c.v));
    }
    if c.machine != machine || !valid_machine_id(&c.machine) {
        return Err(format!(
            "check-in for {:?} on {machine}'s subject",
            c.machine
        ));
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// The supervisor

pub struct FleetSupervisor;

pub enum FleetMsg {
    Checkin(async_nats::Message),
    Request(async_nats::Message),
    /// An agent actor's next "offline at" deadline (ms), or none.
    Deadline {
        machine: String,
        at: Option<u64>,
    },
    /// Start actors for every machine in KV (after a node start).
    LoadAll,
    Sweep,
}

struct Shared {
    client: async_nats::Client,
    machines: kv::Store,
    stats: Arc<FleetStats>,
    config: FleetConfig,
}

pub struct FleetState {
    shared: Arc<Shared>,
    children: HashMap<String, ActorRef<AgentMsg>>,
    by_actor: HashMap<ActorId, String>,
    deadlines: BTreeSet<(u64, String)>,
    deadline_of: HashMap<String, u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Actor for FleetSupervisor {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FleetMsg>,
        args: FleetArgs,
    ) -> Result<FleetState, ActorProcessingErr> {
        let mut checkins = args
            .client
            .queue_subscribe(subjects::ALL_CHECKINS, subjects::FLEET_QUEUE.into())
            .await?;
        let mut requests = args
            .client
            .queue_subscribe(subjects::ALL_MACHINE_REQUESTS, subjects::FLEET_QUEUE.into())
            .await?;
        let me = myself.clone();
        let pump_checkins = tokio::spawn(async move {
            while let Some(msg) = checkins.next().await {
                if me.cast(FleetMsg::Checkin(msg)).is_err() {
                    break;
                }
            }
        });
        let me = myself.clone();
        let pump_requests = tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                if me.cast(FleetMsg::Request(msg)).is_err() {
                    break;
                }
            }
        });
        let sweep = myself.send_interval(args.config.sweep, || FleetMsg::Sweep);
        myself.cast(FleetMsg::LoadAll)?;
        Ok(FleetState {
            shared: Arc::new(Shared {
                client: args.client,
                machines: args.machines,
                stats: args.stats,
                config: args.config,
            }),
            children: HashMap::new(),
            by_actor: HashMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            tasks: vec![pump_checkins, pump_requests, sweep],
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<FleetMsg>,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        for t in &state.tasks {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<FleetMsg>,
        msg: FleetMsg,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FleetMsg::Checkin(msg) => match parse_checkin(msg.subject.as_str(), &msg.payload) {
                Ok(checkin) => {
                    let actor = state.actor(&myself, &checkin.machine).await?;
                    let _ = actor.cast(AgentMsg::Checkin(checkin));
                }
                Err(why) => {
                    state.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(subject = %msg.subject, %why, "dropped a malformed check-in");
                }
            },
            FleetMsg::Request(msg) => {
                let Some(reply) = msg.reply.clone() else {
                    return Ok(());
                };
                let parsed = subjects::machine_of_request(msg.subject.as_str())
                    .filter(|m| valid_machine_id(m))
                    .ok_or_else(|| "not a machine ID".to_string())
                    .and_then(|m| {
                        serde_json::from_slice::<MachineRequest>(&msg.payload)
                            .map(|r| (m, r))
                            .map_err(|e| format!("invalid machine request: {e}"))
                    });
                match parsed {
                    Ok((machine, request)) => {
                        let actor = state.actor(&myself, &machine).await?;
                        let _ = actor.cast(AgentMsg::Request { request, reply });
                    }
                    Err(why) => {
                        let body = serde_json::to_vec(&MachineReply::Err(why))?;
                        let _ = state.shared.client.publish(reply, body.into()).await;
                    }
                }
            }
            FleetMsg::Deadline { machine, at } => {
                if let Some(old) = state.deadline_of.remove(&machine) {
                    state.deadlines.remove(&(old, machine.clone()));
                }
                if let Some(at) = at {
                    state.deadlines.insert((at, machine.clone()));
                    state.deadline_of.insert(machine, at);
                }
            }
            FleetMsg::LoadAll => {
                let keys = match state.shared.machines.keys().await {
                    Ok(keys) => {
                        keys.filter_map(|k| async move { k.ok() })
                            .collect::<Vec<_>>()
                            .await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list machines; retrying");
                        myself.send_after(Duration::from_secs(1), || FleetMsg::LoadAll);
                        return Ok(());
                    }
                };
                for machine in keys {
                    if valid_machine_id(&machine) {
                        let actor = state.actor(&myself, &machine).await?;
                        let _ = actor.cast(AgentMsg::Tick);
                    }
                }
            }
            FleetMsg::Sweep => {
                let now = crate::now_ms();
                while let Some((at, machine)) = state.deadlines.first().cloned() {
                    if at > now {
                        break;
                    }
                    state.deadlines.pop_first();
                    state.deadline_of.remove(&machine);
                    let actor = state.actor(&myself, &machine).await?;
                    let _ = actor.cast(AgentMsg::Tick);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FleetMsg>,
        evt: SupervisionEvent,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((child, why)) = crate::sessions::stopped_child(&evt) else {
            return Ok(());
        };
        let Some(machine) = state.by_actor.remove(&child) else {
            return Ok(());
        };
        state.children.remove(&machine);
        if why == UNKNOWN_MACHINE {
            return Ok(());
        }
        // A crashed agent actor comes back at once and reloads its record; a lost message is
        // repaired by the agent's next check-in.
        tracing::warn!(%machine, %why, "agent actor stopped; restarting");
        let actor = state.actor(&myself, &machine).await?;
        let _ = actor.cast(AgentMsg::Tick);
        Ok(())
    }
}

impl FleetState {
    async fn actor(
        &mut self,
        myself: &ActorRef<FleetMsg>,
        machine: &str,
    ) -> Result<ActorRef<AgentMsg>, ActorProcessingErr> {
        if let Some(a) = self.children.get(machine) {
            return Ok(a.clone());
        }
        let (actor, _) = Actor::spawn_linked(
            None,
            AgentActor,
            AgentArgs {
                machine: machine.to_string(),
                shared: self.shared.clone(),
                supervisor: myself.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        self.children.insert(machine.to_string(), actor.clone());
        self.by_actor.insert(actor.get_id(), machine.to_string());
        Ok(actor)
    }
}

// ---------------------------------------------------------------------------------------------
// One actor per agent

/// The stop reason of an actor for a machine nobody provisioned (not a failure).
const UNKNOWN_MACHINE: &str = "unknown machine";

pub struct AgentActor;

pub struct AgentArgs {
    machine: String,
    shared: Arc<Shared>,
    supervisor: ActorRef<FleetMsg>,
}

pub enum AgentMsg {
    Checkin(Checkin),
    /// Re-evaluate the status against the clock (offline detection).
    Tick,
    Request {
        request: MachineRequest,
        reply: async_nats::Subject,
    },
}

pub struct AgentState {
    machine: String,
    shared: Arc<Shared>,
    supervisor: ActorRef<FleetMsg>,
    loaded: bool,
    record: Option<MachineRecord>,
    /// What KV holds, to know whether a write is needed.
    stored: Option<MachineRecord>,
    stored_at: Instant,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        // No I/O: the supervisor awaits this. The record is loaded by the first message.
        Ok(AgentState {
            machine: args.machine,
            shared: args.shared,
            supervisor: args.supervisor,
            loaded: false,
            record: None,
            stored: None,
            stored_at: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.loaded {
            let entry = state.shared.machines.entry(&state.machine).await?;
            state.record = entry
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice::<MachineRecord>(&e.value).ok());
            state.stored = state.record.clone();
            state.loaded = true;
        }
        let now = crate::now_ms();
        match msg {
            AgentMsg::Checkin(c) => {
                let stats = &state.shared.stats;
                let record = state
                    .record
                    .get_or_insert_with(|| MachineRecord::provisioned(&c.machine));
                if record.suspended {
                    stats.ignored.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                record.last_checkin = Some(now);
                record.user = c.user.filter(|u| !u.trim().is_empty());
                record.idle_secs = c.idle_secs;
                record.os = c.os;
                record.agent_version = c.agent_version;
                record.ip = c.ip;
                record.interval_secs = c.interval_secs.max(1);
                record.audit_done = c.audit_done;
                record.remote_control = c.remote_control;
            }
            AgentMsg::Tick => {
                if state.record.is_none() {
                    myself.stop(Some(UNKNOWN_MACHINE.into()));
                    return Ok(());
                }
            }
            AgentMsg::Request { request, reply } => {
                let revoke = matches!(request, MachineRequest::Suspend { suspended: true });
                let answer: MachineReply = match request {
                    MachineRequest::Provision => Ok(state
                        .record
                        .get_or_insert_with(|| MachineRecord::provisioned(&state.machine))
                        .clone()),
                    MachineRequest::View => state
                        .record
                        .clone()
                        .ok_or_else(|| "no such machine".to_string()),
                    MachineRequest::Suspend { suspended } => match state.record.as_mut() {
                        Some(r) => {
                            r.suspended = suspended;
                            Ok(r.clone())
                        }
                        None => Err("no such machine".to_string()),
                    },
                };
                let known = answer.is_ok();
                state.settle(now).await;
                let answer = answer.map(|_| {
                    state
                        .record
                        .clone()
                        .unwrap_or_else(|| MachineRecord::provisioned(&state.machine))
                });
                let body = serde_json::to_vec(&answer)?;
                let _ = state.shared.client.publish(reply, body.into()).await;
                if revoke && known {
                    // Stored as suspended above, so the agent's reconnect is refused.
                    crate::revoke::announce(&state.shared.client, &state.machine).await;
                }
                if !known {
                    myself.stop(Some(UNKNOWN_MACHINE.into()));
                }
                return Ok(());
            }
        }
        state.settle(now).await;
        Ok(())
    }
}

impl AgentState {
    /// Derives the status, stores the record if it changed (or is due a refresh), and tells
    /// the supervisor when to look again.
    async fn settle(&mut self, now: u64) {
        let offline_after = self.shared.config.offline_after;
        let Some(record) = self.record.as_mut() else {
            return;
        };
        record.status = record.derive_status(now, offline_after);
        let changed = self.stored.as_ref().is_none_or(|stored| {
            let mut a = stored.clone();
            a.last_checkin = record.last_checkin;
            a.idle_secs = record.idle_secs;
            // A change of idle time alone is not worth a write unless it changes the status.
            &a != record
        });
        let due = self.stored_at.elapsed() >= self.shared.config.refresh;
        if changed || due {
            match serde_json::to_vec(&*record) {
                Ok(json) => match self.shared.machines.put(&self.machine, json.into()).await {
                    Ok(_) => {
                        self.shared.stats.writes.fetch_add(1, Ordering::Relaxed);
                        self.stored = Some(record.clone());
                        self.stored_at = Instant::now();
                    }
                    Err(e) => {
                        tracing::warn!(machine = %self.machine, error = %e, "could not store the machine")
                    }
                },
                Err(e) => tracing::warn!(error = %e, "could not encode the machine"),
            }
        }
        let at = match record.status {
            MachineStatus::Suspended | MachineStatus::Offline | MachineStatus::NeverCheckedIn => {
                None
            }
            _ => record.offline_at(offline_after).map(|t| t + 1),
        };
        let _ = self.supervisor.cast(FleetMsg::Deadline {
            machine: self.machine.clone(),
            at,
        });
    }
}
