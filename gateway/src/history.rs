//! The newest events of recently read sessions, kept so that a chat window opened again (by the
//! same operator, another member or after a reload) does not read them from the stream once
//! more: replaying a 10k-event history costs the gateway and nats-server ≈ 60 ms of CPU, the
//! long pole of a join in the browser (docs/benchmarks.md, "Join in the browser").
//!
//! Exact, not merely recent: every read asks the stream for the session's first and last
//! sequence (two direct gets, which a read from the stream needs too). Events are immutable once
//! stored and a session's sequences only grow, so what is kept is the answer's head, events
//! that retention removed (below the first sequence) are dropped, and only what is newer than
//! the last kept event is read from the stream. A stream that started over (a last sequence
//! below what is kept) empties the entry.
//!
//! Bounded: at most `budget` bytes of events in all (the least recently read session goes
//! first), at most [`MAX_EVENTS`] per session; a budget of 0 turns it off.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use natter_actors::store::{StoreError, Stores};
use parking_lot::Mutex;

/// The most events kept per session: the most a window asks for (`events?last=`).
pub const MAX_EVENTS: usize = 20_000;
/// What an event costs besides its JSON (its seq, the `Bytes` and the queue's slot).
const EVENT_OVERHEAD: usize = 48;

/// One event as browsers receive it: its seq and its JSON with `seq` first.
#[derive(Clone, Debug)]
pub struct WireEvent {
    pub seq: u64,
    pub json: Bytes,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// What the gateway kept (with newer events read from the stream, if any).
    Kept,
    /// Read from the stream.
    Stream,
}

/// A session's newest events, oldest first.
#[derive(Debug)]
struct Kept {
    events: VecDeque<WireEvent>,
    /// Whether `events` begins at the session's first retained event (a window asking for more
    /// gets them all).
    whole: bool,
    bytes: usize,
}

impl Kept {
    fn last_seq(&self) -> u64 {
        self.events.back().map_or(0, |e| e.seq)
    }

    /// The newest `n`, or all of them when fewer are kept but those are the whole history;
    /// `None` when more are wanted than are kept.
    fn newest(&self, n: usize) -> Option<Vec<WireEvent>> {
        if self.events.len() < n && !self.whole {
            return None;
        }
        let skip = self.events.len().saturating_sub(n);
        Some(self.events.iter().skip(skip).cloned().collect())
    }
}

fn weigh(events: &VecDeque<WireEvent>) -> usize {
    events.iter().map(|e| e.json.len() + EVENT_OVERHEAD).sum()
}

/// The cache: session id → its newest events, least recently read first out.
pub struct HistoryCache {
    budget: usize,
    /// `natter_history_kept_bytes`: what `bytes()` says, for `/metrics`.
    kept_bytes: prometheus::IntGauge,
    inner: Mutex<Inner>,
}

struct Inner {
    sessions: lru::LruCache<String, Arc<Kept>>,
    bytes: usize,
}

