//! The fan-out hub: each gateway receives only the live events of the sessions its own
//! connections follow, and delivers them to those connections in stream order.
//!
//! The events stream republishes every stored event on `natter.live.<session>` (core NATS) with
//! its stream sequence and the sequence of the session's previous event (headers). The hub
//! keeps one subscription per session that at least one local connection follows (kept a short
//! grace after the last one leaves, so a browser's reconnect does not churn it). No JetStream
//! consumer, per connection or per session.
//!
//! - **Order.** One task (the pump) reads every subscription. A subscription's waker queues its
//!   key, and the pump drains the queued ones until none is left, then delivers what it collected
//!   sorted by sequence: NATS delivers the republished events on our one connection in stream
//!   order, and the client library hands an event to its subscription (and wakes it) before it
//!   reads the next one, so a drained batch holds every event older than any event in it.
//! - **Gaps.** Per session the pump remembers the last sequence it delivered. An event whose
//!   previous sequence is above that was preceded by events the hub missed (interest still
//!   propagating in a NATS cluster, a dropped message): they are read from the stream and
//!   delivered first, in the session's order. A new subscription is checked once against the
//!   session's last stored sequence [`FIRST_CHECK_AFTER`] later, for a gap with no event after it.
//! - **Reconnects.** Messages published while the gateway's NATS connection was down are lost to
//!   it. When the connection has come back (its connect count moved), the hub ends every live
//!   stream, before delivering anything more, and forgets every subscription: browsers reconnect
//!   and resume exactly from their `Last-Event-ID` through the replay path.
//!
//! - **Signals.** With each session's events the hub subscribes to its signals ("is typing",
//!   "seen": `signals.rs`), which are not stored and have no sequence: they are pushed to the
//!   session's connections as they come, outside the events' order, and dropped (never cutting a
//!   connection off) when a connection's queue is half full.
//!
//! Connections register the sessions they carry, and the hub pushes into their bounded queues.
//! A connection that falls behind (queue full) is cut off; its browser reconnects and resumes
//! from its `Last-Event-ID`, so nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use futures::StreamExt;
use futures::task::AtomicWaker;
use natter_actors::store::{
    LAST_SEQUENCE_HEADER, SEQUENCE_HEADER, StoreError, StoredEvent, Stores,
};
use natter_actors::subjects;
use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use crate::signals::Signal;

/// Events buffered per connection before the hub gives up on it.
const CONNECTION_BUFFER: usize = 1024;

/// How long a session's subscription outlives its last connection (a browser reconnects after
/// about 1 s).
pub const GRACE: Duration = Duration::from_secs(5);

/// When a new subscription is checked against the session's last stored event.
pub const FIRST_CHECK_AFTER: Duration = Duration::from_millis(250);

/// How often the pump looks at the connection and at idle subscriptions.
const TICK: Duration = Duration::from_millis(100);

/// Longest a new subscription (subscribe, flush, read the session's last sequence) may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the hub hands a connection: a session's stored event, or a signal.
pub enum Live {
    Event(Arc<LiveEvent>),
    Signal(Arc<Signal>),
}

/// A stored event on its way to connections, with its SSE frame as stored (what operators
/// read), made at most once however many connections write it.
pub struct LiveEvent {
    pub stored: StoredEvent,
    frame: std::sync::OnceLock<bytes::Bytes>,
}

impl LiveEvent {
    fn new(stored: StoredEvent) -> Arc<LiveEvent> {
        Arc::new(LiveEvent {
            stored,
            frame: std::sync::OnceLock::new(),
        })
    }

    /// The event's frame as stored, shared.
    pub fn frame(&self) -> bytes::Bytes {
        self.frame
            .get_or_init(|| crate::sse::chat_event(&self.stored))
            .clone()
    }
}

/// One connection's queue of live events: the hub pushes, the connection's stream pops.
///
/// A plain locked `VecDeque` and a waker rather than a tokio channel: an idle connection's queue
/// allocates nothing but this small struct (a bounded tokio channel costs ≈ 0.9 KiB up front,
/// and idle SSE connections are counted in tens of thousands per gateway).
struct Queue {
    events: Mutex<VecDeque<Live>>,
    waker: AtomicWaker,
    /// Set when the hub cut the connection off; the stream ends after what is queued.
    closed: AtomicBool,
}

