//! The actor of a machine with something going on: turns check-ins and timer ticks into the
//! machine's status, answers machine requests, and is the only writer of its machine's record in
//! KV while it runs. Once idle it hands the machine back to the supervisor as a [`Resting`] record.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::kv;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Shared;
use super::supervisor::FleetMsg;
use crate::machines::{
    MachineRecord, MachineReply, MachineRequest, MachineStatus, MachineUser, Scope,
};
use crate::protocol::{Checkin, SessionCommand, SessionRequest};

/// The stop reason of an actor for a machine nobody provisioned (not a failure).
pub(super) const UNKNOWN_MACHINE: &str = "unknown machine";
/// The stop reason of an actor whose machine's partition moved to another node.
pub(super) const MOVED_STOP: &str = "moved";
/// The stop reason of an idle actor whose machine went back to a record (not a failure).
pub(super) const REST_STOP: &str = "resting";

/// How many waiting sessions an agent actor remembers (the newest; see `awaited_by`).
const MAX_AWAITED_BY: usize = 4;

pub struct AgentActor;

pub struct AgentArgs {
    pub(super) machine: String,
    pub(super) shared: Arc<Shared>,
    pub(super) supervisor: ActorRef<FleetMsg>,
}

pub enum AgentMsg {
    /// A check-in; `simulated` if it came on the simulator's subject family.
    Checkin { checkin: Checkin, simulated: bool },
    /// Re-evaluate the status against the clock (offline detection).
    Tick,
    Request {
        request: MachineRequest,
        reply: async_nats::Subject,
    },
    /// The node lost the machine's partition: stop (after the messages queued before this).
    Moved,
    /// What the supervisor's record knew that KV may not (sent first, to an actor started for a
    /// resting machine): KV holds the check-in time of the last write only.
    Seed(Seed),
    /// The supervisor has sent nothing else for a while: answer [`FleetMsg::Resting`] unless
    /// something is pending. `epoch` is echoed so the supervisor can tell whether it sent more since.
    Rest { epoch: u64 },
}

/// The facts of a resting machine that are newer in the supervisor's record than in KV.
#[derive(Clone, Debug)]
pub struct Seed {
    last_checkin: Option<u64>,
    idle_secs: u64,
    /// When (ms) the record was last written, for the refresh.
    stored_at: u64,
    /// The whole record, when the supervisor knows it (a check-in sets every field but the
    /// suspension, which the supervisor knows): no need to read KV, it is written as it is.
    pub(super) record: Option<Box<MachineRecord>>,
}

/// A machine with nothing going on, as its supervisor keeps it instead of an actor: enough to
/// take a check-in that changes nothing without one, and to seed an actor when something happens.
#[derive(Clone, Debug)]
pub struct Resting {
    /// [`material_hash`] of the record in KV.
    stored: u64,
    /// When (ms) the record was last written.
    stored_at: u64,
    /// Milliseconds since the epoch; 0 before the first check-in.
    last_checkin: u64,
    idle_secs: u64,
    /// When (ms) the machine turns offline unless it checks in ([`deadline_of`]); 0 for never.
    /// The supervisor's timer wheel may hold an earlier deadline: it looks here when that comes.
    due: u64,
    suspended: bool,
}

impl Resting {
    /// The record of a machine as read from KV (written at `stored_at`).
    pub(super) fn of_stored(record: &MachineRecord, stored_at: u64, offline_after: u32) -> Resting {
        Resting {
            stored: material_hash(record),
            stored_at,
            last_checkin: record.last_checkin.unwrap_or(0),
            idle_secs: record.idle_secs,
            due: deadline_of(record, offline_after).unwrap_or(0),
            suspended: record.suspended,
        }
    }

    /// When (ms) the machine turns offline unless it checks in, if it can.
    pub(super) fn due(&self) -> Option<u64> {
        Some(self.due).filter(|d| *d > 0)
    }

