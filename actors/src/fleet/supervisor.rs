//! The fleet supervisor: routes check-ins and machine requests to agent actors and keeps one
//! timer wheel of "offline at" deadlines for the whole fleet.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::agent::{AgentActor, AgentArgs, AgentMsg, MOVED_STOP, UNKNOWN_MACHINE};
use super::{FleetArgs, Shared, is_simulated_checkin, parse_checkin};
use crate::machines::{MachineReply, MachineRequest};
use crate::partitions::Owned;
use crate::protocol::valid_machine_id;
use crate::subjects;
use crate::supervision::{ChildSpec, Children, follow_partitions, pump};

pub struct FleetSupervisor;

pub enum FleetMsg {
    /// A real or a simulated agent's check-in (the subject says which).
    Checkin(async_nats::Message),
    Request(async_nats::Message),
    /// An agent actor's next "offline at" deadline (ms), or none.
    Deadline {
        machine: String,
        at: Option<u64>,
    },
    /// Start actors for every machine in KV of these partitions (just taken).
    Load(Vec<u32>),
    /// The partitions this node owns now.
    Owned(Owned),
    Sweep,
}

/// How an agent actor is built.
struct AgentSpec {
    shared: Arc<Shared>,
    supervisor: ActorRef<FleetMsg>,
}

impl ChildSpec for AgentSpec {
    type Child = AgentActor;
    const KIND: &'static str = "agent";
    const CLEAN_STOPS: &'static [&'static str] = &[UNKNOWN_MACHINE, MOVED_STOP];

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
    deadlines: Deadlines,
    /// Per owned partition: the pump of its machine-request subscription.
    requests: HashMap<u32, tokio::task::JoinHandle<()>>,
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
        // Every node hears every check-in (no queue group: agents publish on one subject per
        // machine whatever its partition) and keeps those of its partitions; a check-in a
        // minute per machine makes that cheap.
        let checkins = args.client.subscribe(subjects::ALL_CHECKINS).await?;
        let simulated_checkins = args
            .client
            .subscribe(subjects::ALL_SIMULATED_CHECKINS)
            .await?;
        let tasks = vec![
            pump(checkins, myself.clone(), FleetMsg::Checkin),
            pump(simulated_checkins, myself.clone(), FleetMsg::Checkin),
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
        let spec = AgentSpec {
            shared,
            supervisor: myself.clone(),
        };
        Ok(FleetState {
            agents: Children::new(spec, myself.get_cell()),
            deadlines: Deadlines::default(),
            requests: HashMap::new(),
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
            FleetMsg::Checkin(msg) => state.on_checkin(msg).await?,
            FleetMsg::Request(msg) => state.on_request(msg).await?,
            FleetMsg::Deadline { machine, at } => state.deadlines.set(machine, at),
            FleetMsg::Load(partitions) => state.load(partitions, &myself).await?,
            FleetMsg::Owned(owned) => state.follow(owned, &myself).await,
            FleetMsg::Sweep => state.sweep().await?,
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
    async fn on_checkin(&mut self, msg: async_nats::Message) -> Result<(), ActorProcessingErr> {
        let parsed = parse_checkin(msg.subject.as_str(), &msg.payload);
        if let Ok(checkin) = &parsed
            && !self.shared().partitions.owns_key(&checkin.machine)
        {
            return Ok(());
        }
        match parsed {
            Ok(checkin) => {
                let actor = self.agents.get_or_start(&checkin.machine).await?;
                let simulated = is_simulated_checkin(msg.subject.as_str());
                let _ = actor.cast(AgentMsg::Checkin { checkin, simulated });
            }
            Err(why) => {
                self.shared().stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, %why, "dropped a malformed check-in");
            }
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
                let actor = self.agents.get_or_start(&machine).await?;
                let _ = actor.cast(AgentMsg::Request { request, reply });
            }
            Err(why) => {
                let body = serde_json::to_vec(&MachineReply::Err(why))?;
                let _ = self.shared().client.publish(reply, body.into()).await;
            }
        }
        Ok(())
    }

    /// Starts an actor for every machine in KV of `partitions` (just taken), so machines that
    /// stop checking in go offline after a node start or a failover too.
    async fn load(
        &mut self,
        partitions: Vec<u32>,
        myself: &ActorRef<FleetMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let keys = match self.shared().machines.keys().await {
            Ok(keys) => {
                keys.filter_map(|k| async move { k.ok() })
                    .collect::<Vec<_>>()
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list machines; retrying");
                myself.send_after(Duration::from_secs(1), move || FleetMsg::Load(partitions));
                return Ok(());
            }
        };
        let owner = &self.shared().partitions;
        let taken: Vec<String> = keys
            .into_iter()
            .filter(|m| valid_machine_id(m))
            .filter(|m| partitions.contains(&subjects::partition_of(m)) && owner.owns_key(m))
            .collect();
        for machine in taken {
            let actor = self.agents.get_or_start(&machine).await?;
            let _ = actor.cast(AgentMsg::Tick);
        }
        Ok(())
    }

    /// Ticks every agent actor whose deadline has passed.
    async fn sweep(&mut self) -> Result<(), ActorProcessingErr> {
        let now = crate::now_ms();
        while let Some(machine) = self.deadlines.pop_due(now) {
            if !self.shared().partitions.owns_key(&machine) {
                continue;
            }
            let actor = self.agents.get_or_start(&machine).await?;
            let _ = actor.cast(AgentMsg::Tick);
        }
        Ok(())
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
}
