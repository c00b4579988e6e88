//! Which operators are on the Chat page now, across every node: the operators another operator
//! may start a chat with (F8), and a machine user may reach (F9).
//!
//! An operator is *present* while at least one Chat page of theirs has its machine stream open
//! (`GET /api/machines/events`) on any node. Each gateway writes one entry per present operator
//! of its own (`<operator>.<node>` in KV `natter_presence`): when their first page opens, again
//! every [`REFRESH`] and when their options change, and deletes it when their last page here
//! closes; it follows the options bucket, so a change of "hide my name" made on any node
//! applies at once. Every gateway watches the bucket and keeps a copy; an entry not refreshed for
//! [`STALE_AFTER`] (its node died) is dropped from the copy, so no node's memory decides who is
//! present anywhere but its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use natter_actors::directory::OperatorOptions;
use natter_actors::machines::Scope;
use natter_actors::subjects;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How often a node writes its present operators again.
pub const REFRESH: Duration = Duration::from_secs(5);
/// An entry not written again for this long is no longer present (its node is gone).
pub const STALE_AFTER: Duration = Duration::from_secs(20);

/// What a node publishes about one present operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PresenceEntry {
    pub username: String,
    pub name: String,
    pub scope: Scope,
    #[serde(default)]
    pub hide_from_operators: bool,
    #[serde(default)]
    pub hide_from_machine_users: bool,
}

/// A present operator as a list shows them.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PresentOperator {
    /// For operators' lists the username; the machine user's list shows aliases instead.
    #[serde(skip)]
    pub username: String,
    pub name: String,
}

/// Every gateway's view of who is present. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// Operators with a Chat page open on this node: username → (pages open, their entry).
    local: Mutex<HashMap<String, (usize, PresenceEntry)>>,
    /// Every node's entries by key, with when each was last written.
    all: RwLock<HashMap<String, (Instant, PresenceEntry)>>,
    /// Usernames whose local entry must be written (or deleted, when no page is open).
    writes: mpsc::UnboundedSender<String>,
    /// Something in `all` changed: lists must be made again.
    changes: broadcast::Sender<()>,
}

