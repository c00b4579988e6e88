//! Which machines a real agent enrolled: an in-memory copy of the keys of the agent keys bucket
//! ([`crate::enrollment::AGENT_KEYS_BUCKET`]), kept current by a KV watcher. The fleet asks it
//! for every simulated check-in, which is accepted only for a machine without a bound key, so a
//! simulator can never speak for a real machine (docs/security.md).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use parking_lot::RwLock;

/// The set of enrolled machine IDs. Cheap to clone; the watcher stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct EnrolledMachines {
    inner: Arc<Inner>,
}

struct Inner {
    machines: RwLock<HashSet<String>>,
    /// The watcher has caught up with the bucket. Until then (and while it re-watches after a
    /// lost connection) nothing may be taken for unenrolled: simulated check-ins are dropped.
    current: AtomicBool,
    /// Dropped with the last clone, which ends the watcher.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EnrolledMachines {
    /// Starts following `agent_keys` (the bucket of machine ID → bound key).
    pub fn follow(agent_keys: kv::Store) -> EnrolledMachines {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let enrolled = EnrolledMachines {
            inner: Arc::new(Inner {
                machines: RwLock::default(),
                current: AtomicBool::new(false),
                _stop: stop,
            }),
        };
        let weak = Arc::downgrade(&enrolled.inner);
        tokio::spawn(async move {
            tokio::select! {
                _ = watch(agent_keys, weak) => {}
                _ = stopped => {}
            }
        });
        enrolled
    }

    /// Whether a simulated agent may check in as `machine`: only if the watcher is current and
    /// no real agent enrolled it.
    pub fn allows_simulated(&self, machine: &str) -> bool {
        self.inner.current.load(Ordering::Acquire) && !self.inner.machines.read().contains(machine)
    }
}

/// Follows the bucket forever (a watch that ends is started again).
async fn watch(bucket: kv::Store, inner: std::sync::Weak<Inner>) {
    loop {
        // An empty bucket delivers nothing to a new watcher: it is current at once.
        let empty = match bucket.status().await {
            Ok(status) => status.values() == 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the agent keys; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // The last value of every key, then every change.
        let mut watch = match bucket.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the agent keys; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(state) = inner.upgrade() else { return };
        if empty {
            state.current.store(true, Ordering::Release);
        }
        drop(state);
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { break };
            let Some(state) = inner.upgrade() else { return };
            if entry.operation == kv::Operation::Put {
                state.machines.write().insert(entry.key);
            } else {
                state.machines.write().remove(&entry.key);
            }
            if entry.delta == 0 {
                state.current.store(true, Ordering::Release);
            }
        }
        // Enrollments made while the watch is down would be missed: refuse until current again.
        if let Some(state) = inner.upgrade() {
            state.current.store(false, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
