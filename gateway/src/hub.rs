//! The fan-out hub: one ordered JetStream consumer per gateway process on all sessions' events,
//! delivering each event to the SSE connections that carry its session.
//!
//! No consumer per connection: connections register the sessions they carry, and the hub pushes
//! into their bounded queues. A connection that falls behind (queue full) is cut off; its
//! browser reconnects and resumes from its `Last-Event-ID`, so nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::StreamExt;
use futures::task::AtomicWaker;
use natter_actors::store::{StoredEvent, Stores};
use natter_actors::subjects;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// Events buffered per connection before the hub gives up on it.
const CONNECTION_BUFFER: usize = 1024;

type Subscribers = HashMap<String, Vec<(u64, Arc<Queue>)>>;

/// One connection's queue of live events: the hub pushes, the connection's stream pops.
///
/// A plain locked `VecDeque` and a waker rather than a tokio channel: an idle connection's queue
/// allocates nothing but this small struct (a bounded tokio channel costs ≈ 0.9 KiB up front,
/// and idle SSE connections are counted in tens of thousands per gateway).
struct Queue {
    events: Mutex<VecDeque<Arc<StoredEvent>>>,
    waker: AtomicWaker,
    /// Set when the hub cut the connection off; the stream ends after what is queued.
    closed: AtomicBool,
}

impl Queue {
    /// Queues `event`; false when the connection is too far behind (or already cut off).
    fn push(&self, event: Arc<StoredEvent>) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        {
            let mut q = self.events.lock();
            if q.len() >= CONNECTION_BUFFER {
                return false;
            }
            q.push_back(event);
        }
        self.waker.wake();
        true
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.waker.wake();
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<StoredEvent>>> {
        if let Some(e) = self.pop() {
            return Poll::Ready(Some(e));
        }
        self.waker.register(cx.waker());
        // Re-check: an event (or the close) may have come in before the waker was registered.
        match self.pop() {
            Some(e) => Poll::Ready(Some(e)),
            None if self.closed.load(Ordering::Relaxed) => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn pop(&self) -> Option<Arc<StoredEvent>> {
        let mut q = self.events.lock();
        let e = q.pop_front();
        if q.is_empty() && q.capacity() > 64 {
            // Give a burst's buffer back once the connection has caught up.
            *q = VecDeque::new();
        }
        e
    }
}

/// The receiving end of a connection's queue.
pub struct LiveEvents {
    queue: Arc<Queue>,
}

impl LiveEvents {
    /// The next live event; `None` once the hub has cut the connection off.
    pub async fn recv(&mut self) -> Option<Arc<StoredEvent>> {
        std::future::poll_fn(|cx| self.queue.poll_pop(cx)).await
    }
}

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
            let subs = self.inner.subscribers.lock();
            let Some(list) = subs.get(&event.session) else {
                return;
            };
            for (id, queue) in list {
                if !queue.push(event.clone()) {
                    queue.close();
                    overflowed.push(*id);
                }
            }
        }
        if !overflowed.is_empty() {
            // Cut slow (or gone) connections off: their queue is closed, which ends their SSE
            // stream after what is queued; the browser then resumes.
            let mut subs = self.inner.subscribers.lock();
            for list in subs.values_mut() {
                list.retain(|(id, _)| !overflowed.contains(id));
            }
            subs.retain(|_, l| !l.is_empty());
        }
    }

    /// Registers a connection for `sessions`; events arrive on the returned [`LiveEvents`].
    pub fn register(&self, sessions: &[String]) -> (Registration, LiveEvents) {
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self.inner.subscribers.lock();
            for s in sessions {
                subs.entry(s.clone()).or_default().push((id, queue.clone()));
            }
        }
        (
            Registration {
                hub: self.clone(),
                id,
                sessions: sessions.to_vec(),
            },
            LiveEvents { queue },
        )
    }

    fn unregister(&self, id: u64, sessions: &[String]) {
        let mut subs = self.inner.subscribers.lock();
        for s in sessions {
            if let Some(list) = subs.get_mut(s) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    subs.remove(s);
                }
            }
        }
    }
}
