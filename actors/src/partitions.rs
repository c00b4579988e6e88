//! Which node owns which partition: leases in the `natter_partitions` KV bucket.
//!
//! Sessions and machines are spread over [`PARTITIONS`] fixed partitions
//! ([`subjects::partition_of`]); the node owning a partition is the only one running its session
//! and agent actors, and the only one subscribed to its commands. Ownership uses NATS's own
//! primitives, no home-made consensus:
//!
//! - key `p.<n>` = the owning node's id, taken with `create` (absent or deleted) or
//!   `update(key, me, revision)` (stale), renewed every [`RENEW`] with `update` on the revision
//!   it last wrote: a renewal that finds another revision means someone took it over.
//! - key `node.<id>` = a node's heartbeat, put every [`RENEW`]: live members are the nodes whose
//!   key changed within [`LEASE_TTL`], and each takes a fair share, `ceil(32 / members)`.
//! - Times are local and monotonic only (no clocks are compared between nodes). A renewal makes
//!   the lease valid locally until *the instant before the request* + [`LEASE_TTL`]; other nodes
//!   count a lease stale only [`LEASE_TTL`] after they *saw* its last change, which is later. So
//!   the holder always stops acting as owner before anyone else may take over, and a node that
//!   was paused (SIGSTOP) wakes up owning nothing.
//! - A node above its share (another joined) hands over one partition per tick: it releases it
//!   locally (the supervisors unsubscribe and stop its actors), then deletes the key, and a node
//!   below its share creates it on its next tick. Drain ([`Partitions::release_all`]) does this
//!   for every partition at once.
//! - The last line stays the event stream's `Nats-Expected-Last-Subject-Sequence`: a stale owner's
//!   append is refused whatever it believes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::subjects::{self, PARTITIONS};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_millis(1200);
/// How often a node renews its leases, beats its heartbeat and rebalances.
pub const RENEW: Duration = Duration::from_millis(300);

