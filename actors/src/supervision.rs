//! The bookkeeping both supervisors share: children started on demand under a key (a session
//! ID, a machine ID), the map key → actor, forgetting children that stop, and restarting those
//! that fail, unless one keeps failing.
//!
//! Each supervisor says how to build a child in a [`ChildSpec`]; [`Children`] does the rest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorCell, ActorId, ActorRef, Message, SpawnErr, SupervisionEvent};

use crate::partitions::{Owned, Partitions};

/// Feeds a NATS subscription to an actor, each message wrapped by `wrap`; ends when the actor
/// is gone. The caller keeps the handle and aborts it when the actor stops.
pub(crate) fn pump<M: Message>(
    mut subscription: async_nats::Subscriber,
    actor: ActorRef<M>,
    wrap: fn(async_nats::Message) -> M,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = subscription.next().await {
            if actor.cast(wrap(msg)).is_err() {
                break;
            }
        }
    })
}

/// Like [`pump`], but hands the actor the subscription's messages in batches of at most `max`:
/// after the first message of a batch it waits `gather` for more (unless the batch before was
/// full: under load there is no wait), so a steady trickle — 100k agents checking in every 30 s
/// is 3.3k messages a second, one or two per socket read — wakes this task and the actor once
/// per `gather`, not once per message. The wake-ups, not the work, were most of a node's
/// check-in CPU (docs/benchmarks.md, "Check-ins").
pub(crate) fn pump_batches<M: Message>(
    mut subscription: async_nats::Subscriber,
    actor: ActorRef<M>,
    max: usize,
    gather: Duration,
    wrap: fn(Vec<async_nats::Message>) -> M,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut full = false;
        while let Some(first) = subscription.next().await {
            if !full {
                tokio::time::sleep(gather).await;
            }
            let mut batch = vec![first];
            // What came meanwhile; an ended subscription ends the outer loop next.
            while batch.len() < max {
                match subscription.next().now_or_never() {
                    Some(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
            full = batch.len() == max;
            if actor.cast(wrap(batch)).is_err() {
                break;
            }
        }
    })
}

/// Casts the owned partitions to `actor` now and after every change, until the actor is gone; an
/// ended lease task (the node is shutting down) owns nothing.
pub(crate) fn follow_partitions<M: Message>(
    partitions: &Partitions,
    actor: ActorRef<M>,
    wrap: fn(Owned) -> M,
) -> tokio::task::JoinHandle<()> {
    let mut owned = partitions.subscribe();
    tokio::spawn(async move {
        loop {
            let now = owned.borrow_and_update().clone();
            if actor.cast(wrap(now)).is_err() {
                return;
            }
            if owned.changed().await.is_err() {
                let _ = actor.cast(wrap(Owned::new()));
                return;
            }
        }
    })
}

/// How a supervisor builds the child for a key.
pub(crate) trait ChildSpec {
    type Child: Actor;

    /// What the children are, for logs ("session", "agent").
    const KIND: &'static str;

    /// Stop reasons that are not failures: such a child is forgotten and not restarted; its next
    /// message starts it again.
    const CLEAN_STOPS: &'static [&'static str];

    /// The child's name in the ractor registry, if it has one.
    fn name(&self, _key: &str) -> Option<String> {
        None
    }

    /// The actor and its arguments for `key`.
    fn build(&self, key: &str) -> (Self::Child, <Self::Child as Actor>::Arguments);
}

/// A reference to a child of `S`.
pub(crate) type ChildRef<S> = ActorRef<<<S as ChildSpec>::Child as Actor>::Msg>;

/// More failures than this within [`RESTART_WINDOW`] and a child is no longer restarted at once.
const MAX_RESTARTS: u32 = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// The running children of one supervisor.
pub(crate) struct Children<S: ChildSpec> {
    spec: S,
    supervisor: ActorCell,
    by_key: HashMap<String, ChildRef<S>>,
    by_actor: HashMap<ActorId, String>,
    /// Recent restarts per key, to stop a crash loop from spinning.
    restarts: HashMap<String, (Instant, u32)>,
}

impl<S: ChildSpec> Children<S> {
    /// Children linked to `supervisor`, which receives their supervision events.
    pub fn new(spec: S, supervisor: ActorCell) -> Self {
        Children {
            spec,
            supervisor,
            by_key: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
        }
    }

    pub fn spec(&self) -> &S {
        &self.spec
    }

    /// The child for `key`, if it is running.
    pub fn running(&self, key: &str) -> Option<ChildRef<S>> {
        self.by_key.get(key).cloned()
    }

    /// The key of a running child.
    pub fn key_of(&self, child: &ChildRef<S>) -> Option<&str> {
        self.by_actor.get(&child.get_id()).map(String::as_str)
    }

    /// Stops routing `key` to its child (which is about to stop cleanly) and returns it; its
    /// next message starts a new one.
    pub fn forget(&mut self, key: &str) -> Option<ChildRef<S>> {
        self.by_key.remove(key)
    }

    /// The keys of the running children.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_key.keys().map(String::as_str)
    }

    /// The child for `key`, started if it is not running.
    pub async fn get_or_start(&mut self, key: &str) -> Result<ChildRef<S>, SpawnErr> {
        if let Some(child) = self.by_key.get(key) {
            return Ok(child.clone());
        }
        let (actor, args) = self.spec.build(key);
        let (child, _) =
            Actor::spawn_linked(self.spec.name(key), actor, args, self.supervisor.clone()).await?;
        self.by_key.insert(key.to_string(), child.clone());
        self.by_actor.insert(child.get_id(), key.to_string());
        Ok(child)
    }

    /// Handles a supervision event: forgets a child that stopped and restarts it if it failed.
    /// Returns the restarted child, which has lost its state and may need telling to reload.
    pub async fn on_event(&mut self, evt: SupervisionEvent) -> Option<ChildRef<S>> {
        let (id, why) = stopped_child(&evt)?;
        let key = self.by_actor.remove(&id)?;
        if self.by_key.get(&key).is_some_and(|c| c.get_id() == id) {
            self.by_key.remove(&key);
        }
        if S::CLEAN_STOPS.contains(&why.as_str()) {
            return None;
        }
        if !self.may_restart(&key) {
            tracing::error!(kind = S::KIND, key = %key, %why, "actor keeps failing; not restarting");
            return None;
        }
        tracing::warn!(kind = S::KIND, key = %key, %why, "actor stopped; restarting");
        match self.get_or_start(&key).await {
            Ok(child) => Some(child),
            Err(e) => {
                tracing::error!(kind = S::KIND, key = %key, error = %e, "restart failed");
                None
            }
        }
    }

    /// Counts a restart of `key`; false when it has failed too often lately (its next message
    /// will start it again).
    fn may_restart(&mut self, key: &str) -> bool {
        let now = Instant::now();
        let entry = self.restarts.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) > RESTART_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= MAX_RESTARTS
    }
}

/// The child an event says stopped, and why ("idle", "killed", "failed: …"); `None` for events
/// that are not a child stopping.
fn stopped_child(evt: &SupervisionEvent) -> Option<(ActorId, String)> {
    match evt {
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.get_id(),
            reason.clone().unwrap_or_else(|| "stopped".into()),
        )),
        SupervisionEvent::ActorFailed(cell, err) => Some((cell.get_id(), format!("failed: {err}"))),
        _ => None,
    }
}
