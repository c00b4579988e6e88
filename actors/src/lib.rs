//! Natter's actors and the types they speak.
//!
//! Layout:
//! - [`subjects`]: every NATS subject name, built in this one module.
//! - [`protocol`]: the JSON shapes on the wire: session commands and replies, chat events,
//!   agent check-ins and agent commands. Shared by the gateway and the agent.
//! - [`untrusted`]: text and JSON from machines made safe (bounded, printable, objects only).
//! - [`store`]: the JetStream stream and KV buckets, their configuration and replay helpers.
//! - [`session`]: one [`ractor`] actor per chat session, the only writer of its events, and
//!   the supervisor that feeds session commands from NATS to them.
//! - [`machines`]: the 8 check-in states, machine records, groups, scopes and the filter.
//! - [`partitions`]: which node owns which of the fixed partitions of sessions and machines
//!   (leases in KV), so every session and agent actor runs on one node at a time.
//! - [`fleet`]: one actor per agent turning check-ins and timers into its machine's status, and
//!   the fleet supervisor that feeds them.
//! - [`directory`]: operators and their argon2 password hashes.
//! - [`enrollment`], [`agent_login`], [`auth_callout`], [`revoke`]: per-machine agent identity:
//!   enrollment tokens and key bindings, what a connect must prove, the NATS auth callout that
//!   admits agents, and cutting off a revoked machine's connections.
//! - `supervision`: what both supervisors share: children started on demand, restarted when
//!   they fail.
//!
//! Actors never block: all I/O is async NATS I/O, and slow waits (an agent answering) run in
//! spawned tasks that report back with a message.

pub mod agent_login;
pub mod auth_callout;
pub mod directory;
pub mod enrollment;
pub mod fleet;
pub mod machines;
pub mod partitions;
pub mod protocol;
pub mod revoke;
pub mod roles;
pub mod session;
pub mod start;
pub mod store;
pub mod subjects;
mod supervision;
pub mod untrusted;

/// Milliseconds since the Unix epoch, the timestamp of every event and record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Compares secrets without leaking, through timing, how much of them matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The SHA-256 of a secret, in hex: what the stores keep instead of login cookies, chat-link
/// tokens and enrollment tokens.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}
