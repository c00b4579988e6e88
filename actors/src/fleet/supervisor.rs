//! The fleet supervisor: keeps every machine of its partitions either as a compact [`Resting`]
//! record (nothing going on) or as an [`AgentActor`] (something going on), routes check-ins and
//! machine requests, and keeps one timer wheel of "offline at" deadlines for the whole fleet.
//!
//! A check-in that changes nothing worth writing is taken into the record here, without an
//! actor. A check-in of a resting machine that changes something (or is due the periodic
//! rewrite) is written here too: the check-in sets every field of the record but the
//! suspension, so the supervisor makes the record and publishes it to KV without waiting for the
//! acknowledgement (a task of its own collects those, [`confirm_writes`]; a failed write makes the
//! next check-in write again). Anything else (a deadline come due, a machine request, a
//! suspended machine) starts the machine's actor at once, seeded with the record, and the record
//! is dropped: one writer of the machine's key at a time. The supervisor's writes and a later
//! actor's go out on the same NATS connection, in that order; an actor started while a write of
//! the supervisor is unacknowledged is seeded with that record, so it never reads an older one
//! from KV. An actor that got nothing for `rest_after` (short, so a
//! burst of changes such as a fleet going offline together leaves few actors behind it) and has
//! nothing pending is asked to rest; it answers with its record unless something came up, and
//! the supervisor takes the record back only if it sent the actor nothing since it asked.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;

use super::agent::{
    AgentActor, AgentArgs, AgentMsg, MOVED_STOP, Quiet, REST_STOP, Resting, UNKNOWN_MACHINE,
};
use super::{FleetArgs, Shared, is_simulated_checkin, parse_checkin};
use crate::machines::{MachineRecord, MachineReply, MachineRequest};
use crate::partitions::Owned;
use crate::protocol::valid_machine_id;
use crate::subjects::{self, PARTITIONS};
use crate::supervision::{ChildSpec, Children, follow_partitions, pump, pump_batches};

pub struct FleetSupervisor;

/// Most check-ins handed to the supervisor in one message.
const CHECKIN_BATCH: usize = 128;
/// How long the first check-in of a batch waits for more (`pump_batches`): a status then shows
/// up to this much later, against 1 s allowed from check-in to the Chat page.
const CHECKIN_GATHER: Duration = Duration::from_millis(20);

/// How often running actors are checked for rest (at most).
const REST_SCAN: Duration = Duration::from_secs(1);

pub enum FleetMsg {
    /// Real or simulated agents' check-ins (the subject says which), in the order they came.
    Checkins(Vec<async_nats::Message>),
    Request(async_nats::Message),
    /// An agent actor's next "offline at" deadline (ms), or none.
    Deadline {
        machine: String,
        at: Option<u64>,
    },
    /// Read every machine in KV of these partitions (just taken).
    Load(Vec<u32>),
    /// Machines read from KV for [`FleetMsg::Load`].
    Loaded(Vec<crate::machines::MachineRecord>),
    /// An agent actor's answer to [`AgentMsg::Rest`]: its machine as a record.
    Resting {
        machine: String,
        resting: Resting,
        epoch: u64,
    },
    /// The partitions this node owns now.
    Owned(Owned),
    Sweep,
    /// Writes of the supervisor that JetStream acknowledged, or that failed.
    Written(Vec<WriteOutcome>),
}

/// What became of one write of a resting machine's record ([`FleetState::write_resting`]).
pub struct WriteOutcome {
    machine: Box<str>,
    /// The record's [`super::agent::material_hash`].
    hash: u64,
    result: Result<(), String>,
}

/// A write sent, and the acknowledgement to wait for.
type PendingWrite = (Box<str>, u64, jetstream::context::PublishAckFuture);

/// How an agent actor is built.
struct AgentSpec {
    shared: Arc<Shared>,
    supervisor: ActorRef<FleetMsg>,
}

