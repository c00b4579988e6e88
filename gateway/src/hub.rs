//! The fan-out hub: one ordered JetStream consumer per gateway process on all sessions' events,
//! delivering each event to the SSE connections that carry its session.
//!
//! No consumer per connection: connections register the sessions they carry, and the hub pushes
//! into their bounded channels. A connection that falls behind (channel full) is cut off; its
//! browser reconnects and resumes from its `Last-Event-ID`, so nothing is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::StreamExt;
use natter_actors::store::{StoredEvent, Stores};
use natter_actors::subjects;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events buffered per connection before the hub gives up on it.
const CONNECTION_BUFFER: usize = 1024;

type Subscribers = HashMap<String, Vec<(u64, mpsc::Sender<Arc<StoredEvent>>)>>;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
    /// Highest stream sequence the hub has seen.
    position: AtomicU64,
    live: AtomicBool,
}

/// A connection's place in the hub; dropping it unregisters the connection.
pub struct Registration {
    hub: Hub,
    id: u64,
    sessions: Vec<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id, &self.sessions);
    }
}

impl Hub {
    /// Starts following the events stream from its current end.
    pub async fn start(
        stores: Stores,
        shutdown: CancellationToken,
    ) -> Result<Hub, natter_actors::store::StoreError> {
        // Start from a known sequence, never "new": a consumer recreated after an error then
        // resumes exactly where the last one stopped.
        let mut events = stores.events.clone();
        let position = events
            .info()
            .await
            .map_err(|e| natter_actors::store::StoreError::new("reading the events stream", e))?
            .state
            .last_sequence;
        let hub = Hub {
            inner: Arc::new(HubInner {
                subscribers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                position: AtomicU64::new(position),
                live: AtomicBool::new(false),
            }),
        };
        let pump = hub.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = pump.follow(stores) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        // Connections must not register before the consumer exists (they would miss events
        // appended in between), so wait for it, briefly.
        for _ in 0..100 {
            if hub.is_live() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(hub)
    }

    /// Whether the hub's consumer is running.
    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::Relaxed)
    }

    async fn follow(&self, stores: Stores) {
        loop {
            let position = self.inner.position.load(Ordering::Relaxed);
            let deliver_policy = consumer::DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            };
            let started = stores
                .events
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: stores.client.new_inbox(),
                    filter_subject: subjects::ALL_EVENTS.into(),
                    deliver_policy,
                    ..Default::default()
                })
                .await;
            let mut messages = match started {
                Ok(c) => match c.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "hub: could not follow events; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "hub: could not create its consumer; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            self.inner.live.store(true, Ordering::Relaxed);
            while let Some(item) = messages.next().await {
                let msg = match item {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "hub: consumer error; restarting it");
                        break;
                    }
                };
                let Ok(info) = msg.info() else { continue };
                let seq = info.stream_sequence;
                let Some(session) = subjects::session_of_events(msg.subject.as_str()) else {
                    continue;
                };
                let event = Arc::new(StoredEvent {
                    seq,
                    session: session.to_string(),
                    payload: msg.payload.clone(),
                });
                self.inner.position.store(seq, Ordering::Relaxed);
                self.deliver(event);
            }
            self.inner.live.store(false, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn deliver(&self, event: Arc<StoredEvent>) {
        let mut overflowed = Vec::new();
        {
            let subs = self
                .inner
                .subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(list) = subs.get(&event.session) else {
                return;
            };
            for (id, tx) in list {
                if tx.try_send(event.clone()).is_err() {
                    overflowed.push(*id);
                }
            }
        }
        if !overflowed.is_empty() {
            // Cut slow (or gone) connections off: dropping every sender of a connection closes
            // its channel, which ends its SSE stream; the browser then resumes.
            let mut subs = self
                .inner
                .subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for list in subs.values_mut() {
                list.retain(|(id, _)| !overflowed.contains(id));
            }
            subs.retain(|_, l| !l.is_empty());
        }
    }

    /// Registers a connection for `sessions`; events arrive on the returned receiver.
    pub fn register(
        &self,
        sessions: &[String],
    ) -> (Registration, mpsc::Receiver<Arc<StoredEvent>>) {
        let (tx, rx) = mpsc::channel(CONNECTION_BUFFER);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self
                .inner
                .subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for s in sessions {
                subs.entry(s.clone()).or_default().push((id, tx.clone()));
            }
        }
        (
            Registration {
                hub: self.clone(),
                id,
                sessions: sessions.to_vec(),
            },
            rx,
        )
    }

    fn unregister(&self, id: u64, sessions: &[String]) {
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for s in sessions {
            if let Some(list) = subs.get_mut(s) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    subs.remove(s);
                }
            }
        }
    }

    /// Number of registered connection-session pairs (for metrics and tests).
    pub fn registrations(&self) -> usize {
        let subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        subs.values().map(Vec::len).sum()
    }
}