impl Queue {
    /// Queues `event`; false when the connection is too far behind (or already cut off).
    fn push(&self, event: Arc<LiveEvent>) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        {
            let mut q = self.events.lock();
            if q.len() >= CONNECTION_BUFFER {
                return false;
            }
            q.push_back(Live::Event(event));
        }
        self.waker.wake();
        true
    }

    /// Queues a signal if the connection is well within its buffer (a signal never takes the
    /// room events need: a full queue cuts the connection off).
    fn push_signal(&self, signal: Arc<Signal>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut q = self.events.lock();
            if q.len() >= CONNECTION_BUFFER / 2 {
                return;
            }
            q.push_back(Live::Signal(signal));
        }
        self.waker.wake();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.waker.wake();
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Live>> {
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

    fn pop(&self) -> Option<Live> {
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
    /// The next live event or signal; `None` once the hub has cut the connection off.
    pub async fn recv(&mut self) -> Option<Live> {
        std::future::poll_fn(|cx| self.queue.poll_pop(cx)).await
    }
}

/// A session some connection follows (or followed less than [`GRACE`] ago).
struct Followed {
    /// Tells this subscription from an earlier or later one of the same session.
    generation: u64,
    conns: Vec<(u64, Arc<Queue>)>,
    /// Initialised once the subscription is in place: the first registration makes it, the
    /// others wait for it.
    subscribed: Arc<OnceCell<()>>,
    /// When the last connection left.
    idle_since: Option<Instant>,
}

/// From registrations and timers to the pump.
enum Command {
    /// A new subscription, with the session's last stored sequence read after it was in place.
    Follow {
        session: String,
        generation: u64,
        subscriber: async_nats::Subscriber,
        signals: async_nats::Subscriber,
        last_seq: u64,
    },
    /// The session's last stored sequence, [`FIRST_CHECK_AFTER`] after it was followed.
    Check {
        session: String,
        generation: u64,
        last_seq: u64,
    },
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    stores: Stores,
    followed: Mutex<HashMap<String, Followed>>,
    next_id: AtomicU64,
    commands: mpsc::UnboundedSender<Command>,
    /// Republished events this gateway received (its share of the cluster's fan-out).
    received: IntCounter,
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
    /// Starts the hub on the stores' NATS connection; `received` counts the events it receives.
    pub async fn start(
        stores: Stores,
        received: IntCounter,
        shutdown: CancellationToken,
    ) -> Result<Hub, StoreError> {
        let (commands, rx) = mpsc::unbounded_channel();
        let hub = Hub {
            inner: Arc::new(HubInner {
                stores,
                followed: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                commands,
                received,
            }),
        };
        let pump = Pump {
            hub: hub.clone(),
            subscriptions: HashMap::new(),
            ready: Arc::new(Ready::default()),
            commands: rx,
            connects: hub.connects(),
        };
        // Unconstrained: the pump drains subscriptions until none has a message left, which
        // tokio's cooperative budget would otherwise interrupt with spurious `Pending`s.
        tokio::spawn(tokio::task::unconstrained(pump.run(shutdown)));
        Ok(hub)
    }

    /// Whether live events can reach this gateway: its NATS connection is up.
    pub fn is_live(&self) -> bool {
        self.inner.stores.client.connection_state() == State::Connected
    }

    /// How many sessions the hub subscribes to now (including those in their grace).
    pub fn followed_sessions(&self) -> usize {
        self.inner.followed.lock().len()
    }

    fn connects(&self) -> u64 {
        self.inner
            .stores
            .client
            .statistics()
            .connects
            .load(Ordering::Relaxed)
    }

    /// Registers a connection for `sessions` and returns once each session's subscription is in
    /// place on the NATS server (so events stored from now on reach the hub); events arrive on
    /// the returned [`LiveEvents`].
    pub async fn register(
        &self,
        sessions: &[String],
    ) -> Result<(Registration, LiveEvents), StoreError> {
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut pending = Vec::new();
        {
            let mut followed = self.inner.followed.lock();
            for s in sessions {
                let f = followed.entry(s.clone()).or_insert_with(|| Followed {
                    generation: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
                    conns: Vec::new(),
                    subscribed: Arc::new(OnceCell::new()),
                    idle_since: None,
                });
                f.conns.push((id, queue.clone()));
                f.idle_since = None;
                pending.push((s.clone(), f.generation, f.subscribed.clone()));
            }
        }
        // Made before waiting: a registration given up half-way unregisters itself.
        let registration = Registration {
            hub: self.clone(),
            id,
            sessions: sessions.to_vec(),
        };
        futures::future::try_join_all(pending.into_iter().map(|(s, generation, cell)| {
            let hub = self.clone();
            async move {
                cell.get_or_try_init(|| hub.subscribe(s, generation))
                    .await
                    .map(|_| ())
            }
        }))
        .await?;
        Ok((registration, LiveEvents { queue }))
    }

    /// Subscribes to `session`'s live events and hands the subscription to the pump.
    async fn subscribe(&self, session: String, generation: u64) -> Result<(), StoreError> {
        let client = &self.inner.stores.client;
        let made = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            let subscriber = client
                .subscribe(subjects::session_live(&session))
                .await
                .map_err(|e| StoreError::new("following a session's events", e))?;
            let signals = client
                .subscribe(subjects::session_signal(&session))
                .await
                .map_err(|e| StoreError::new("following a session's signals", e))?;
            // The server has the interest once the flush returns.
            client
                .flush()
                .await
                .map_err(|e| StoreError::new("following a session's events", e))?;
            let last_seq = self.inner.stores.last_event_seq(&session).await?;
            Ok::<_, StoreError>((subscriber, signals, last_seq))
        })
        .await
        .map_err(|e| StoreError::new("following a session's events", e))??;
        let (subscriber, signals, last_seq) = made;
        self.inner
            .commands
            .send(Command::Follow {
                session,
                generation,
                subscriber,
                signals,
                last_seq,
            })
            .map_err(|e| StoreError::new("following a session's events", e.to_string()))
    }

    fn unregister(&self, id: u64, sessions: &[String]) {
        let mut followed = self.inner.followed.lock();
        for s in sessions {
            if let Some(f) = followed.get_mut(s) {
                f.conns.retain(|(i, _)| *i != id);
                if f.conns.is_empty() {
                    f.idle_since = Some(Instant::now());
                }
            }
        }
    }

    /// Pushes `event` to every connection following its session.
    fn deliver(&self, event: Arc<LiveEvent>) {
        let mut followed = self.inner.followed.lock();
        let Some(f) = followed.get_mut(&event.stored.session) else {
            return;
        };
        let before = f.conns.len();
        // Cut slow (or gone) connections off: their queue is closed, which ends their SSE stream
        // after what is queued; the browser then resumes. They stay registered for the other
        // sessions they carry, where pushing to a closed queue fails at once.
        f.conns.retain(|(_, queue)| {
            let kept = queue.push(event.clone());
            if !kept {
                queue.close();
            }
            kept
        });
        if before > 0 && f.conns.is_empty() {
            f.idle_since = Some(Instant::now());
        }
    }

    /// Pushes `signal` to every connection following its session that has room for it.
    fn deliver_signal(&self, signal: Signal) {
        let followed = self.inner.followed.lock();
        let Some(f) = followed.get(&signal.session) else {
            return;
        };
        let signal = Arc::new(signal);
        for (_, queue) in &f.conns {
            // A busy queue loses the signal, and only that: signals may be lost (docs/api.md).
            queue.push_signal(signal.clone());
        }
    }

    /// Ends every connection following `session` (they resume through the replay path).
    fn close_session(&self, session: &str) {
        let mut followed = self.inner.followed.lock();
        if let Some(f) = followed.get_mut(session) {
            for (_, queue) in f.conns.drain(..) {
                queue.close();
            }
            f.idle_since = Some(Instant::now());
        }
    }
}