impl ChildSpec for AgentSpec {
    type Child = AgentActor;
    const KIND: &'static str = "agent";
    const CLEAN_STOPS: &'static [&'static str] = &[UNKNOWN_MACHINE, MOVED_STOP, REST_STOP];

    fn build(&self, machine: &str) -> (AgentActor, AgentArgs) {
        let args = AgentArgs {
            machine: machine.to_string(),
            shared: self.shared.clone(),
            supervisor: self.supervisor.clone(),
        };
        (AgentActor, args)
    }
}

pub struct FleetState {
    agents: Children<AgentSpec>,
    /// What the supervisor sent each running actor: to pick idle ones and to tell whether an
    /// answer to [`AgentMsg::Rest`] is still true.
    activity: HashMap<String, Activity>,
    /// Machines without an actor.
    resting: HashMap<Box<str>, Resting>,
    last_rest_scan: u64,
    deadlines: Deadlines,
    /// Per owned partition: the pump of its machine-request subscription.
    requests: HashMap<u32, tokio::task::JoinHandle<()>>,
    /// Check-ins of partitions this node could not act for when they came (see
    /// [`FleetState::on_checkin`]).
    deferred: Deferred,
    /// How the supervisor writes resting machines' records; `None` when it cannot (the actors
    /// write them).
    writer: Option<Writer>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The supervisor's own writes of resting machines' records.
struct Writer {
    js: jetstream::Context,
    /// Acknowledgements to wait for, handed to [`confirm_writes`].
    acks: mpsc::UnboundedSender<PendingWrite>,
    /// The newest record written per machine whose write is not acknowledged yet, with its
    /// material hash: an actor started meanwhile is seeded with it.
    unconfirmed: HashMap<Box<str>, (u64, Box<MachineRecord>)>,
}

/// How long a check-in of a partition this node does not own is kept, in case this node takes
/// the partition over: longer than a dead node's lease takes to run out and be taken
/// ([`crate::partitions::LEASE_TTL`] plus a tick).
const DEFER_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Most check-ins kept at once (≈ 5 s of check-ins of 300k agents at 30 s).
const MAX_DEFERRED: usize = 50_000;

/// Recent check-ins of partitions this node did not own when they came, oldest first, with a
/// count per partition. A node that dies takes the check-ins it had not handled with it, and
/// no node takes a partition until the dead node's lease has run out; every node hears every
/// check-in, so the one that takes the partition over handles what came in between. (Check-ins
/// the dead owner did handle are handled again: a check-in reports the machine's state, so
/// taking it twice in order changes nothing.) The same covers this node's own lease lapsing
/// for a moment while its renewal is late.
#[derive(Default)]
struct Deferred {
    /// When each came, its partition, the check-in and whether it is simulated.
    queue: VecDeque<(std::time::Instant, u32, crate::protocol::Checkin, bool)>,
    per_partition: [u32; PARTITIONS as usize],
}

impl Deferred {
    fn push(&mut self, checkin: crate::protocol::Checkin, simulated: bool) {
        self.expire();
        if self.queue.len() < MAX_DEFERRED {
            let p = subjects::partition_of(&checkin.machine);
            let now = std::time::Instant::now();
            self.queue.push_back((now, p, checkin, simulated));
            self.per_partition[p as usize] += 1;
        }
    }

    /// Whether a check-in of partition `p` is kept.
    fn waiting(&self, p: u32) -> bool {
        self.per_partition[p as usize] > 0
    }

    /// Drops what is older than [`DEFER_FOR`].
    fn expire(&mut self) {
        while let Some((since, p, ..)) = self.queue.front() {
            if since.elapsed() < DEFER_FOR {
                break;
            }
            self.per_partition[*p as usize] -= 1;
            self.queue.pop_front();
        }
    }

    /// Whether a check-in of a partition in `owned` is waiting.
    fn any_of(&self, owned: &[bool]) -> bool {
        (self.per_partition.iter().zip(owned)).any(|(n, own)| *n > 0 && *own)
    }

