//! Chats waiting for an operator's answer (F5), as every gateway sees them: a copy of KV
//! `natter_incoming` (written only by the session actors), kept current by a watcher, so each
//! Chat page is told of its operator's incoming chats as they come and go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use natter_actors::protocol::Incoming;
use natter_actors::subjects;
use parking_lot::RwLock;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One change: `entry` is the chat now waiting for `operator`, or `None` when it no longer is.
#[derive(Clone, Debug)]
pub struct IncomingChange {
    pub operator: String,
    pub session: String,
    pub entry: Option<Incoming>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct IncomingChats {
    inner: Arc<Inner>,
}

struct Inner {
    /// Operator → session → what waits.
    waiting: RwLock<HashMap<String, BTreeMap<String, Incoming>>>,
    changes: broadcast::Sender<IncomingChange>,
}

impl IncomingChats {
    /// Starts following `bucket` until `shutdown`.
    pub fn start(bucket: Arc<kv::Store>, shutdown: CancellationToken) -> IncomingChats {
        let (changes, _) = broadcast::channel(1024);
        let chats = IncomingChats {
            inner: Arc::new(Inner {
                waiting: RwLock::new(HashMap::new()),
                changes,
            }),
        };
        let c = chats.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = c.follow(bucket) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        chats
    }

    /// Every change, for any operator (each stream keeps its own operator's).
    pub fn subscribe(&self) -> broadcast::Receiver<IncomingChange> {
        self.inner.changes.subscribe()
    }

    /// What waits for `operator` now, oldest first.
    pub fn waiting_for(&self, operator: &str) -> Vec<Incoming> {
        let waiting = self.inner.waiting.read();
        let mut list: Vec<Incoming> = waiting
            .get(operator)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|i| i.at);
        list
    }

    async fn follow(&self, bucket: Arc<kv::Store>) {
        loop {
            let mut watch = match bucket.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "incoming chats: cannot watch; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // A new watch replays every key that is there now: forget what we had, so an entry
            // deleted while the watch was down does not stay.
            self.forget_all();
            while let Some(Ok(entry)) = watch.next().await {
                let Some((operator, session)) = subjects::parse_incoming_key(&entry.key) else {
                    continue;
                };
                let value = (entry.operation == kv::Operation::Put)
                    .then(|| serde_json::from_slice::<Incoming>(&entry.value).ok())
                    .flatten();
                self.apply(operator, session, value);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn apply(&self, operator: &str, session: &str, entry: Option<Incoming>) {
        {
            let mut waiting = self.inner.waiting.write();
            match &entry {
                Some(e) => {
                    let mine = waiting.entry(operator.to_owned()).or_default();
                    mine.insert(session.to_owned(), e.clone());
                }
                None => {
                    let Some(mine) = waiting.get_mut(operator) else {
                        return;
                    };
                    if mine.remove(session).is_none() {
                        return;
                    }
                    if mine.is_empty() {
                        waiting.remove(operator);
                    }
                }
            }
        }
        let _ = self.inner.changes.send(IncomingChange {
            operator: operator.to_owned(),
            session: session.to_owned(),
            entry,
        });
    }

    fn forget_all(&self) {
        let gone: Vec<(String, String)> = {
            let mut waiting = self.inner.waiting.write();
            let gone = waiting
                .iter()
                .flat_map(|(op, m)| m.keys().map(move |s| (op.clone(), s.clone())))
                .collect();
            waiting.clear();
            gone
        };
        for (operator, session) in gone {
            let _ = self.inner.changes.send(IncomingChange {
                operator,
                session,
                entry: None,
            });
        }
    }
}