/// Keys of subscriptions that have something to read, filled by their wakers.
#[derive(Default)]
struct Ready {
    keys: Mutex<Vec<u64>>,
    pump: AtomicWaker,
}

/// A subscription's waker: queues its key and wakes the pump.
struct SubscriptionWaker {
    key: u64,
    ready: Arc<Ready>,
}

impl Wake for SubscriptionWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.keys.lock().push(self.key);
        self.ready.pump.wake();
    }
}

/// One session's subscription, owned by the pump.
struct Subscription {
    session: String,
    subscriber: async_nats::Subscriber,
    /// The session's signals, read with the same waker.
    signals: async_nats::Subscriber,
    waker: Waker,
    /// The last sequence of the session the hub delivered (or knew to be stored when it
    /// subscribed: connections replay up to there themselves).
    delivered: u64,
}

/// A received event: its sequence, its session's previous sequence, and the event.
struct Received {
    key: u64,
    seq: u64,
    previous: u64,
    event: StoredEvent,
}

/// The task that reads every subscription and delivers in stream order.
struct Pump {
    hub: Hub,
    /// By generation.
    subscriptions: HashMap<u64, Subscription>,
    ready: Arc<Ready>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The connection's connect count when the hub last looked: a change is a reconnect.
    connects: u64,
}

