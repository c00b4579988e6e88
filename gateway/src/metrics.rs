//! `GET /metrics`: the node's counters in the Prometheus text format, every series labelled
//! with the node's id (`node`).
//!
//! Where something happens (a send accepted, an SSE event written, an error answered) counting
//! costs one atomic increment. What other parts count already (limit refusals, check-ins, the
//! actors running, the machine directory) is read when Prometheus scrapes. No series names a
//! session, a user or a machine.
//!
//! Access: with `metrics.token` configured, only requests bearing it (`Authorization: Bearer`);
//! without, only loopback clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use natter_actors::machines::MachineStatus;
use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::error::{ApiError, ErrorKind};
use crate::limits::LimitStats;
use crate::readiness::stores_round_trip;

/// How often the NATS round trip is measured.
pub const RTT_EVERY: Duration = Duration::from_secs(5);

/// What the node outside the gateway reports at each scrape (the broker provides it).
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeReadings {
    pub session_actors: usize,
    pub agent_actors: usize,
    pub checkins_accepted: u64,
    pub checkins_rejected: u64,
    pub checkins_ignored: u64,
    /// Machine records written to KV (a change or the periodic refresh).
    pub machine_writes: u64,
    /// Whether the actors' NATS connection (the gateway has its own) is up.
    pub actors_connected: bool,
    /// Partitions of sessions and machines this node owns now.
    pub partitions_owned: usize,
    /// Whether every partition was held by a live node at the last look (this one or others).
    pub partitions_all_held: bool,
}

/// Reads [`NodeReadings`] on demand.
pub type NodeProbe = Box<dyn Fn() -> NodeReadings + Send + Sync>;

/// The two kinds of event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Sessions,
    Machines,
}

impl StreamKind {
    fn label(self) -> &'static str {
        match self {
            StreamKind::Sessions => "sessions",
            StreamKind::Machines => "machines",
        }
    }
}

/// One gateway's metrics and the registry they are served from.
pub struct Metrics {
    registry: Registry,
    messages_in: IntCounter,
    /// Live events this gateway's hub received (republished messages): its share of the fan-out.
    events_received: IntCounter,
    history_reads: IntCounterVec,
    history_kept_bytes: IntGauge,
    sse_events: IntCounterVec,
    sse_clients: IntGaugeVec,
    errors: IntCounterVec,
    refusals: IntCounterVec,
    hashes_running: IntGauge,
    agents: IntGaugeVec,
    session_actors: IntGauge,
    agent_actors: IntGauge,
    partitions_owned: IntGauge,
    checkins: IntCounterVec,
    machine_writes: IntCounter,
    nats_connected: IntGaugeVec,
    nats_rtt: Histogram,
    probe: OnceLock<NodeProbe>,
    /// One scrape at a time: counters copied from elsewhere advance by a difference.
    scrape: Mutex<()>,
}

/// Registers `metric` and hands it back. Names are fixed here, so a failure is a bug.
fn registered<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    registered(r, IntCounter::new(name, help).expect("valid counter"))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    registered(r, IntGauge::new(name, help).expect("valid gauge"))
}

fn counters(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    registered(
        r,
        IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counters"),
    )
}

fn gauges(r: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    registered(
        r,
        IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid gauges"),
    )
}