    /// Takes out, in order, the check-ins of the partitions in `owned`.
    fn take(&mut self, owned: &[bool]) -> Vec<(crate::protocol::Checkin, bool)> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (since, p, checkin, simulated) in self.queue.drain(..) {
            if owned[p as usize] {
                self.per_partition[p as usize] -= 1;
                taken.push((checkin, simulated));
            } else {
                kept.push_back((since, p, checkin, simulated));
            }
        }
        self.queue = kept;
        taken
    }
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
        // Every node hears every check-in (no queue group: agents publish on one subject per
        // machine whatever its partition) and keeps those of its partitions; a check-in a
        // minute per machine makes that cheap.
        let checkins = args.client.subscribe(subjects::ALL_CHECKINS).await?;
        let simulated_checkins = args
            .client
            .subscribe(subjects::ALL_SIMULATED_CHECKINS)
            .await?;
        let tasks = vec![
            pump_batches(
                checkins,
                myself.clone(),
                CHECKIN_BATCH,
                CHECKIN_GATHER,
                FleetMsg::Checkins,
            ),
            pump_batches(
                simulated_checkins,
                myself.clone(),
                CHECKIN_BATCH,
                CHECKIN_GATHER,
                FleetMsg::Checkins,
            ),
            myself.send_interval(args.config.sweep, || FleetMsg::Sweep),
            follow_partitions(&args.partitions, myself.clone(), FleetMsg::Owned),
        ];
        let shared = Arc::new(Shared {
            partitions: args.partitions,
            client: args.client,
            machines: args.machines,
            stats: args.stats,
            config: args.config,
            enrolled: args.enrolled,
        });
        let mut tasks = tasks;
        let writer = if subjects::kv_put(&shared.machines, "probe").is_some() {
            let (acks, pending) = mpsc::unbounded_channel();
            let stats = shared.stats.clone();
            tasks.push(tokio::spawn(confirm_writes(pending, myself.clone(), stats)));
            Some(Writer {
                js: jetstream::new(shared.client.clone()),
                acks,
                unconfirmed: HashMap::new(),
            })
        } else {
            None
        };
        let spec = AgentSpec {
            shared,
            supervisor: myself.clone(),
        };
        Ok(FleetState {
            agents: Children::new(spec, myself.get_cell()),
            activity: HashMap::new(),
            resting: HashMap::new(),
            last_rest_scan: crate::now_ms(),
            deadlines: Deadlines::default(),
            requests: HashMap::new(),
            deferred: Deferred::default(),
            writer,
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<FleetMsg>,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        for t in state.tasks.iter().chain(state.requests.values()) {
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
            FleetMsg::Checkins(msgs) => {
                for msg in msgs {
                    state.on_checkin(msg).await?;
                }
            }
            FleetMsg::Request(msg) => state.on_request(msg).await?,
            FleetMsg::Deadline { machine, at } => state.deadlines.set(machine, at),
            FleetMsg::Load(partitions) => state.load(partitions, &myself),
            FleetMsg::Loaded(records) => state.loaded(records).await?,
            FleetMsg::Resting {
                machine,
                resting,
                epoch,
            } => state.rest(machine, resting, epoch),
            FleetMsg::Owned(owned) => {
                state.follow(owned, &myself).await;
                state.take_deferred().await?;
            }
            FleetMsg::Sweep => {
                state.take_deferred().await?;
                state.sweep().await?;
            }
            FleetMsg::Written(outcomes) => state.written(outcomes),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<FleetMsg>,
        evt: SupervisionEvent,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        // A restarted agent actor reloads its record at once; a lost message is repaired by the
        // agent's next check-in.
        if let Some(actor) = state.agents.on_event(evt).await {
            let _ = actor.cast(AgentMsg::Tick);
            if let Some(key) = state.agents.key_of(&actor) {
                let activity = state.activity.entry(key.to_string()).or_default();
                activity.sent += 1;
                activity.last = crate::now_ms();
            }
        }
        Ok(())
    }
}

impl FleetState {
    fn shared(&self) -> &Shared {
        &self.agents.spec().shared
    }

    /// Subscribes to the machine requests of partitions gained and loads their machines;
    /// unsubscribes from those lost and stops their agent actors.
    async fn follow(&mut self, owned: Owned, myself: &ActorRef<FleetMsg>) {
        let lost: Vec<u32> = self
            .requests
            .keys()
            .copied()
            .filter(|p| !owned.contains(p))
            .collect();
        for p in &lost {
            if let Some(pump) = self.requests.remove(p) {
                pump.abort();
            }
        }
        if !lost.is_empty() {
            // Records of lost machines go, and so does what was sent to their actors, so an
            // answer to a rest request from one of them is not taken as a record.
            self.resting
                .retain(|m, _| !lost.contains(&subjects::partition_of(m)));
            self.activity
                .retain(|m, _| !lost.contains(&subjects::partition_of(m)));
            if let Some(writer) = self.writer.as_mut() {
                (writer.unconfirmed).retain(|m, _| !lost.contains(&subjects::partition_of(m)));
            }
            for machine in self.agents.keys() {
                if lost.contains(&subjects::partition_of(machine))
                    && let Some(actor) = self.agents.running(machine)
                {
                    let _ = actor.cast(AgentMsg::Moved);
                }
            }
        }
        let client = self.shared().client.clone();
        let mut gained = Vec::new();
        for p in owned {
            if self.requests.contains_key(&p) {
                continue;
            }
            let subject = subjects::machine_requests_of(p);
            match client
                .queue_subscribe(subject, subjects::FLEET_QUEUE.into())
                .await
            {
                Ok(requests) => {
                    let pump = pump(requests, myself.clone(), FleetMsg::Request);
                    self.requests.insert(p, pump);
                    gained.push(p);
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "could not subscribe"),
            }
        }
        let _ = client.flush().await;
        if !gained.is_empty() {
            let _ = myself.cast(FleetMsg::Load(gained));
        }
    }

    /// Routes a valid check-in of an owned machine to its actor; counts and logs a bad one.
    ///
    /// A check-in of a partition this node does not own now is kept a while ([`Deferred`]), and
    /// taken if the partition becomes this node's. Kept check-ins of a partition are taken
    /// before a newer one of it, so a machine's check-ins keep their order.
    async fn on_checkin(&mut self, msg: async_nats::Message) -> Result<(), ActorProcessingErr> {
        let checkin = match parse_checkin(msg.subject.as_str(), &msg.payload) {
            Ok(checkin) => checkin,
            Err(why) => {
                self.shared().stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, %why, "dropped a malformed check-in");
                return Ok(());
            }
        };
        let simulated = is_simulated_checkin(msg.subject.as_str());
        if self
            .deferred
            .waiting(subjects::partition_of(&checkin.machine))
        {
            self.take_deferred().await?;
        }
        self.take_checkin(checkin, simulated).await
    }

    async fn take_checkin(
        &mut self,
        checkin: crate::protocol::Checkin,
        simulated: bool,
    ) -> Result<(), ActorProcessingErr> {
        if !self.shared().partitions.owns_key(&checkin.machine) {
            self.deferred.push(checkin, simulated);
            return Ok(());
        }
        if let Err(record) = self.take_quiet_checkin(&checkin, simulated) {
            let record = match record {
                Some(record) => match self.write_resting(record).await {
                    Ok(()) => return Ok(()),
                    Err(record) => Some(record),
                },
                None => None,
            };
            let machine = checkin.machine.clone();
            let msg = AgentMsg::Checkin { checkin, simulated };
            self.send_seeded(&machine, msg, record).await?;
        }
        Ok(())
    }

    /// Takes the kept check-ins of the partitions this node owns now, in order; drops those kept
    /// longer than [`DEFER_FOR`].
    async fn take_deferred(&mut self) -> Result<(), ActorProcessingErr> {
        self.deferred.expire();
        let partitions = &self.shared().partitions;
        let mut owned = [false; PARTITIONS as usize];
        for (p, own) in owned.iter_mut().enumerate() {
            *own = self.deferred.waiting(p as u32) && partitions.owns(p as u32);
        }
        if !self.deferred.any_of(&owned) {
            return Ok(());
        }
        for (checkin, simulated) in self.deferred.take(&owned) {
            self.take_checkin(checkin, simulated).await?;
        }
        Ok(())
    }

    /// Routes a machine request to its machine's actor, which answers it; a bad one is answered
    /// here.
    async fn on_request(&mut self, msg: async_nats::Message) -> Result<(), ActorProcessingErr> {
        let Some(reply) = msg.reply.clone() else {
            return Ok(());
        };
        match parse_request(&msg) {
            Ok((machine, request)) => {
                self.send(&machine, AgentMsg::Request { request, reply })
                    .await?;
            }
            Err(why) => {
                let body = serde_json::to_vec(&MachineReply::Err(why))?;
                let _ = self.shared().client.publish(reply, body.into()).await;
            }
        }
        Ok(())
    }

    /// Reads every machine in KV of `partitions` (just taken) in a task of its own, so machines
    /// that stop checking in go offline after a node start or a failover too.
    fn load(&mut self, partitions: Vec<u32>, myself: &ActorRef<FleetMsg>) {
        let (store, myself) = (self.shared().machines.clone(), myself.clone());
        self.tasks.retain(|t| !t.is_finished());
        self.tasks
            .push(tokio::spawn(read_machines(store, partitions, myself)));
    }

    /// Takes machines read from KV as records, unless the machine already has a record or an
    /// actor (newer); one whose status is out of date (offline since) gets an actor to write it.
    async fn loaded(
        &mut self,
        records: Vec<crate::machines::MachineRecord>,
    ) -> Result<(), ActorProcessingErr> {
        let now = crate::now_ms();
        let offline_after = self.shared().config.offline_after;
        for record in records {
            let machine = record.id.as_str();
            if !self.shared().partitions.owns_key(machine)
                || self.agents.running(machine).is_some()
                || self.resting.contains_key(machine)
            {
                continue;
            }
            let mut settled = record.clone().bounded();
            settled.status = settled.derive_status(now, offline_after);
            if settled != record {
                let machine = record.id.clone();
                self.send(&machine, AgentMsg::Tick).await?;
                continue;
            }
            let at = super::agent::deadline_of(&record, offline_after);
            self.deadlines.set(record.id.clone(), at);
            let resting = Resting::of_stored(&record, now, offline_after);
            self.resting.insert(record.id.into_boxed_str(), resting);
        }
        Ok(())
    }

    /// Takes a check-in into the machine's record if it has one and the check-in changes
    /// nothing worth writing (counted as the actor would). Otherwise an actor must take it:
    /// `Err` with the record the check-in makes when the resting record can tell it.
    fn take_quiet_checkin(
        &mut self,
        checkin: &crate::protocol::Checkin,
        simulated: bool,
    ) -> Result<(), Option<Box<crate::machines::MachineRecord>>> {
        let shared = self.agents.spec().shared.clone();
        let machine = checkin.machine.as_str();
        let Some(resting) = self.resting.get_mut(machine) else {
            return Err(None);
        };
        if simulated && !shared.enrolled.allows_simulated(machine) {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%machine, "dropped a simulated check-in for an enrolled machine");
            return Ok(());
        }
        let now = crate::now_ms();
        if resting.suspended() {
            if resting.refresh_due(now, &shared) {
                return Err(None);
            }
            shared.stats.ignored.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match resting.take_quiet_checkin(checkin, now, &shared) {
            Quiet::Taken(at) => {
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                // The record knows the new deadline; the wheel keeps the earlier one and looks
                // at the record when it comes (see `sweep`): no reordering of the wheel per
                // check-in.
                self.deadlines.keep_earliest(&checkin.machine, at);
                Ok(())
            }
            Quiet::NotQuiet(record) => Err(record),
        }
    }

    /// Sends `msg` to the machine's actor, started (seeded with the machine's record, which it
    /// replaces) if it is not running.
    async fn send(&mut self, machine: &str, msg: AgentMsg) -> Result<(), ActorProcessingErr> {
        self.send_seeded(machine, msg, None).await
    }

    /// [`FleetState::send`], with the whole record when the supervisor knows it (the actor then
    /// does not read KV).
    async fn send_seeded(
        &mut self,
        machine: &str,
        msg: AgentMsg,
        record: Option<Box<crate::machines::MachineRecord>>,
    ) -> Result<(), ActorProcessingErr> {
        let running = self.agents.running(machine);
        let actor = match running {
            Some(actor) => actor,
            None => {
                let actor = self.agents.get_or_start(machine).await?;
                if let Some(resting) = self.resting.remove(machine) {
                    let mut seed = resting.seed();
                    let unconfirmed = (self.writer.as_mut())
                        .and_then(|w| w.unconfirmed.remove(machine))
                        .map(|(_, record)| record);
                    seed.record = record.or(unconfirmed);
                    let _ = actor.cast(AgentMsg::Seed(seed));
                }
                actor
            }
        };
        let activity = self.activity.entry(machine.to_string()).or_default();
        activity.sent += 1;
        activity.last = crate::now_ms();
        let _ = actor.cast(msg);
        Ok(())
    }

    /// Writes the record a check-in made for a resting machine (see the module's doc), and takes
    /// it into the machine's record. `Err` gives the record back when the supervisor cannot
    /// write: an actor then takes the check-in.
    async fn write_resting(
        &mut self,
        record: Box<MachineRecord>,
    ) -> Result<(), Box<MachineRecord>> {
        let shared = self.agents.spec().shared.clone();
        let (Some(writer), Some(resting)) = (
            self.writer.as_mut(),
            self.resting.get_mut(record.id.as_str()),
        ) else {
            return Err(record);
        };
        let Some(subject) = subjects::kv_put(&shared.machines, &record.id) else {
            return Err(record);
        };
        // Its status was derived when the check-in made it (`Resting::take_quiet_checkin`).
        let now = crate::now_ms();
        let offline_after = shared.config.offline_after;
        let Ok(json) = serde_json::to_vec(&record) else {
            return Err(record);
        };
        let sent = match writer.js.publish(subject, json.into()).await {
            Ok(ack) => ack,
            Err(e) => {
                tracing::warn!(machine = %record.id, error = %e, "could not send the machine's record; its actor will");
                return Err(record);
            }
        };
        let hash = super::agent::material_hash(&record);
        let machine: Box<str> = record.id.as_str().into();
        let _ = writer.acks.send((machine.clone(), hash, sent));
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        resting.wrote(&record, now, offline_after);
        let at = super::agent::deadline_of(&record, offline_after);
        self.deadlines.keep_earliest(&record.id, at);
        writer.unconfirmed.insert(machine, (hash, record));
        Ok(())
    }

    /// Takes the outcome of the supervisor's writes: an acknowledged write is no longer needed
    /// to seed an actor; a failed one is written again by the machine's next check-in.
    fn written(&mut self, outcomes: Vec<WriteOutcome>) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        for WriteOutcome {
            machine,
            hash,
            result,
        } in outcomes
        {
            if writer
                .unconfirmed
                .get(&machine)
                .is_some_and(|(h, _)| *h == hash)
            {
                writer.unconfirmed.remove(&machine);
            }
            if let Err(e) = result {
                tracing::warn!(%machine, error = %e, "could not store the machine");
                if let Some(resting) = self.resting.get_mut(&machine) {
                    resting.write_failed(hash);
                }
            }
        }
    }