impl Presence {
    /// Starts the writer, the refresher, the watcher of `bucket` and the follower of the
    /// operators' `options`, until `shutdown`.
    pub fn start(
        bucket: Arc<kv::Store>,
        options: Arc<kv::Store>,
        node: String,
        shutdown: CancellationToken,
    ) -> Presence {
        let (writes, queue) = mpsc::unbounded_channel();
        let (changes, _) = broadcast::channel(64);
        let presence = Presence {
            inner: Arc::new(Inner {
                node,
                local: Mutex::new(HashMap::new()),
                all: RwLock::new(HashMap::new()),
                writes,
                changes,
            }),
        };
        let p = presence.clone();
        tokio::spawn(p.write_all(bucket.clone(), queue, shutdown.clone()));
        let p = presence.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = p.refresh() => {}
                _ = stop.cancelled() => {}
            }
        });
        let p = presence.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = p.follow_options(options) => {}
                _ = stop.cancelled() => {}
            }
        });
        let p = presence.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = p.watch(bucket) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        presence
    }

    /// Marks the operator of `entry` present while the returned guard lives (one open page).
    pub fn enter(&self, entry: PresenceEntry) -> PresenceGuard {
        let username = entry.username.clone();
        {
            let mut local = self.inner.local.lock();
            let slot = local.entry(username.clone()).or_insert((0, entry.clone()));
            slot.0 += 1;
            slot.1 = entry;
        }
        let _ = self.inner.writes.send(username.clone());
        PresenceGuard {
            presence: self.clone(),
            username,
        }
    }

    /// Follows changes of every operator's options (from now on: a page reads them when it
    /// opens).
    async fn follow_options(&self, options: Arc<kv::Store>) {
        loop {
            let mut watch = match options.watch_all().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "presence: cannot watch the options; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(Ok(entry)) = watch.next().await {
                let value = serde_json::from_slice::<OperatorOptions>(&entry.value);
                self.options_changed(&entry.key, &value.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The operator changed their options: their entry here says so at once.
    fn options_changed(&self, username: &str, options: &OperatorOptions) {
        let mut local = self.inner.local.lock();
        if let Some((_, entry)) = local.get_mut(username) {
            entry.hide_from_operators = options.hide_from_operators;
            entry.hide_from_machine_users = options.hide_from_machine_users;
            let _ = self.inner.writes.send(username.to_owned());
        }
    }

    /// Tells of every change of who is present (or how they show).
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.inner.changes.subscribe()
    }

    /// The operators `viewer` may start a chat with: present, not `viewer`, not hiding from
    /// operators, and with a scope covering every group in `groups` (those the viewer's list
    /// shows). Sorted by name.
    pub fn operators_for(&self, viewer: &str, groups: &HashSet<String>) -> Vec<PresentOperator> {
        self.present(|e| {
            e.username != viewer
                && !e.hide_from_operators
                && groups.iter().all(|g| e.scope.covers_group(g))
        })
    }

    /// The operators a user of a machine in `group` may start a chat with: present, not hiding
    /// from machine users, and with the machine's group in their scope. Sorted by name.
    pub fn reachable_from_machine(&self, group: &str) -> Vec<PresentOperator> {
        self.present(|e| !e.hide_from_machine_users && e.scope.covers_group(group))
    }

    /// What operator `username` is present as (on any node), if present.
    pub fn entry(&self, username: &str) -> Option<PresenceEntry> {
        let all = self.inner.all.read();
        all.values()
            .find(|(at, e)| at.elapsed() < STALE_AFTER && e.username == username)
            .map(|(_, e)| e.clone())
    }

    /// The present operators `keep` accepts, once each (an operator may be present on several
    /// nodes), sorted by name.
    fn present(&self, keep: impl Fn(&PresenceEntry) -> bool) -> Vec<PresentOperator> {
        let all = self.inner.all.read();
        let mut seen = HashSet::new();
        let mut list: Vec<PresentOperator> = all
            .values()
            .filter(|(at, e)| at.elapsed() < STALE_AFTER && keep(e))
            .filter(|(_, e)| seen.insert(e.username.clone()))
            .map(|(_, e)| PresentOperator {
                username: e.username.clone(),
                name: e.name.clone(),
            })
            .collect();
        list.sort_by(|a, b| (&a.name, &a.username).cmp(&(&b.name, &b.username)));
        list
    }

    fn leave(&self, username: &str) {
        let mut local = self.inner.local.lock();
        if let Some(slot) = local.get_mut(username) {
            slot.0 -= 1;
            if slot.0 == 0 {
                local.remove(username);
            }
        }
        let _ = self.inner.writes.send(username.to_owned());
    }

    /// The one writer of this node's entries, in order: each write puts what `local` holds at
    /// that moment, or deletes the entry when the operator has no page open here any more. At
    /// shutdown it deletes every entry it left, so the node's operators leave every list at
    /// once rather than after [`STALE_AFTER`] (best effort: NATS may be gone too).
    async fn write_all(
        self,
        bucket: Arc<kv::Store>,
        mut queue: mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut written = HashSet::new();
        loop {
            let username = tokio::select! {
                next = queue.recv() => match next {
                    Some(username) => username,
                    None => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let key = subjects::presence_key(&username, &self.inner.node);
            let entry = self
                .inner
                .local
                .lock()
                .get(&username)
                .map(|(_, e)| e.clone());
            let result = match entry {
                Some(e) => {
                    written.insert(username);
                    let json = serde_json::to_vec(&e).unwrap_or_default();
                    let put = bucket.put(&key, json.into()).await;
                    put.map(|_| ()).map_err(|e| e.to_string())
                }
                None => {
                    written.remove(&username);
                    bucket.delete(&key).await.map_err(|e| e.to_string())
                }
            };
            if let Err(e) = result {
                // The next refresh writes it again.
                tracing::warn!(error = %e, "presence: could not write an entry");
            }
        }
        let node = &self.inner.node;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            for username in written {
                let _ = bucket.delete(subjects::presence_key(&username, node)).await;
            }
        })
        .await;
    }

    /// Writes every local entry again every [`REFRESH`], and drops entries of other nodes that
    /// stopped being written.
    async fn refresh(&self) {
        let mut every = tokio::time::interval(REFRESH);
        loop {
            every.tick().await;
            let present: Vec<String> = self.inner.local.lock().keys().cloned().collect();
            for username in present {
                let _ = self.inner.writes.send(username);
            }
            let dropped = {
                let mut all = self.inner.all.write();
                let before = all.len();
                all.retain(|_, (at, _)| at.elapsed() < STALE_AFTER);
                all.len() != before
            };
            if dropped {
                let _ = self.inner.changes.send(());
            }
        }
    }

    /// Follows the bucket: the last value of every key, then each change.
    async fn watch(&self, bucket: Arc<kv::Store>) {
        loop {
            let mut watch = match bucket.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "presence: cannot watch; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(Ok(entry)) = watch.next().await {
                if subjects::parse_presence_key(&entry.key).is_none() {
                    continue;
                }
                let value = (entry.operation == kv::Operation::Put)
                    .then(|| serde_json::from_slice::<PresenceEntry>(&entry.value).ok())
                    .flatten();
                // Entries the watch replays may be old: count them from their own time.
                let written = Instant::now()
                    .checked_sub(age_of(entry.created))
                    .unwrap_or_else(Instant::now);
                let changed = {
                    let mut all = self.inner.all.write();
                    match value {
                        Some(e) => {
                            let before = all.insert(entry.key.clone(), (written, e.clone()));
                            before.is_none_or(|(_, old)| old != e)
                        }
                        None => all.remove(&entry.key).is_some(),
                    }
                };
                if changed {
                    let _ = self.inner.changes.send(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How long ago a KV entry was written, by the server's clock (zero if it is ahead of ours).
fn age_of(created: time::OffsetDateTime) -> Duration {
    let age = time::OffsetDateTime::now_utc() - created;
    age.try_into().unwrap_or(Duration::ZERO)
}

/// One open Chat page of an operator: present until it is dropped.
pub struct PresenceGuard {
    presence: Presence,
    username: String,
}

impl PresenceGuard {
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.presence.leave(&self.username);
    }
}