impl Pump {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ready = self.ready.clone();
            let readable = std::future::poll_fn(|cx| {
                ready.pump.register(cx.waker());
                if ready.keys.lock().is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            });
            enum Woken {
                Command(Command),
                Readable,
                Tick,
            }
            let woken = tokio::select! {
                _ = shutdown.cancelled() => return,
                command = self.commands.recv() => match command {
                    Some(command) => Woken::Command(command),
                    None => return,
                },
                _ = readable => Woken::Readable,
                _ = tick.tick() => Woken::Tick,
            };
            match woken {
                Woken::Command(command) => self.handle(command).await,
                Woken::Readable => {}
                Woken::Tick => {
                    self.notice_reconnect();
                    self.forget_idle();
                }
            }
            let batch = self.drain();
            if !batch.is_empty() && !self.notice_reconnect() {
                for received in batch {
                    self.process(received).await;
                }
            }
        }
    }

    /// Ends every live stream and forgets every subscription if the connection came back since
    /// the hub last looked (what was published meanwhile never reached it). True if it did.
    fn notice_reconnect(&mut self) -> bool {
        let connects = self.hub.connects();
        if connects == self.connects {
            return false;
        }
        self.connects = connects;
        let mut followed = self.hub.inner.followed.lock();
        let streams: usize = followed.values().map(|f| f.conns.len()).sum();
        tracing::warn!(
            streams,
            "hub: the NATS connection came back; ending live streams so they resume"
        );
        for f in followed.values() {
            for (_, queue) in &f.conns {
                queue.close();
            }
        }
        followed.clear();
        self.subscriptions.clear();
        true
    }

    /// Drops the subscriptions nobody has followed for [`GRACE`].
    fn forget_idle(&mut self) {
        let mut followed = self.hub.inner.followed.lock();
        followed.retain(|_, f| {
            let keep = f.idle_since.is_none_or(|since| since.elapsed() < GRACE);
            if !keep {
                self.subscriptions.remove(&f.generation);
            }
            keep
        });
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Follow {
                session,
                generation,
                subscriber,
                signals,
                last_seq,
            } => {
                let current = self
                    .hub
                    .inner
                    .followed
                    .lock()
                    .get(&session)
                    .is_some_and(|f| f.generation == generation);
                if !current {
                    return; // forgotten meanwhile (a reconnect, or nobody follows it any more)
                }
                let waker = Waker::from(Arc::new(SubscriptionWaker {
                    key: generation,
                    ready: self.ready.clone(),
                }));
                // Polled once by the next drain, which registers its waker.
                self.ready.keys.lock().push(generation);
                self.subscriptions.insert(
                    generation,
                    Subscription {
                        session: session.clone(),
                        subscriber,
                        signals,
                        waker,
                        delivered: last_seq,
                    },
                );
                let (stores, commands) = (
                    self.hub.inner.stores.clone(),
                    self.hub.inner.commands.clone(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(FIRST_CHECK_AFTER).await;
                    if let Ok(last_seq) = stores.last_event_seq(&session).await {
                        let _ = commands.send(Command::Check {
                            session,
                            generation,
                            last_seq,
                        });
                    }
                });
            }
            Command::Check {
                session,
                generation,
                last_seq,
            } => {
                // What the subscription already holds is delivered first; a missed tail then
                // shows as `last_seq` above what was delivered.
                let batch = self.drain();
                if self.notice_reconnect() {
                    return;
                }
                for received in batch {
                    self.process(received).await;
                }
                let Some(sub) = self.subscriptions.get(&generation) else {
                    return;
                };
                if last_seq > sub.delivered {
                    tracing::info!(%session, "hub: a new subscription missed events; filling");
                    self.fill(generation, last_seq + 1).await;
                }
            }
        }
    }

    /// Reads every subscription that has something, until none has: see the module's "Order".
    fn drain(&mut self) -> Vec<Received> {
        let mut batch = Vec::new();
        loop {
            let mut keys = std::mem::take(&mut *self.ready.keys.lock());
            if keys.is_empty() {
                break;
            }
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let Some(sub) = self.subscriptions.get_mut(&key) else {
                    continue;
                };
                let mut cx = Context::from_waker(&sub.waker);
                while let Poll::Ready(Some(message)) = sub.subscriber.poll_next_unpin(&mut cx) {
                    self.hub.inner.received.inc();
                    if let Some(received) = parse(key, &sub.session, message) {
                        batch.push(received);
                    }
                }
                while let Poll::Ready(Some(message)) = sub.signals.poll_next_unpin(&mut cx) {
                    if let Some(signal) = parse_signal(&sub.session, &message) {
                        self.hub.deliver_signal(signal);
                    }
                }
            }
        }
        batch.sort_unstable_by_key(|r| r.seq);
        batch
    }

    /// Delivers one received event, after what its session missed before it.
    async fn process(&mut self, received: Received) {
        let Some(sub) = self.subscriptions.get(&received.key) else {
            return;
        };
        if received.seq <= sub.delivered {
            return; // already delivered (filled from the stream before it arrived)
        }
        if received.previous > sub.delivered {
            tracing::info!(session = %sub.session, "hub: events missed; filling from the stream");
            self.fill(received.key, received.seq).await;
        }
        if let Some(sub) = self.subscriptions.get_mut(&received.key) {
            sub.delivered = received.seq;
        }
        self.hub.deliver(LiveEvent::new(received.event));
    }

    /// Delivers the session's stored events after what was delivered and before `before`.
    async fn fill(&mut self, key: u64, before: u64) {
        let Some(sub) = self.subscriptions.get(&key) else {
            return;
        };
        let (session, after) = (sub.session.clone(), sub.delivered);
        match self
            .hub
            .inner
            .stores
            .session_events_between(&session, after, before)
            .await
        {
            Ok(events) => {
                for event in events {
                    if let Some(sub) = self.subscriptions.get_mut(&key) {
                        sub.delivered = sub.delivered.max(event.seq);
                    }
                    self.hub.deliver(LiveEvent::new(event));
                }
            }
            Err(e) => {
                // The connections cannot get these events live: they resume from the stream.
                tracing::warn!(%session, error = %e, "hub: could not fill a gap; ending its streams");
                self.hub.close_session(&session);
            }
        }
        if let Some(sub) = self.subscriptions.get_mut(&key) {
            sub.delivered = sub.delivered.max(before - 1);
        }
    }
}