    pub(super) fn seed(&self) -> Seed {
        Seed {
            last_checkin: Some(self.last_checkin).filter(|t| *t > 0),
            idle_secs: self.idle_secs,
            stored_at: self.stored_at,
            record: None,
        }
    }

    pub(super) fn suspended(&self) -> bool {
        self.suspended
    }

    /// Takes a check-in of a machine that is not suspended if it changes nothing worth writing:
    /// same details and status as stored, no refresh due.
    pub(super) fn take_quiet_checkin(&mut self, c: &Checkin, now: u64, shared: &Shared) -> Quiet {
        if self.suspended {
            return Quiet::NotQuiet(None);
        }
        let mut record = MachineRecord::provisioned(&c.machine);
        take_checkin(&mut record, c.clone(), now);
        record.status = record.derive_status(now, shared.config.offline_after);
        if material_hash(&record) != self.stored || self.refresh_due(now, shared) {
            return Quiet::NotQuiet(Some(Box::new(record)));
        }
        self.last_checkin = now;
        self.idle_secs = record.idle_secs;
        let due = deadline_of(&record, shared.config.offline_after);
        self.due = due.unwrap_or(0);
        Quiet::Taken(due)
    }

    /// Takes a record its supervisor has just sent to KV for this machine (made by a check-in,
    /// see [`Quiet::NotQuiet`]).
    pub(super) fn wrote(&mut self, record: &MachineRecord, now: u64, offline_after: u32) {
        self.stored = material_hash(record);
        self.stored_at = now;
        self.last_checkin = record.last_checkin.unwrap_or(0);
        self.idle_secs = record.idle_secs;
        self.due = deadline_of(record, offline_after).unwrap_or(0);
    }

    /// A write of the record with material hash `hash` failed: unless a newer write replaced
    /// it, the next check-in writes again.
    pub(super) fn write_failed(&mut self, hash: u64) {
        if self.stored == hash {
            self.stored = 0;
        }
    }

    /// Whether the stored record is due its periodic rewrite.
    pub(super) fn refresh_due(&self, now: u64, shared: &Shared) -> bool {
        let refresh = u64::try_from(shared.config.refresh.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(self.stored_at) >= refresh
    }
}

/// What became of a check-in offered to a [`Resting`] record.
pub(super) enum Quiet {
    /// Taken; the machine's next "offline at" deadline.
    Taken(Option<u64>),
    /// An actor must take it; the record it makes, when the record alone can tell.
    NotQuiet(Option<Box<MachineRecord>>),
}

/// A hash of what makes a record worth writing: everything but the check-in time and idle times
/// (a user's idle time counts only as active or idle), as [`AgentState::store_if_changed`] compares.
pub(super) fn material_hash(r: &MachineRecord) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&r.id, r.status, &r.user, &r.os, &r.agent_version, &r.ip).hash(&mut h);
    (r.interval_secs, r.audit_done, r.remote_control, r.suspended).hash(&mut h);
    r.users.len().hash(&mut h);
    for u in &r.users {
        (&u.name, &u.session, u.active()).hash(&mut h);
    }
    h.finish()
}

/// When (ms) the supervisor should look at a machine again: just after it would turn offline,
/// unless it cannot (offline, suspended, never checked in).
pub(super) fn deadline_of(record: &MachineRecord, offline_after: u32) -> Option<u64> {
    match record.status {
        MachineStatus::Suspended | MachineStatus::Offline | MachineStatus::NeverCheckedIn => None,
        _ => record
            .offline_at(offline_after)
            .map(|t| t.saturating_add(1)),
    }
}

