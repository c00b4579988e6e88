//! The fleet: one actor per agent, and the supervisor that feeds them.
//!
//! - [`FleetSupervisor`] ([`supervisor`]) queue-subscribes to every agent's check-in subject and
//!   to machine requests (so each reaches one node), validates check-ins (the subject names the
//!   machine; a check-in whose body names another machine or does not parse is counted, logged
//!   and dropped), routes them to the machine's [`AgentActor`] (started on demand, and at start
//!   for every known machine), and keeps one timer wheel of "offline at" deadlines so 100k agents
//!   need one timer, not 100k.
//! - [`AgentActor`] ([`agent`]) turns check-ins and timer ticks into the machine's status and
//!   keeps its [`crate::machines::MachineRecord`] in the machines KV bucket (the only writer of
//!   that key). Gateways watch the bucket, so each change reaches browsers without polling. It
//!   writes on a change of status or details, and otherwise at most every `refresh` so a quiet
//!   fleet costs little.

pub mod agent;
pub mod supervisor;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream::kv;

use crate::protocol::{Checkin, valid_machine_id};
use crate::subjects;

pub use agent::{AgentActor, AgentMsg};
pub use supervisor::{FleetMsg, FleetSupervisor};

/// Counters a node exposes about check-ins.
#[derive(Default, Debug)]
pub struct FleetStats {
    pub accepted: AtomicU64,
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
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            offline_after: 3,
            refresh: Duration::from_secs(300),
            sweep: Duration::from_millis(250),
        }
    }
}

pub struct FleetArgs {
    pub client: async_nats::Client,
    pub machines: kv::Store,
    pub stats: Arc<FleetStats>,
    pub config: FleetConfig,
}

/// What the supervisor and every agent actor share.
struct Shared {
    client: async_nats::Client,
    machines: kv::Store,
    stats: Arc<FleetStats>,
    config: FleetConfig,
}

/// Why a check-in was dropped.
#[derive(Debug, thiserror::Error)]
pub enum CheckinError {
    #[error("not a check-in subject")]
    NotACheckinSubject,
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("unsupported check-in version {0}")]
    Version(u32),
    /// The body names another machine than the subject (or no valid machine ID).
    #[error("check-in for {claimed:?} on {subject}'s subject")]
    WrongMachine { claimed: String, subject: String },
}

/// Validates a check-in against the subject it came on.
pub fn parse_checkin(subject: &str, payload: &[u8]) -> Result<Checkin, CheckinError> {
    let machine = subjects::machine_of_checkin(subject).ok_or(CheckinError::NotACheckinSubject)?;
    let c: Checkin = serde_json::from_slice(payload).map_err(CheckinError::Json)?;
    if c.v != 1 {
        return Err(CheckinError::Version(c.v));
    }
    if c.machine != machine || !valid_machine_id(&c.machine) {
        return Err(CheckinError::WrongMachine {
            claimed: c.machine,
            subject: machine,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkin(machine: &str, v: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "v": v, "machine": machine, "agent_version": "1.0", "os": "linux",
            "ip": "10.0.0.1", "user": "bob", "interval_secs": 30,
        }))
        .unwrap()
    }

    #[test]
    fn a_checkin_on_its_own_subject_is_accepted() {
        let subject = subjects::agent_checkin("pc1.acme");
        let c = parse_checkin(&subject, &checkin("pc1.acme", 1)).unwrap();
        assert_eq!(c.machine, "pc1.acme");
        assert!(c.audit_done && c.remote_control);
    }

    #[test]
    fn bad_checkins_say_why() {
        let subject = subjects::agent_checkin("pc1.acme");
        let err = |s: &str, body: &[u8]| parse_checkin(s, body).unwrap_err();
        assert!(matches!(
            err("elsewhere", &checkin("pc1.acme", 1)),
            CheckinError::NotACheckinSubject
        ));
        assert!(matches!(err(&subject, b"{"), CheckinError::Json(_)));
        assert!(matches!(
            err(&subject, &checkin("pc1.acme", 2)),
            CheckinError::Version(2)
        ));
        assert_eq!(
            err(&subject, &checkin("pc2.acme", 1)).to_string(),
            "check-in for \"pc2.acme\" on pc1.acme's subject"
        );
    }
}