/// A republished event, from its headers; `None` (and logged) if they are not what the stream
/// sends.
fn parse(key: u64, session: &str, message: async_nats::Message) -> Option<Received> {
    let header =
        |name: &str| -> Option<u64> { message.headers.as_ref()?.get(name)?.as_str().parse().ok() };
    let (Some(seq), Some(previous)) = (header(SEQUENCE_HEADER), header(LAST_SEQUENCE_HEADER))
    else {
        tracing::warn!(subject = %message.subject, "hub: a live event without its sequences");
        return None;
    };
    if subjects::session_of_live(message.subject.as_str()) != Some(session) {
        return None;
    }
    Some(Received {
        key,
        seq,
        previous,
        event: StoredEvent {
            seq,
            session: session.to_string(),
            payload: message.payload,
        },
    })
}

/// A signal of `session`; `None` (and logged) if it is not one.
fn parse_signal(session: &str, message: &async_nats::Message) -> Option<Signal> {
    if subjects::session_of_signal(message.subject.as_str()) != Some(session) {
        return None;
    }
    match serde_json::from_slice::<Signal>(&message.payload) {
        Ok(signal) if signal.session == session => Some(signal),
        _ => {
            tracing::warn!(subject = %message.subject, "hub: not a signal of this session");
            None
        }
    }
}