impl Metrics {
    /// The metrics of the node `node_id`: every series carries `node="<node_id>"`.
    pub fn new(node_id: &str) -> Metrics {
        let labels = HashMap::from([("node".to_string(), node_id.to_string())]);
        let r =
            Registry::new_custom(Some("natter".into()), Some(labels)).expect("a valid node label");
        let info = gauges(
            &r,
            "node_info",
            "This node (always 1), by version",
            "version",
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let rtt = HistogramOpts::new(
            "nats_rtt_seconds",
            "Round trip of a JetStream request (the events stream's info)",
        )
        .buckets(prometheus::exponential_buckets(0.0001, 4.0, 8).expect("valid buckets"));
        let sse_events = counters(&r, "sse_events_total", "SSE events written", "stream");
        let sse_clients = gauges(&r, "sse_clients", "Open event streams", "stream");
        // Both kinds are shown from the start, at 0, rather than appearing with the first stream.
        for kind in [StreamKind::Sessions, StreamKind::Machines] {
            sse_events.with_label_values(&[kind.label()]);
            sse_clients.with_label_values(&[kind.label()]);
        }
        let history_reads = counters(
            &r,
            "history_reads_total",
            "Chat histories answered (events?last=N), by where from",
            "from",
        );
        for from in ["kept", "stream"] {
            history_reads.with_label_values(&[from]);
        }
        Metrics {
            history_reads,
            history_kept_bytes: gauge(
                &r,
                "history_kept_bytes",
                "Bytes of chat histories this gateway keeps (http.history_cache_mib)",
            ),
            messages_in: counter(&r, "messages_in_total", "Chat messages accepted"),
            events_received: counter(
                &r,
                "gateway_events_received_total",
                "Live events this gateway received (only the sessions its clients follow)",
            ),
            sse_events,
            sse_clients,
            errors: counters(&r, "http_errors_total", "API errors answered", "kind"),
            refusals: counters(&r, "limit_refusals_total", "Limit refusals", "kind"),
            hashes_running: gauge(&r, "password_hashes_running", "Password hashes running"),
            agents: gauges(&r, "agents", "Machines by state (whole fleet)", "state"),
            session_actors: gauge(&r, "session_actors", "Session actors on this node"),
            agent_actors: gauge(&r, "agent_actors", "Agent actors on this node"),
            partitions_owned: gauge(&r, "partitions_owned", "Partitions this node owns"),
            checkins: counters(&r, "checkins_total", "Agent check-ins", "result"),
            machine_writes: counter(
                &r,
                "machine_record_writes_total",
                "Machine records written to KV by this node",
            ),
            nats_connected: gauges(&r, "nats_connected", "NATS connection up", "connection"),
            nats_rtt: registered(&r, Histogram::with_opts(rtt).expect("valid histogram")),
            registry: r,
            probe: OnceLock::new(),
            scrape: Mutex::new(()),
        }
    }

    /// Sets what the node reports at each scrape (once; later calls are ignored).
    pub fn set_node_probe(&self, probe: NodeProbe) {
        let _ = self.probe.set(probe);
    }

    /// The node's readings now (all zero until the node set its probe).
    pub fn node_readings(&self) -> Option<NodeReadings> {
        self.probe.get().map(|probe| probe())
    }

    /// Counts a chat message accepted.
    pub fn message_in(&self) {
        self.messages_in.inc();
    }

    /// The counter of live events received, incremented by the hub.
    pub fn events_received(&self) -> IntCounter {
        self.events_received.clone()
    }

    /// The gauge of bytes of chat histories kept, set by the history cache.
    pub fn history_kept_bytes(&self) -> IntGauge {
        self.history_kept_bytes.clone()
    }

    /// Counts a chat history answered, from the gateway's kept copy or read from the stream.
    pub fn history_read(&self, source: crate::history::Source) {
        let from = match source {
            crate::history::Source::Kept => "kept",
            crate::history::Source::Stream => "stream",
        };
        self.history_reads.with_label_values(&[from]).inc();
    }

    /// Counts an error answered (called with each response that carries an [`ErrorKind`]).
    pub fn error_answered(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[&wire_name(kind)]).inc();
    }

    /// Counts an open event stream of `kind` for as long as the returned meter lives.
    pub fn stream_opened(&self, kind: StreamKind) -> StreamMeter {
        let clients = self.sse_clients.with_label_values(&[kind.label()]);
        clients.inc();
        StreamMeter {
            events: self.sse_events.with_label_values(&[kind.label()]),
            clients,
        }
    }

    fn record_rtt(&self, rtt: Duration) {
        self.nats_rtt.observe(rtt.as_secs_f64());
    }