    /// Takes an actor's machine back as a record if nothing was sent to it since it was asked to
    /// rest, and stops it; otherwise it stays.
    fn rest(&mut self, machine: String, resting: Resting, epoch: u64) {
        if self.activity.get(&machine).is_none_or(|a| a.sent != epoch)
            || !self.shared().partitions.owns_key(&machine)
        {
            return;
        }
        let Some(actor) = self.agents.forget(&machine) else {
            return;
        };
        self.activity.remove(&machine);
        actor.stop(Some(REST_STOP.into()));
        self.resting.insert(machine.into_boxed_str(), resting);
    }

    /// Asks the actors that got nothing for `rest_after` to rest; forgets the activity of
    /// actors that stopped.
    fn ask_idle_actors_to_rest(&mut self, now: u64) {
        let idle_after =
            u64::try_from(self.shared().config.rest_after.as_millis()).unwrap_or(u64::MAX);
        let agents = &self.agents;
        self.activity.retain(|machine, activity| {
            let Some(actor) = agents.running(machine) else {
                return false;
            };
            if now.saturating_sub(activity.last) >= idle_after {
                activity.last = now;
                let _ = actor.cast(AgentMsg::Rest {
                    epoch: activity.sent,
                });
            }
            true
        });
    }

    /// Ticks every machine whose deadline has passed (an actor, started if it rests, writes its
    /// new status), unless its record says it checked in since: then its deadline moves to the
    /// record's. Now and then, asks idle actors to rest.
    async fn sweep(&mut self) -> Result<(), ActorProcessingErr> {
        let now = crate::now_ms();
        while let Some(machine) = self.deadlines.pop_due(now) {
            if !self.shared().partitions.owns_key(&machine) {
                continue;
            }
            let later = (self.resting.get(machine.as_str()))
                .and_then(Resting::due)
                .filter(|due| *due > now);
            if later.is_some() {
                self.deadlines.set(machine, later);
                continue;
            }
            self.send(&machine, AgentMsg::Tick).await?;
        }
        let scan = REST_SCAN.min(self.shared().config.rest_after);
        if now.saturating_sub(self.last_rest_scan) >= scan.as_millis() as u64 {
            self.last_rest_scan = now;
            self.ask_idle_actors_to_rest(now);
        }
        Ok(())
    }
}

