//! The fleet: the supervisor that keeps every machine of its partitions, as a compact record
//! while nothing goes on and as an actor while something does.
//!
//! - [`FleetSupervisor`] ([`supervisor`]) subscribes to every agent's check-in subject and keeps
//!   only the check-ins of machines in partitions this node owns ([`crate::partitions`]), and
//!   queue-subscribes to the machine requests of those partitions; it validates check-ins ([`checkin`]: the subject
//!   names the machine and every field is bounded; a check-in whose body names another machine,
//!   does not parse or has a bad field is counted, logged and dropped), takes a check-in that
//!   changes nothing worth writing into the machine's [`agent::Resting`] record (no actor, no
//!   I/O), writes the record a check-in of a resting machine changes itself (no actor: the
//!   acknowledgement is awaited by a task of its own), routes anything else to the machine's
//!   [`AgentActor`] (started at once, seeded with the
//!   record; idle actors go back to records after `rest_after`), reads every known machine of a
//!   partition when the node takes it, and keeps
//!   one timer wheel of "offline at" deadlines so 100k agents need one timer, not 100k.
//!   An idle actor costs ≥ 7.6 KiB, a record ≈ 0.2 KiB (see `scripts/bench-fleet`).
//!   Simulated agents (`natter-agent --simulate`) check in on a subject family of their own;
//!   their check-ins count only for machines no real agent enrolled ([`enrolled`]).
//! - [`AgentActor`] ([`agent`]) turns check-ins and timer ticks into the machine's status and
//!   keeps its [`crate::machines::MachineRecord`] in the machines KV bucket (the one writer of
//!   that key while it runs; the supervisor while the machine rests). Gateways watch the bucket, so each change reaches browsers without polling. It
//!   writes on a change of status or details, and otherwise at most every `refresh` so a quiet
//!   fleet costs little.

pub mod agent;
pub mod checkin;
pub mod enrolled;
pub mod supervisor;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream::kv;

pub use agent::{AgentActor, AgentMsg};
pub use checkin::{CheckinError, is_simulated_checkin, parse_checkin};
pub use enrolled::EnrolledMachines;
pub use supervisor::{FleetMsg, FleetSupervisor};

/// Counters a node exposes about check-ins.
#[derive(Default, Debug)]
pub struct FleetStats {
    pub accepted: AtomicU64,
    /// Malformed check-ins, and simulated ones for a machine a real agent enrolled.
    pub rejected: AtomicU64,
    /// Check-ins of suspended agents (they change nothing).
    pub ignored: AtomicU64,
    /// Machine records written to KV.
    pub writes: AtomicU64,
}

/// Fleet settings.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// An agent is offline after this many missed intervals.
    pub offline_after: u32,
    /// A record whose status did not change is rewritten at most this often.
    pub refresh: Duration,
    /// How often the timer wheel is checked.
    pub sweep: Duration,
    /// An agent actor that got no message for this long, with nothing pending, goes back to a
    /// record.
    pub rest_after: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            offline_after: 3,
            refresh: Duration::from_secs(300),
            sweep: Duration::from_millis(250),
            rest_after: Duration::from_secs(1),
        }
    }
}

pub struct FleetArgs {
    pub client: async_nats::Client,
    pub partitions: crate::partitions::Partitions,
    pub machines: kv::Store,
    pub stats: Arc<FleetStats>,
    pub config: FleetConfig,
    /// The machines a real agent enrolled (simulated check-ins for them are refused).
    pub enrolled: EnrolledMachines,
}

/// What the supervisor and every agent actor share.
struct Shared {
    client: async_nats::Client,
    partitions: crate::partitions::Partitions,
    machines: kv::Store,
    stats: Arc<FleetStats>,
    config: FleetConfig,
    enrolled: EnrolledMachines,
}