impl HistoryCache {
    /// A cache of at most `budget` bytes of events (0: nothing is kept), which sets `kept_bytes`
    /// to the bytes it keeps.
    pub fn new(budget: usize, kept_bytes: prometheus::IntGauge) -> HistoryCache {
        HistoryCache {
            budget,
            kept_bytes,
            inner: Mutex::new(Inner {
                sessions: lru::LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Bytes of events kept now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// The newest `n` (1 ..= [`MAX_EVENTS`]) retained events of `session`, in order: from what
    /// is kept when it is still the stream's answer, with newer events read from the stream;
    /// otherwise read from the stream, and kept.
    pub async fn newest(
        &self,
        stores: &Stores,
        session: &str,
        n: usize,
    ) -> Result<(Vec<WireEvent>, Source), StoreError> {
        let n = n.min(MAX_EVENTS);
        let last = stores.last_event_seq(session).await?;
        if last == 0 || n == 0 {
            self.forget(session);
            return Ok((Vec::new(), Source::Stream));
        }
        let first = stores.first_event_seq(session).await?.unwrap_or(last);
        if let Some(kept) = self.get(session) {
            if kept.last_seq() <= last {
                let mut events: VecDeque<WireEvent> = kept
                    .events
                    .iter()
                    .filter(|e| e.seq >= first)
                    .cloned()
                    .collect();
                let mut whole = kept.whole;
                // The newer events are at most `last - kept`: when even all of them would not
                // make `n`, the stream is read once, below, not twice.
                let newer_at_most = usize::try_from(last - kept.last_seq()).unwrap_or(usize::MAX);
                let enough = whole || events.len().saturating_add(newer_at_most) >= n;
                if enough && kept.last_seq() < last {
                    let newer = read(stores, session, kept.last_seq() + 1).await?;
                    events.extend(newer.into_iter().filter(|e| e.seq > kept.last_seq()));
                }
                while events.len() > MAX_EVENTS {
                    events.pop_front();
                    whole = false;
                }
                let bytes = weigh(&events);
                let kept = Kept {
                    events,
                    whole,
                    bytes,
                };
                if let Some(answer) = kept.newest(n).filter(|_| enough) {
                    self.put(session, kept, Put::Update);
                    return Ok((answer, Source::Kept));
                }
            } else {
                // The stream started over: what is kept is of another life.
                self.forget(session);
            }
        }
        let events: VecDeque<WireEvent> = stores
            .recent_events(session, n)
            .await?
            .into_iter()
            .map(|e| WireEvent {
                seq: e.seq,
                json: Bytes::from(e.to_history_json()),
            })
            .collect();
        // Fewer than asked for: the session has no more. As many: the whole history if its
        // first is the session's first.
        let whole = events.len() < n || events.front().is_some_and(|e| e.seq <= first);
        let bytes = weigh(&events);
        let kept = Kept {
            events,
            whole,
            bytes,
        };
        let answer = kept.events.iter().cloned().collect();
        self.put(session, kept, Put::Read);
        Ok((answer, Source::Stream))
    }

    fn get(&self, session: &str) -> Option<Arc<Kept>> {
        self.inner.lock().sessions.get(session).cloned()
    }

    fn forget(&self, session: &str) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.sessions.pop(session) {
            inner.bytes -= old.bytes;
        }
        self.show(inner.bytes);
    }

    fn show(&self, bytes: usize) {
        self.kept_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Keeps `kept` for `session` (unless it alone is over the budget), then drops the least
    /// recently read sessions until the budget holds. Of two reads of one session at once (a
    /// window asks for its newest 200 and its whole history together) the one that holds more
    /// stays; an older answer never replaces a newer one.
    fn put(&self, session: &str, kept: Kept, how: Put) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.sessions.peek(session) {
            let holds_more = old.last_seq() == kept.last_seq()
                && old.events.len() > kept.events.len()
                && how == Put::Read;
            if old.last_seq() > kept.last_seq() || holds_more {
                return;
            }
            let old_bytes = old.bytes;
            inner.sessions.pop(session);
            inner.bytes -= old_bytes;
        }
        if kept.bytes == 0 || kept.bytes > self.budget {
            self.show(inner.bytes);
            return;
        }
        inner.bytes += kept.bytes;
        inner.sessions.put(session.to_string(), Arc::new(kept));
        while inner.bytes > self.budget {
            match inner.sessions.pop_lru() {
                Some((_, old)) => inner.bytes -= old.bytes,
                None => break,
            }
        }
        self.show(inner.bytes);
    }
}

/// How a [`HistoryCache::put`] came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Put {
    /// Read from the stream.
    Read,
    /// What was kept, with what retention removed dropped and newer events added.
    Update,
}

/// The session's events from `start_seq` to the stream's tail.
async fn read(
    stores: &Stores,
    session: &str,
    start_seq: u64,
) -> Result<Vec<WireEvent>, StoreError> {
    let mut replay = stores.replay(&[session], start_seq).await?;
    let mut events = Vec::new();
    while let Some(e) = replay.next().await {
        let e = e?;
        events.push(WireEvent {
            seq: e.seq,
            json: Bytes::from(e.to_history_json()),
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(seqs: std::ops::RangeInclusive<u64>, whole: bool) -> Kept {
        let events: VecDeque<WireEvent> = seqs
            .map(|seq| WireEvent {
                seq,
                json: Bytes::from(format!("{{\"seq\":{seq}}}")),
            })
            .collect();
        let bytes = weigh(&events);
        Kept {
            events,
            whole,
            bytes,
        }
    }

    fn gauge() -> prometheus::IntGauge {
        prometheus::IntGauge::new("kept", "kept").expect("a gauge")
    }

    fn seqs(events: &[WireEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn the_newest_come_from_what_is_kept_only_when_it_holds_them() {
        let part = kept(11..=20, false);
        assert_eq!(seqs(&part.newest(3).unwrap()), [18, 19, 20]);
        assert_eq!(
            seqs(&part.newest(10).unwrap()),
            (11..=20).collect::<Vec<_>>()
        );
        assert!(part.newest(11).is_none(), "older events may exist");
        let whole = kept(11..=20, true);
        assert_eq!(
            whole.newest(500).unwrap().len(),
            10,
            "the session has no more"
        );
    }

    #[test]
    fn the_least_recently_read_session_goes_first_when_over_budget() {
        let one = kept(1..=10, true).bytes;
        let cache = HistoryCache::new(one * 2, gauge());
        cache.put("a", kept(1..=10, true), Put::Read);
        cache.put("b", kept(1..=10, true), Put::Read);
        assert!(cache.get("a").is_some()); // read: "b" is now the least recent
        cache.put("c", kept(1..=10, true), Put::Read);
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!(cache.bytes(), one * 2);
        assert_eq!(
            cache.kept_bytes.get(),
            (one * 2) as i64,
            "what /metrics shows"
        );
        // Alone over the budget: not kept, and nothing else is dropped for it.
        cache.put("big", kept(1..=100, true), Put::Read);
        assert!(cache.get("big").is_none());
        assert_eq!(cache.bytes(), one * 2);
        // An older answer does not replace a newer one; forgetting frees its bytes.
        cache.put("a", kept(1..=5, true), Put::Read);
        assert_eq!(cache.get("a").unwrap().last_seq(), 10);
        // The newest few read at once with the whole history do not replace it; what was kept,
        // less what retention removed, does.
        cache.put("a", kept(8..=10, false), Put::Read);
        assert_eq!(cache.get("a").unwrap().events.len(), 10);
        cache.put("a", kept(4..=10, true), Put::Update);
        assert_eq!(cache.get("a").unwrap().events.len(), 7);
        cache.forget("a");
        cache.forget("c");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing() {
        let cache = HistoryCache::new(0, gauge());
        cache.put("a", kept(1..=3, true), Put::Read);
        assert!(cache.get("a").is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