/// What the supervisor sent one running actor.
#[derive(Default)]
struct Activity {
    /// How many messages.
    sent: u64,
    /// When (ms) the last one went, or the actor was last asked to rest.
    last: u64,
}

/// Waits for the acknowledgements of the supervisor's writes, any number at once, and hands
/// their outcomes to the supervisor, those that came together in one message; counts the
/// writes stored. Ends when the supervisor is gone.
async fn confirm_writes(
    mut sent: mpsc::UnboundedReceiver<PendingWrite>,
    supervisor: ActorRef<FleetMsg>,
    stats: Arc<super::FleetStats>,
) {
    let mut waiting = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            next = sent.recv() => match next {
                Some((machine, hash, ack)) => waiting.push(async move {
                    let result = ack.await.map(|_| ()).map_err(|e| e.to_string());
                    WriteOutcome { machine, hash, result }
                }),
                None => return,
            },
            Some(first) = waiting.next(), if !waiting.is_empty() => {
                let mut outcomes = vec![first];
                while let Some(Some(more)) = waiting.next().now_or_never() {
                    outcomes.push(more);
                }
                let stored = outcomes.iter().filter(|o| o.result.is_ok()).count();
                stats.writes.fetch_add(stored as u64, Ordering::Relaxed);
                if supervisor.cast(FleetMsg::Written(outcomes)).is_err() {
                    return;
                }
            }
        }
    }
}