    /// Reads what others count, then encodes every series.
    pub fn render(&self, gw: &Gateway) -> String {
        let _one_at_a_time = self.scrape.lock();
        let node = self.node_readings().unwrap_or_default();
        self.session_actors.set(node.session_actors as i64);
        self.agent_actors.set(node.agent_actors as i64);
        self.partitions_owned.set(node.partitions_owned as i64);
        for (result, total) in [
            ("accepted", node.checkins_accepted),
            ("rejected", node.checkins_rejected),
            ("ignored", node.checkins_ignored),
        ] {
            advance_to(&self.checkins.with_label_values(&[result]), total);
        }
        advance_to(&self.machine_writes, node.machine_writes);
        let limits = gw.limits().stats();
        for (kind, total) in refusals(&limits) {
            advance_to(&self.refusals.with_label_values(&[kind]), total);
        }
        self.hashes_running.set(limits.hashes_running as i64);
        let by_status = gw.directory().status_counts();
        for status in MachineStatus::ALL {
            let n = by_status.get(&status).copied().unwrap_or(0);
            self.agents
                .with_label_values(&[&wire_name(status)])
                .set(n as i64);
        }
        let gateway_up =
            gw.stores().client.connection_state() == async_nats::connection::State::Connected;
        for (connection, up) in [("gateway", gateway_up), ("actors", node.actors_connected)] {
            self.nats_connected
                .with_label_values(&[connection])
                .set(i64::from(up));
        }
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed family, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Whether a scrape from `client` bearing `authorization` may read the metrics.
    pub fn check_access(
        token: Option<&str>,
        client: Option<IpAddr>,
        authorization: Option<&str>,
    ) -> Result<(), ApiError> {
        match token {
            Some(token) => {
                let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
                if bearer.is_some_and(|b| {
                    natter_actors::constant_time_eq(b.as_bytes(), token.as_bytes())
                }) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        ErrorKind::Unauthenticated,
                        "metrics need the metrics token (Authorization: Bearer …)",
                    ))
                }
            }
            None if client.is_some_and(|ip| ip.is_loopback()) => Ok(()),
            None => Err(ApiError::forbidden(
                "metrics are served to loopback clients only (or set metrics.token)",
            )),
        }
    }
}

/// An open event stream's share of the metrics: counts its events, and is one of the open
/// streams until dropped.
pub struct StreamMeter {
    events: IntCounter,
    clients: IntGauge,
}

impl StreamMeter {
    pub fn event_written(&self) {
        self.events.inc();
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        self.clients.dec();
    }
}

/// Advances `counter` to `total`, a count kept elsewhere that only grows.
fn advance_to(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Every refusal counter of the limits, by kind.
fn refusals(s: &LimitStats) -> [(&'static str, u64); 8] {
    [
        ("logins_throttled", s.logins_throttled),
        ("hashing_busy", s.hashing_busy),
        ("connections_refused", s.connections_refused),
        (
            "connections_refused_per_address",
            s.connections_refused_per_address,
        ),
        ("connection_timeouts", s.connection_timeouts),
        ("body_timeouts", s.body_timeouts),
        ("streams_refused", s.streams_refused),
        ("hosts_refused", s.hosts_refused),
    ]
}

/// A value as it is spelled on the wire (`never_checked_in`, `not_found`, …).
fn wire_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Measures the NATS round trip every [`RTT_EVERY`] until shutdown.
pub(crate) async fn measure_nats(gw: Gateway, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RTT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Ok(rtt) = stores_round_trip(gw.stores()).await {
            gw.metrics().record_rtt(rtt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_reads_metrics() {
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let remote = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(Metrics::check_access(None, local, None).is_ok());
        let refused = Metrics::check_access(None, remote, None).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn with_a_token_everyone_needs_it() {
        let token = Some("s3cret");
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let wrong = Metrics::check_access(token, local, Some("Bearer nope")).unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::Unauthenticated);
        assert!(Metrics::check_access(token, local, None).is_err());
        let remote = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(Metrics::check_access(token, remote, Some("Bearer s3cret")).is_ok());
    }

    #[test]
    fn series_carry_the_node_and_meters_count() {
        let m = Metrics::new("node-a");
        m.message_in();
        let meter = m.stream_opened(StreamKind::Sessions);
        meter.event_written();
        m.error_answered(ErrorKind::NotFound);
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r#"natter_messages_in_total{node="node-a"} 1"#),
            "{text}"
        );
        let sessions = |v: &IntGaugeVec| v.with_label_values(&["sessions"]).get();
        assert_eq!(sessions(&m.sse_clients), 1);
        assert_eq!(m.sse_events.with_label_values(&["sessions"]).get(), 1);
        assert_eq!(m.errors.with_label_values(&["not_found"]).get(), 1);
        drop(meter);
        assert_eq!(sessions(&m.sse_clients), 0);
    }

    #[test]
    fn counters_kept_elsewhere_advance_to_their_total() {
        let c = IntCounter::new("c", "c").unwrap();
        advance_to(&c, 3);
        advance_to(&c, 5);
        advance_to(&c, 5);
        assert_eq!(c.get(), 5);
        assert_eq!(wire_name(MachineStatus::NeverCheckedIn), "never_checked_in");
    }
}