/// Takes the check-in's details into the record (all but its ID, status and suspension).
fn take_checkin(record: &mut MachineRecord, c: Checkin, now: u64) {
    record.last_checkin = Some(now);
    match c.users {
        // The list is the truth: the machine's user (and its status) is the most active.
        Some(users) => {
            let most_active = users.iter().min_by_key(|u| u.idle_secs);
            record.user = most_active.map(|u| u.name.clone());
            record.idle_secs = most_active.map_or(0, |u| u.idle_secs);
            record.users = users
                .into_iter()
                .map(|u| MachineUser {
                    name: u.name,
                    session: u.session,
                    idle_secs: u.idle_secs,
                })
                .collect();
        }
        None => {
            record.user = c.user.filter(|u| !u.trim().is_empty());
            record.idle_secs = c.idle_secs;
            record.users.clear();
        }
    }
    record.os = c.os;
    record.agent_version = c.agent_version;
    record.ip = c.ip;
    record.interval_secs = c.interval_secs;
    record.audit_done = c.audit_done;
    record.remote_control = c.remote_control;
}

pub struct AgentState {
    machine: String,
    shared: Arc<Shared>,
    supervisor: ActorRef<FleetMsg>,
    loaded: bool,
    record: Option<MachineRecord>,
    /// What KV holds, to know whether a write is needed.
    stored: Option<MachineRecord>,
    /// When (ms) `stored` was written (or read).
    stored_at: u64,
    /// From the supervisor's record, applied when the record is loaded.
    seed: Option<Seed>,
    /// Sessions whose ask could not reach the agent ([`MachineRequest::Await`]): told at the
    /// next check-in. Only one chat with a machine is in progress at a time, but a chat ended
    /// while waiting may still be listed (it ignores the notice), so a few are kept, the
    /// newest last. Only in memory: a waiting session asks again on a slow timer, which covers
    /// this actor's restart or a move of the partition.
    awaited_by: Vec<String>,
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
            stored_at: crate::now_ms(),
            seed: None,
            awaited_by: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Moved => {
                myself.stop(Some(MOVED_STOP.into()));
                return Ok(());
            }
            AgentMsg::Seed(seed) => {
                state.seed = Some(seed);
                return Ok(());
            }
            AgentMsg::Rest { epoch } => {
                if let Some(resting) = state.resting() {
                    let machine = state.machine.clone();
                    let _ = (state.supervisor).cast(FleetMsg::Resting {
                        machine,
                        resting,
                        epoch,
                    });
                }
                return Ok(());
            }
            _ => {}
        }
        // Only the owner of the machine's partition writes its record; a request that reached
        // a former owner is answered so the caller retries at once.
        if !state.shared.partitions.owns_key(&state.machine) {
            if let AgentMsg::Request { reply, .. } = msg {
                let answer: MachineReply = Err(crate::partitions::MACHINE_MOVED.into());
                let body = serde_json::to_vec(&answer)?;
                let _ = state.shared.client.publish(reply, body.into()).await;
            }
            return Ok(());
        }
        state.ensure_loaded().await?;
        let now = crate::now_ms();
        match msg {
            AgentMsg::Checkin { simulated, .. }
                if simulated && !state.shared.enrolled.allows_simulated(&state.machine) =>
            {
                // A real agent enrolled this machine: the simulator may not speak for it.
                state.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(machine = %state.machine, "dropped a simulated check-in for an enrolled machine");
            }
            AgentMsg::Checkin { checkin, .. } => {
                let accepted = state.apply_checkin(checkin, now);
                state.settle(now).await;
                if accepted {
                    state.wake_the_waiting_session().await;
                }
            }
            AgentMsg::Tick if state.record.is_none() => myself.stop(Some(UNKNOWN_MACHINE.into())),
            AgentMsg::Tick => state.settle(now).await,
            AgentMsg::Request { request, reply } => {
                if !state.answer(request, reply, now).await? {
                    myself.stop(Some(UNKNOWN_MACHINE.into()));
                }
            }
            AgentMsg::Moved | AgentMsg::Seed(_) | AgentMsg::Rest { .. } => {}
        }
        Ok(())
    }
}

