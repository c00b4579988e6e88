//! The gateway's view of the fleet: an in-memory copy of the machines and machine-sessions KV
//! buckets, kept current by two KV watchers, so listing machines costs no NATS round trip and
//! every status change reaches the browsers' machine streams as it happens. The machines are
//! kept ordered by ID, so a page of the list costs the scan of what it skips and counts, and no
//! sort per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use natter_actors::machines::{MachineRecord, MachineStatus, Scope, filter_matches};
use parking_lot::RwLock;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::models::MachineView;

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    machines: RwLock<BTreeMap<String, MachineRecord>>,
    /// Machine ID → the session in progress with it.
    sessions: RwLock<HashMap<String, String>>,
    /// Machines that changed (status or session, or came or went).
    changes: broadcast::Sender<MachineChange>,
    ready: AtomicBool,
}

impl Directory {
    /// Starts following both buckets; returns once their current contents are loaded (or after
    /// a few seconds, if NATS is slow).
    pub async fn start(
        machines: kv::Store,
        sessions: kv::Store,
        shutdown: CancellationToken,
    ) -> Directory {
        let (changes, _) = broadcast::channel(4096);
        let dir = Directory {
            inner: Arc::new(Inner {
                machines: RwLock::new(BTreeMap::new()),
                sessions: RwLock::new(HashMap::new()),
                changes,
                ready: AtomicBool::new(false),
            }),
        };
        let (loaded_tx, mut loaded_rx) = tokio::sync::mpsc::channel::<()>(2);
        for (bucket, is_machines) in [(machines, true), (sessions, false)] {
            let dir = dir.clone();
            let shutdown = shutdown.clone();
            let loaded = loaded_tx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = dir.follow(bucket, is_machines, loaded) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loaded_rx.recv().await;
            loaded_rx.recv().await;
        })
        .await;
        dir.inner.ready.store(true, Ordering::Relaxed);
        dir
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    async fn follow(
        &self,
        bucket: kv::Store,
        is_machines: bool,
        loaded: tokio::sync::mpsc::Sender<()>,
    ) {
        let mut signalled = false;
        loop {
            // An empty bucket delivers nothing to a new watcher: then it is loaded at once.
            let empty = bucket
                .status()
                .await
                .map(|s| s.values() == 0)
                .unwrap_or(false);
            // The last value of every key, then every change (plain `watch_all` starts at "new").
            let mut watch = match bucket.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "directory: cannot watch a bucket; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if empty && !signalled {
                signalled = true;
                let _ = loaded.send(()).await;
            }
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { break };
                let key = entry.key.clone();
                // The machine-sessions bucket also holds chats between operators, by a key
                // that is not a machine ID: not the fleet's business.
                if is_machines || natter_actors::protocol::valid_machine_id(&key) {
                    let membership = self.apply(&key, &entry, is_machines);
                    let _ = self.inner.changes.send(MachineChange {
                        id: key,
                        membership,
                    });
                } else if let Some((machine, _)) =
                    natter_actors::subjects::parse_machine_user_chat_key(&key)
                {
                    // A chat with one user of a machine changes that machine's row.
                    let machine = machine.to_owned();
                    self.apply(&key, &entry, false);
                    let _ = self.inner.changes.send(MachineChange {
                        id: machine,
                        membership: false,
                    });
                }
                if entry.delta == 0 && !signalled {
                    signalled = true;
                    let _ = loaded.send(()).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Applies one entry of either bucket to the copy; true if a machine came or went.
    fn apply(&self, key: &str, entry: &kv::Entry, is_machines: bool) -> bool {
        let put = entry.operation == kv::Operation::Put;
        if is_machines {
            let mut map = self.inner.machines.write();
            match serde_json::from_slice::<MachineRecord>(&entry.value) {
                Ok(r) if put => map.insert(key.to_owned(), r).is_none(),
                _ => map.remove(key).is_some(),
            }
        } else {
            let mut map = self.inner.sessions.write();
            if put {
                let session = String::from_utf8_lossy(&entry.value).into_owned();
                map.insert(key.to_owned(), session);
            } else {
                map.remove(key);
            }
            false
        }
    }

    /// A machine's record, if known.
    pub fn record(&self, id: &str) -> Option<MachineRecord> {
        let map = self.inner.machines.read();
        map.get(id).cloned()
    }

    /// The session in progress with a machine.
    pub fn session_of(&self, id: &str) -> Option<String> {
        let map = self.inner.sessions.read();
        map.get(id).cloned()
    }

    /// The browser's view of a machine.
    pub fn view(&self, record: &MachineRecord) -> MachineView {
        MachineView::new(record, |user_session| match user_session {
            None => self.session_of(&record.id),
            Some(s) => self.session_of(&natter_actors::subjects::machine_user_chat_key(
                &record.id, s,
            )),
        })
    }

    /// Machines in `scope` matching `filter`, sorted by ID.
    pub fn list(&self, scope: &Scope, filter: &str) -> Vec<MachineView> {
        let records: Vec<MachineRecord> = {
            let map = self.inner.machines.read();
            map.values()
                .filter(|m| shown(scope, filter, &m.id))
                .cloned()
                .collect()
        };
        records.iter().map(|r| self.view(r)).collect()
    }

    /// The machines in `scope` matching `filter` from the `offset`-th (by ID, from 0), at most
    /// `limit` of them, and how many match in all.
    pub fn page(&self, scope: &Scope, filter: &str, offset: usize, limit: usize) -> MachinePage {
        let (total, records) = {
            let map = self.inner.machines.read();
            if matches!(scope, Scope::All) && (filter.is_empty() || filter == "*") {
                let records: Vec<MachineRecord> =
                    map.values().skip(offset).take(limit).cloned().collect();
                (map.len(), records)
            } else {
                let mut total = 0;
                let mut records = Vec::new();
                for m in map.values().filter(|m| shown(scope, filter, &m.id)) {
                    if total >= offset && records.len() < limit {
                        records.push(m.clone());
                    }
                    total += 1;
                }
                (total, records)
            }
        };
        MachinePage {
            total,
            offset,
            limit,
            machines: records.iter().map(|r| self.view(r)).collect(),
        }
    }

    /// How many machines are in `scope` and match `filter`.
    pub fn count(&self, scope: &Scope, filter: &str) -> usize {
        let map = self.inner.machines.read();
        if matches!(scope, Scope::All) && (filter.is_empty() || filter == "*") {
            return map.len();
        }
        map.keys().filter(|id| shown(scope, filter, id)).count()
    }

    /// The groups of the machines in `scope` matching `filter` (those a list shows).
    pub fn groups(&self, scope: &Scope, filter: &str) -> std::collections::HashSet<String> {
        let map = self.inner.machines.read();
        // Borrowed while scanning: a copy per group, not per machine.
        let groups: std::collections::HashSet<&str> = map
            .keys()
            .filter(|id| shown(scope, filter, id))
            .map(|id| natter_actors::machines::group_of(id))
            .collect();
        groups.into_iter().map(str::to_owned).collect()
    }

    /// How many machines are in each status.
    pub fn status_counts(&self) -> HashMap<MachineStatus, usize> {
        let map = self.inner.machines.read();
        let mut counts = HashMap::new();
        for record in map.values() {
            *counts.entry(record.status).or_default() += 1;
        }
        counts
    }

    /// Machines as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineChange> {
        self.inner.changes.subscribe()
    }
}

/// Whether a list for `scope` and `filter` shows machine `id`.
fn shown(scope: &Scope, filter: &str, id: &str) -> bool {
    scope.covers(id) && filter_matches(filter, id)
}

/// A change of one machine's row.
#[derive(Clone, Debug)]
pub struct MachineChange {
    pub id: String,
    /// The machine came or went (rather than changed): the list's membership changed.
    pub membership: bool,
}

/// One page of the machine list (docs/api.md, "Paging").
#[derive(serde::Serialize, Debug)]
pub struct MachinePage {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub machines: Vec<MachineView>,
}
