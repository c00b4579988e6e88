//! System tests, grouped by feature. Each test starts its own nats-server (real, with JetStream,
//! on a free port) and its own node in-process.

mod agent;
mod bad_input;
mod browser;
mod chat;
mod machines;
mod recovery;
mod resume;
mod retention;

use std::time::Duration;

/// Generous bound for anything that should take milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);