/// How many machines are read from KV at a time, and handed to the supervisor in one message.
const LOAD_BATCH: usize = 256;

/// Reads the machines of `partitions` from KV and hands them to the supervisor in batches;
/// starts over after a second if the bucket cannot be listed.
async fn read_machines(
    store: async_nats::jetstream::kv::Store,
    partitions: Vec<u32>,
    supervisor: ActorRef<FleetMsg>,
) {
    use async_nats::jetstream::kv::Operation;
    let keys = loop {
        match store.keys().await {
            Ok(keys) => break keys.filter_map(|k| async move { k.ok() }),
            Err(e) => {
                tracing::warn!(error = %e, "could not list machines; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let wanted = keys.filter(|m| {
        let take = valid_machine_id(m) && partitions.contains(&subjects::partition_of(m));
        async move { take }
    });
    let mut records = std::pin::pin!(
        wanted
            .map(|m| {
                let store = store.clone();
                async move { store.entry(&m).await }
            })
            .buffer_unordered(32)
            .filter_map(|entry| async move {
                let entry = match entry {
                    Ok(Some(entry)) if entry.operation == Operation::Put => entry,
                    Ok(_) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read a machine");
                        return None;
                    }
                };
                serde_json::from_slice::<crate::machines::MachineRecord>(&entry.value)
                    .ok()
                    .filter(|r| r.id == entry.key)
            })
            .chunks(LOAD_BATCH)
    );
    while let Some(batch) = records.next().await {
        if supervisor.cast(FleetMsg::Loaded(batch)).is_err() {
            return;
        }
    }
}

/// The machine a request is about (from its subject) and the request, or why it is refused.
fn parse_request(msg: &async_nats::Message) -> Result<(String, MachineRequest), String> {
    let machine = subjects::machine_of_request(msg.subject.as_str())
        .filter(|m| valid_machine_id(m))
        .ok_or_else(|| "not a machine ID".to_string())?;
    let request = serde_json::from_slice::<MachineRequest>(&msg.payload)
        .map_err(|e| format!("invalid machine request: {e}"))?;
    Ok((machine, request))
}

/// The timer wheel: at most one "offline at" deadline (ms) per machine, earliest first.
#[derive(Default)]
struct Deadlines {
    by_time: BTreeSet<(u64, String)>,
    of: HashMap<String, u64>,
}

impl Deadlines {
    /// Replaces the machine's deadline (none = no deadline).
    fn set(&mut self, machine: String, at: Option<u64>) {
        if let Some(old) = self.of.remove(&machine) {
            self.by_time.remove(&(old, machine.clone()));
        }
        if let Some(at) = at {
            self.by_time.insert((at, machine.clone()));
            self.of.insert(machine, at);
        }
    }

    /// Sets the machine's deadline to `at` unless it has an earlier one; `at` none keeps any.
    /// (Cheap when the deadline is kept: no allocation, no reordering.)
    fn keep_earliest(&mut self, machine: &str, at: Option<u64>) {
        let Some(at) = at else { return };
        if self.of.get(machine).is_some_and(|old| *old <= at) {
            return;
        }
        self.set(machine.to_string(), Some(at));
    }

    /// Removes and returns a machine whose deadline is at or before `now`.
    fn pop_due(&mut self, now: u64) -> Option<String> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, machine) = self.by_time.pop_first()?;
        self.of.remove(&machine);
        Some(machine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_in_order_and_can_be_moved() {
        let mut d = Deadlines::default();
        d.set("b".into(), Some(20));
        d.set("a".into(), Some(10));
        d.set("c".into(), Some(30));
        d.set("c".into(), Some(5)); // moved earlier
        d.set("b".into(), None); // cleared
        assert_eq!(d.pop_due(4), None);
        assert_eq!(d.pop_due(15).as_deref(), Some("c"));
        assert_eq!(d.pop_due(15).as_deref(), Some("a"));
        assert_eq!(d.pop_due(100), None);
    }

    #[test]
    fn keep_earliest_moves_a_deadline_only_earlier() {
        let mut d = Deadlines::default();
        d.keep_earliest("a", Some(10));
        d.keep_earliest("a", Some(20)); // later: kept at 10
        d.keep_earliest("b", Some(30));
        d.keep_earliest("b", Some(5)); // earlier: moved
        d.keep_earliest("b", None); // kept
        assert_eq!(d.pop_due(9).as_deref(), Some("b"));
        assert_eq!(d.pop_due(9), None);
        assert_eq!(d.pop_due(10).as_deref(), Some("a"));
        assert_eq!(d.pop_due(100), None);
    }
}
