//! One actor per agent: turns check-ins and timer ticks into the machine's status, answers
//! machine requests, and is the only writer of its machine's record in KV.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

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
            stored_at: Instant::now(),
            awaited_by: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Moved = msg {
            myself.stop(Some(MOVED_STOP.into()));
            return Ok(());
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
            AgentMsg::Moved => {}
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
        let entry = self.shared.machines.entry(&self.machine).await?;
        self.stored = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<MachineRecord>(&e.value).ok());
        // A record written before check-ins were bounded is bounded now, and rewritten so.
        self.record = self.stored.clone().map(MachineRecord::bounded);
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
        let at = match record.status {
            MachineStatus::Suspended | MachineStatus::Offline | MachineStatus::NeverCheckedIn => {
                None
            }
            _ => record
                .offline_at(offline_after)
                .map(|t| t.saturating_add(1)),
        };
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
        let due = self.stored_at.elapsed() >= self.shared.config.refresh;
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
                self.stored_at = Instant::now();
            }
            Err(e) => {
                tracing::warn!(machine = %self.machine, error = %e, "could not store the machine")
            }
        }
    }
}

fn no_such_machine() -> String {
    "no such machine".to_string()
}