impl AgentState {
    /// Reads the machine's record from KV, once.
    async fn ensure_loaded(&mut self) -> Result<(), kv::EntryError> {
        if self.loaded {
            return Ok(());
        }
        if let Some(record) = self.seed.as_mut().and_then(|s| s.record.take()) {
            // Nothing stored to compare with: it is written.
            self.record = Some(*record);
            self.loaded = true;
            return Ok(());
        }
        let entry = self.shared.machines.entry(&self.machine).await?;
        self.stored = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<MachineRecord>(&e.value).ok());
        // A record written before check-ins were bounded is bounded now, and rewritten so.
        self.record = self.stored.clone().map(MachineRecord::bounded);
        self.stored_at = crate::now_ms();
        if let (Some(seed), Some(record)) = (self.seed.take(), self.record.as_mut())
            && seed.last_checkin > record.last_checkin
        {
            record.last_checkin = seed.last_checkin;
            record.idle_secs = seed.idle_secs;
            self.stored_at = seed.stored_at;
        }
        self.loaded = true;
        Ok(())
    }

    /// Takes the check-in's details into the record (a first check-in provisions the machine);
    /// a suspended machine's check-in changes nothing. Returns whether it was taken.
    fn apply_checkin(&mut self, c: Checkin, now: u64) -> bool {
        let stats = &self.shared.stats;
        let record = self
            .record
            .get_or_insert_with(|| MachineRecord::provisioned(&c.machine));
        if record.suspended {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        take_checkin(record, c, now);
        true
    }

    /// Tells the sessions waiting for this machine (if any) that it checked in: a
    /// [`SessionCommand::MachineBack`] on each session's command subject, which reaches the
    /// session's owner wherever it runs. Fire and forget: the session's own slow re-check covers
    /// a lost notice.
    async fn wake_the_waiting_session(&mut self) {
        if self.awaited_by.is_empty() {
            return;
        }
        let request = SessionRequest {
            cmd: SessionCommand::MachineBack {
                machine: self.machine.clone(),
            },
            scope: Scope::All,
            epoch: None,
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return;
        };
        for session in std::mem::take(&mut self.awaited_by) {
            let subject = crate::subjects::session_command(&session);
            if let Err(e) = self
                .shared
                .client
                .publish(subject, body.clone().into())
                .await
            {
                tracing::warn!(machine = %self.machine, %session, error = %e, "could not wake the waiting session");
            }
        }
    }

    /// Answers a machine request with the settled record. Returns whether the machine is known
    /// (an actor for an unknown machine stops).
    async fn answer(
        &mut self,
        request: MachineRequest,
        reply: async_nats::Subject,
        now: u64,
    ) -> Result<bool, serde_json::Error> {
        let revoke = matches!(request, MachineRequest::Suspend { suspended: true });
        let answer: Result<(), String> = match request {
            MachineRequest::Provision => {
                let machine = &self.machine;
                self.record
                    .get_or_insert_with(|| MachineRecord::provisioned(machine));
                Ok(())
            }
            MachineRequest::View => self.record.as_ref().map(|_| ()).ok_or_else(no_such_machine),
            MachineRequest::Await { session, since } => match &self.record {
                // Checked in since the session asked: the answer's `last_checkin` tells it.
                Some(r) if r.last_checkin.is_some_and(|t| t >= since) => Ok(()),
                Some(_) => {
                    self.awaited_by.retain(|s| *s != session);
                    if self.awaited_by.len() >= MAX_AWAITED_BY {
                        self.awaited_by.remove(0);
                    }
                    self.awaited_by.push(session);
                    Ok(())
                }
                None => Err(no_such_machine()),
            },
            MachineRequest::Suspend { suspended } => match self.record.as_mut() {
                Some(r) => {
                    r.suspended = suspended;
                    Ok(())
                }
                None => Err(no_such_machine()),
            },
        };
        // The answer shows the record as settled: status derived, stored.
        self.settle(now).await;
        let known = answer.is_ok();
        let answer: MachineReply = answer.map(|()| {
            self.record
                .clone()
                .unwrap_or_else(|| MachineRecord::provisioned(&self.machine))
        });
        let body = serde_json::to_vec(&answer)?;
        let _ = self.shared.client.publish(reply, body.into()).await;
        if revoke && known {
            // Stored as suspended above, so the agent's reconnect is refused.
            crate::revoke::announce(&self.shared.client, &self.machine).await;
        }
        Ok(known)
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
        let at = deadline_of(record, offline_after);
        self.store_if_changed().await;
        let machine = self.machine.clone();
        let _ = self.supervisor.cast(FleetMsg::Deadline { machine, at });
    }

    /// Writes the record to KV if it differs from the stored one in more than the check-in
    /// time and idle time, or if the stored one is due a refresh.
    async fn store_if_changed(&mut self) {
        let Some(record) = &self.record else { return };
        let changed = self.stored.as_ref().is_none_or(|stored| {
            let mut a = stored.clone();
            a.last_checkin = record.last_checkin;
            a.idle_secs = record.idle_secs;
            // Likewise a user's idle time, unless it turns them active or idle.
            let same_users = a.users.len() == record.users.len()
                && a.users.iter().zip(&record.users).all(|(x, y)| {
                    (&x.name, &x.session, x.active()) == (&y.name, &y.session, y.active())
                });
            if same_users {
                a.users = record.users.clone();
            }
            // A change of idle time alone is not worth a write unless it changes the status.
            &a != record
        });
        let refresh = u64::try_from(self.shared.config.refresh.as_millis()).unwrap_or(u64::MAX);
        let due = crate::now_ms().saturating_sub(self.stored_at) >= refresh;
        if !(changed || due) {
            return;
        }
        let json = match serde_json::to_vec(record) {
            Ok(json) => json,
            Err(e) => return tracing::warn!(error = %e, "could not encode the machine"),
        };
        match self.shared.machines.put(&self.machine, json.into()).await {
            Ok(_) => {
                self.shared.stats.writes.fetch_add(1, Ordering::Relaxed);
                self.stored = Some(record.clone());
                self.stored_at = crate::now_ms();
            }
            Err(e) => {
                tracing::warn!(machine = %self.machine, error = %e, "could not store the machine")
            }
        }
    }
}