/// Sends a request to the owner of a partition (`subject` names it) and returns its answer,
/// decoded once as `T`. While the partition changes hands — nobody subscribed (no responders),
/// or the answer is one `moved` recognises (a former owner's [`MOVED`]) — it retries with a
/// short back-off for up to [`RETRY_FOR`], then returns the last answer (or the error). Each
/// attempt waits at most [`ATTEMPT_TIMEOUT`] and one that times out is sent again, for up to
/// `patience` in all: a request delivered to a node that died the same moment is never
/// answered, and its partition has a new owner well within that. Only for idempotent requests.
///
/// Also says whether an earlier attempt timed out: it may have been carried out (a send's
/// answer then says `duplicate` about the caller's own message).
pub async fn request_owner<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: String,
    body: bytes::Bytes,
    patience: Duration,
    moved: impl Fn(&T) -> bool,
) -> Result<(T, bool), String> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut timed_out = false;
    loop {
        let wait = ATTEMPT_TIMEOUT.min(patience.saturating_sub(started.elapsed()));
        let attempt = client.request(subject.clone(), body.clone());
        let failed = match tokio::time::timeout(wait, attempt).await {
            Ok(Ok(msg)) => {
                let answer: T = serde_json::from_slice(&msg.payload)
                    .map_err(|e| format!("unreadable answer: {e}"))?;
                if !moved(&answer) {
                    return Ok((answer, timed_out));
                }
                Ok((answer, timed_out))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                timed_out = true;
                if started.elapsed() >= patience {
                    return Err("timed out".into());
                }
                continue;
            }
        };
        if started.elapsed() + backoff > RETRY_FOR {
            return failed;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How long one attempt of [`request_owner`] waits for its answer. Owners answer at once (work
/// that waits, such as asking an agent, runs after the answer), so a second of silence means
/// the request was lost with a dying node.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a machine request's answer says the machine moved (for [`request_owner`]).
pub fn machine_moved(reply: &crate::machines::MachineReply) -> bool {
    reply.as_ref().err().map(String::as_str) == Some(MACHINE_MOVED)
}

/// The answer's message when a command reached a node that no longer owns its partition; the
/// caller retries and reaches the new owner.
pub const MOVED: &str = "the session moved to another node; try again";
/// [`MOVED`] for a machine request.
pub const MACHINE_MOVED: &str = "the machine moved to another node; try again";

/// How long callers ([`request_owner`]) keep retrying a request whose partition is changing
/// hands (a hand-over takes a tick, a failover [`LEASE_TTL`] and a tick).
pub const RETRY_FOR: Duration = Duration::from_secs(3);
/// The first wait before a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A set of partitions.
pub type Owned = BTreeSet<u32>;

/// This node's view of its partitions. Cheap to clone.
#[derive(Clone)]
pub struct Partitions {
    shared: Arc<Shared>,
}

struct Shared {
    node: String,
    /// What this process writes as holder and member: `<node id>/<a ULID of this start>`. Two
    /// processes configured with the same node id (a copied config, or a restart before the old
    /// process is gone) are then still two holders, and never both own a partition.
    holder: String,
    /// Per partition: until when this node may act as its owner.
    valid_until: Mutex<[Option<Instant>; PARTITIONS as usize]>,
    owned: watch::Sender<Owned>,
    /// Every partition was held by a live node at the last tick.
    all_held: AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
}

enum Command {
    /// Hand every partition over (drain) and stop.
    ReleaseAll(oneshot::Sender<()>),
    /// Stop without touching KV, as a dead node would (tests).
    Abandon,
}

impl Partitions {
    /// Starts the lease task of node `node` on `bucket` (the [`crate::store`] partitions bucket).
    /// The watcher starts from the last value of every key (`watch_all` would show only later
    /// changes, and a dead node's leases never change again).
    pub async fn start(node: &str, bucket: kv::Store) -> Result<Partitions, kv::WatchError> {
        let watcher = bucket.watch_with_history(">").await?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            node: node.to_string(),
            holder: format!("{node}/{}", ulid::Ulid::new()),
            valid_until: Mutex::new([None; PARTITIONS as usize]),
            owned: watch::channel(Owned::new()).0,
            all_held: AtomicBool::new(false),
            commands,
        });
        let task = LeaseTask {
            shared: shared.clone(),
            bucket,
            view: View::default(),
            owned: HashMap::new(),
        };
        tokio::spawn(task.run(watcher, commands_rx));
        Ok(Partitions { shared })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Whether this node may act as the owner of partition `p` now: only while its lease is
    /// valid locally.
    pub fn owns(&self, p: u32) -> bool {
        let valid = self.shared.valid_until.lock();
        valid
            .get(p as usize)
            .copied()
            .flatten()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether this node owns the partition of `key` (a session ID or machine ID).
    pub fn owns_key(&self, key: &str) -> bool {
        self.owns(subjects::partition_of(key))
    }

    /// The partitions this node owns now.
    pub fn owned(&self) -> Vec<u32> {
        (0..PARTITIONS).filter(|p| self.owns(*p)).collect()
    }

    /// How many partitions this node owns now.
    pub fn count(&self) -> usize {
        self.owned().len()
    }

    /// The owned set as the lease task last published it, and every change to it.
    pub fn subscribe(&self) -> watch::Receiver<Owned> {
        self.shared.owned.subscribe()
    }

    /// Whether every partition was held by a live node at the last tick (this one or another):
    /// a node owning none is then still a working member of the cluster.
    pub fn all_held(&self) -> bool {
        self.shared.all_held.load(Ordering::Relaxed)
    }

    /// Waits until every partition is held by a live node, at most `timeout`; whether it is.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.all_held() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(RENEW / 3).await;
        }
        true
    }

    /// Drain: releases every partition at once (supervisors unsubscribe and stop their actors,
    /// the keys are deleted so other nodes take them on their next tick) and stops renewing.
    pub async fn release_all(&self) {
        let (done, wait) = oneshot::channel();
        if self.shared.commands.send(Command::ReleaseAll(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops renewing without releasing anything, as a node that dies would (tests): the leases
    /// go stale and other nodes take them after [`LEASE_TTL`].
    pub fn abandon(&self) {
        let _ = self.shared.commands.send(Command::Abandon);
        self.shared.clear();
    }
}

impl Shared {
    fn set_valid(&self, p: u32, until: Option<Instant>) {
        self.valid_until.lock()[p as usize] = until;
    }

    fn clear(&self) {
        *self.valid_until.lock() = [None; PARTITIONS as usize];
        self.owned.send_replace(Owned::new());
    }
}

/// A lease key as last seen through the watcher.
#[derive(Clone, Debug)]
struct Lease {
    /// The holder's node id; `None` once deleted.
    holder: Option<String>,
    revision: u64,
    /// When this node saw the key's last change.
    seen: Instant,
}

/// The bucket as this node's watcher has shown it.
#[derive(Default, Debug)]
struct View {
    leases: HashMap<u32, Lease>,
    /// Node id → when its heartbeat last changed (deleted heartbeats are removed).
    members: HashMap<String, Instant>,
}

impl View {
    fn see(&mut self, entry: &kv::Entry, now: Instant) {
        let live = entry.operation == kv::Operation::Put;
        if let Some(p) = subjects::partition_of_lease_key(&entry.key) {
            let holder = live.then(|| String::from_utf8_lossy(&entry.value).into_owned());
            self.leases.insert(
                p,
                Lease {
                    holder,
                    revision: entry.revision,
                    seen: now,
                },
            );
        } else if let Some(node) = subjects::node_of_member_key(&entry.key) {
            if live {
                self.members.insert(node.to_string(), now);
            } else {
                self.members.remove(node);
            }
        }
    }

    /// How many nodes are live (this one always is).
    fn live_members(&self, me: &str, now: Instant) -> usize {
        let others = self
            .members
            .iter()
            .filter(|(node, seen)| node.as_str() != me && now.duration_since(**seen) < LEASE_TTL)
            .count();
        others + 1
    }

    /// Whether `p` is held by someone whose lease is still fresh.
    fn held(&self, p: u32, now: Instant) -> bool {
        self.leases
            .get(&p)
            .is_some_and(|l| l.holder.is_some() && now.duration_since(l.seen) < LEASE_TTL)
    }
}

/// Each node's fair share of the partitions among `members` live nodes.
fn fair_share(members: usize) -> usize {
    (PARTITIONS as usize).div_ceil(members.max(1))
}

/// Rendezvous score of (node, partition): nodes prefer different partitions, which cuts
/// contention when several take at once.
fn score(node: &str, p: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in node.as_bytes().iter().chain(&p.to_be_bytes()) {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// One change a tick makes to this node's leases.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The key is absent or deleted: `create` it.
    Create(u32),
    /// The key has not changed for [`LEASE_TTL`] (or is this node's own, released locally):
    /// `update` it on the revision seen.
    TakeOver(u32, u64),
    /// Above the fair share: release it and delete the key.
    HandOver(u32),
}

/// What a tick does, given the bucket as seen and the partitions owned (pure).
fn plan(me: &str, view: &View, owned: &Owned, now: Instant) -> Vec<Step> {
    let share = fair_share(view.live_members(me, now));
    if owned.len() > share {
        let give = owned.iter().copied().min_by_key(|p| score(me, *p));
        return give.map(Step::HandOver).into_iter().collect();
    }
    let mut wanted: Vec<(u32, Step)> = (0..PARTITIONS)
        .filter(|p| !owned.contains(p))
        .filter_map(|p| {
            let step = match view.leases.get(&p) {
                None => Step::Create(p),
                Some(Lease { holder: None, .. }) => Step::Create(p),
                Some(l) if l.holder.as_deref() == Some(me) => Step::TakeOver(p, l.revision),
                Some(l) if now.duration_since(l.seen) >= LEASE_TTL => Step::TakeOver(p, l.revision),
                Some(_) => return None,
            };
            Some((score(me, p), step))
        })
        .collect();
    wanted.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
    wanted
        .into_iter()
        .take(share - owned.len())
        .map(|(_, step)| step)
        .collect()
}

/// The one task per node that keeps its leases.
struct LeaseTask {
    shared: Arc<Shared>,
    bucket: kv::Store,
    view: View,
    /// Owned partition → the revision this node last wrote.
    owned: HashMap<u32, u64>,
}

impl LeaseTask {
    async fn run(mut self, watcher: kv::Watch, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut watcher = Some(watcher);
        // The first tick waits one period, so the watcher has shown the bucket by then.
        let start = tokio::time::Instant::now() + RENEW;
        let mut tick = tokio::time::interval_at(start, RENEW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_entry = async {
                match watcher.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                entry = next_entry => match entry {
                    Some(Ok(entry)) => self.view.see(&entry, Instant::now()),
                    Some(Err(e)) => tracing::warn!(error = %e, "partition watcher failed"),
                    None => {
                        tracing::warn!("partition watcher ended; following again");
                        watcher = None;
                    }
                },
                _ = tick.tick() => {
                    if watcher.is_none() {
                        match self.bucket.watch_with_history(">").await {
                            Ok(w) => watcher = Some(w),
                            Err(e) => tracing::warn!(error = %e, "could not follow the partitions"),
                        }
                    }
                    self.tick().await;
                }
                command = commands.recv() => {
                    match command {
                        Some(Command::ReleaseAll(done)) => {
                            self.release_all().await;
                            let _ = done.send(());
                        }
                        Some(Command::Abandon) | None => {}
                    }
                    self.shared.clear();
                    return;
                }
            }
        }
    }

    /// This process as holder and member (see [`Shared::holder`]).
    fn me(&self) -> String {
        self.shared.holder.clone()
    }

    /// Heartbeat, renewals, then taking or handing over towards the fair share.
    async fn tick(&mut self) {
        let me = self.me();
        let bucket = &self.bucket;
        if let Err(e) = bucket
            .put(
                subjects::node_member_key(&me),
                crate::now_ms().to_string().into(),
            )
            .await
        {
            tracing::warn!(node = %me, error = %e, "could not beat the node's heartbeat");
        }
        self.renew().await;
        let owned: Owned = self.owned.keys().copied().collect();
        let steps = plan(&me, &self.view, &owned, Instant::now());
        if !steps.is_empty() {
            tracing::debug!(node = %me, owned = owned.len(), ?steps, "rebalancing");
        }
        for step in steps {
            match step {
                Step::Create(p) => {
                    let sent = Instant::now();
                    let key = subjects::partition_lease_key(p);
                    if let Ok(revision) = self.bucket.create(&key, me.clone().into()).await {
                        self.gain(p, revision, sent);
                    }
                }
                Step::TakeOver(p, seen_revision) => {
                    let sent = Instant::now();
                    let key = subjects::partition_lease_key(p);
                    let taken = match self
                        .bucket
                        .update(&key, me.clone().into(), seen_revision)
                        .await
                    {
                        Ok(revision) => Some(revision),
                        // Gone (aged out of the bucket unseen): create it.
                        Err(e) => {
                            let created = self.bucket.create(&key, me.clone().into()).await;
                            if let Err(c) = &created {
                                tracing::debug!(partition = p, update = %e, create = %c, "could not take over");
                            }
                            created.ok()
                        }
                    };
                    if let Some(revision) = taken {
                        self.gain(p, revision, sent);
                    }
                }
                Step::HandOver(p) => {
                    let revision = self.owned.get(&p).copied();
                    self.lose(p, "handed over to a node with fewer");
                    self.publish();
                    let key = subjects::partition_lease_key(p);
                    if let Err(e) = self.bucket.delete_expect_revision(&key, revision).await {
                        tracing::debug!(partition = p, error = %e, "hand-over delete failed");
                    }
                }
            }
        }
        self.publish();
        let now = Instant::now();
        let all_held =
            (0..PARTITIONS).all(|p| self.owned.contains_key(&p) || self.view.held(p, now));
        self.shared.all_held.store(all_held, Ordering::Relaxed);
    }

    /// Renews every owned lease on the revision last written; loses those taken over by
    /// another node or no longer valid.
    async fn renew(&mut self) {
        let me = self.me();
        let renewals = self.owned.iter().map(|(&p, &revision)| {
            let (bucket, me) = (self.bucket.clone(), me.clone());
            async move {
                let sent = Instant::now();
                let key = subjects::partition_lease_key(p);
                (p, sent, bucket.update(key, me.into(), revision).await)
            }
        });
        let results = futures::future::join_all(renewals).await;
        for (p, sent, result) in results {
            match result {
                Ok(revision) => {
                    self.owned.insert(p, revision);
                    self.shared.set_valid(p, Some(sent + LEASE_TTL));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    self.lose(p, "taken over by another node");
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "could not renew a lease");
                }
            }
        }
        let lapsed: Vec<u32> = self
            .owned
            .keys()
            .copied()
            .filter(|p| {
                let valid = self.shared.valid_until.lock()[*p as usize];
                valid.is_none_or(|until| Instant::now() >= until)
            })
            .collect();
        for p in lapsed {
            self.lose(p, "lease lapsed");
        }
    }

    fn gain(&mut self, p: u32, revision: u64, sent: Instant) {
        self.owned.insert(p, revision);
        self.shared.set_valid(p, Some(sent + LEASE_TTL));
        tracing::info!(node = %self.shared.node, partition = p, "took partition");
    }

    fn lose(&mut self, p: u32, why: &str) {
        self.owned.remove(&p);
        self.shared.set_valid(p, None);
        tracing::info!(node = %self.shared.node, partition = p, why, "lost partition");
    }

    /// Tells the supervisors the owned set, if it changed.
    fn publish(&self) {
        let owned: Owned = self.owned.keys().copied().collect();
        self.shared.owned.send_if_modified(|current| {
            let changed = *current != owned;
            *current = owned;
            changed
        });
    }

    /// Drain: releases everything locally, then removes the heartbeat (so the others' share
    /// grows) and every lease key (so they take them on their next tick).
    async fn release_all(&mut self) {
        let owned: Vec<(u32, u64)> = self.owned.drain().collect();
        self.shared.clear();
        let me = self.me();
        tracing::info!(node = %me, partitions = owned.len(), "releasing every partition");
        let _ = self.bucket.delete(subjects::node_member_key(&me)).await;
        let deletes = owned.into_iter().map(|(p, revision)| {
            let bucket = self.bucket.clone();
            async move {
                let key = subjects::partition_lease_key(p);
                bucket.delete_expect_revision(key, Some(revision)).await
            }
        });
        futures::future::join_all(deletes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, revision: u64, seen: Instant) -> Lease {
        Lease {
            holder: holder.map(str::to_string),
            revision,
            seen,
        }
    }

    /// A handle whose lease task never runs: what a node looks like to its actors when its
    /// renewals stop (paused, cut off).
    fn handle() -> Partitions {
        Partitions {
            shared: Arc::new(Shared {
                node: "a".into(),
                holder: "a/1".into(),
                valid_until: Mutex::new([None; PARTITIONS as usize]),
                owned: watch::channel(Owned::new()).0,
                all_held: AtomicBool::new(false),
                commands: mpsc::unbounded_channel().0,
            }),
        }
    }

    #[test]
    fn ownership_ends_at_the_local_deadline_without_renewals() {
        let partitions = handle();
        let now = Instant::now();
        partitions.shared.set_valid(3, Some(now + LEASE_TTL));
        partitions
            .shared
            .set_valid(4, Some(now - Duration::from_millis(1)));
        assert!(partitions.owns(3));
        assert!(!partitions.owns(4), "a lapsed lease is not owned");
        assert_eq!(partitions.owned(), vec![3]);
        partitions.abandon();
        assert_eq!(partitions.count(), 0, "a dead node owns nothing");
    }

    #[test]
    fn fair_shares_cover_every_partition() {
        assert_eq!(fair_share(0), 32);
        assert_eq!(fair_share(1), 32);
        assert_eq!(fair_share(2), 16);
        assert_eq!(fair_share(3), 11);
        assert_eq!(fair_share(5), 7);
        assert_eq!(fair_share(40), 1);
        assert!((1..=40).all(|n| fair_share(n) * n >= 32));
    }

    #[test]
    fn a_lone_node_takes_every_absent_partition() {
        let now = Instant::now();
        let steps = plan("a", &View::default(), &Owned::new(), now);
        assert_eq!(steps.len(), 32);
        assert!(steps.iter().all(|s| matches!(s, Step::Create(_))));
    }

    #[test]
    fn fresh_leases_are_left_alone_and_stale_ones_taken_on_their_revision() {
        let now = Instant::now();
        let old = now - LEASE_TTL - Duration::from_millis(1);
        let mut view = View::default();
        view.members.insert("b".into(), old);
        for p in 0..PARTITIONS {
            let seen = if p == 5 { old } else { now };
            view.leases
                .insert(p, lease(Some("b"), 100 + u64::from(p), seen));
        }
        let steps = plan("a", &view, &Owned::new(), now);
        assert_eq!(steps, vec![Step::TakeOver(5, 105)]);
        // A deleted key (handed over) is created at once.
        view.leases.insert(7, lease(None, 300, now));
        let steps = plan("a", &view, &Owned::new(), now);
        assert!(steps.contains(&Step::Create(7)), "{steps:?}");
    }

    #[test]
    fn a_node_above_its_share_hands_over_one_per_tick() {
        let now = Instant::now();
        let mut view = View::default();
        view.members.insert("a".into(), now);
        view.members.insert("b".into(), now);
        let owned: Owned = (0..PARTITIONS).collect();
        for p in 0..PARTITIONS {
            view.leases.insert(p, lease(Some("a"), 1, now));
        }
        let steps = plan("a", &view, &owned, now);
        assert_eq!(steps.len(), 1);
        assert!(matches!(steps[0], Step::HandOver(_)));
        // At its share it keeps what it has and takes nothing held.
        let owned: Owned = (0..16).collect();
        assert!(plan("a", &view, &owned, now).is_empty());
    }

    #[test]
    fn a_node_below_its_share_takes_only_up_to_it() {
        let now = Instant::now();
        let mut view = View::default();
        view.members.insert("b".into(), now);
        view.members.insert("c".into(), now);
        let steps = plan("a", &view, &Owned::new(), now);
        assert_eq!(steps.len(), 11);
        // Different nodes prefer different partitions.
        let theirs = plan("b", &view, &Owned::new(), now);
        assert_ne!(steps, theirs);
    }
}