impl AgentState {
    /// The machine as a record, if nothing is pending: loaded, known, stored as it is (no write
    /// failed), and no session waiting for it.
    fn resting(&self) -> Option<Resting> {
        let (record, stored) = (self.record.as_ref()?, self.stored.as_ref()?);
        if !self.loaded || !self.awaited_by.is_empty() {
            return None;
        }
        if material_hash(record) != material_hash(stored) {
            return None;
        }
        let offline_after = self.shared.config.offline_after;
        Some(Resting {
            last_checkin: record.last_checkin.unwrap_or(0),
            idle_secs: record.idle_secs,
            due: deadline_of(record, offline_after).unwrap_or(0),
            ..Resting::of_stored(stored, self.stored_at, offline_after)
        })
    }
}

fn no_such_machine() -> String {
    "no such machine".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MachineRecord {
        let mut r = MachineRecord::provisioned("pc1.sales.acme");
        r.status = MachineStatus::User;
        r.last_checkin = Some(1_000);
        r.user = Some("carol".into());
        r.users = vec![MachineUser {
            name: "carol".into(),
            session: "1".into(),
            idle_secs: 5,
        }];
        r
    }

    #[test]
    fn the_material_hash_ignores_check_in_and_idle_times_only() {
        let base = material_hash(&record());
        let mut later = record();
        later.last_checkin = Some(31_000);
        later.idle_secs = 40;
        later.users[0].idle_secs = 45;
        assert_eq!(material_hash(&later), base, "a quiet check-in");

        let mut idle = record();
        idle.users[0].idle_secs = crate::machines::IDLE_AFTER_SECS;
        assert_ne!(material_hash(&idle), base, "a user turning idle");
        let mut other = record();
        other.user = Some("dave".into());
        assert_ne!(material_hash(&other), base);
        let mut status = record();
        status.status = MachineStatus::Offline;
        assert_ne!(material_hash(&status), base);
        let mut suspended = record();
        suspended.suspended = true;
        assert_ne!(material_hash(&suspended), base);
    }
}
