//! Test harness for Natter's system tests: real nats-server processes on free ports, real nodes
//! in-process (through [`natter::Node`], the same seam `main` uses), real agents, and HTTP/SSE
//! clients that behave like browsers (cookies, `Origin`, `Last-Event-ID`).
//!
//! Layout:
//! - [`scenario`]: the fixture most tests start from — [`Scenario`] builds nats + node + agents +
//!   logged-in operators in one line; [`Fixture::open_chat`] opens a chat and logs the machine
//!   user in.
//! - [`nats`]: [`TestNats`], a nats-server from the repository's `nats.conf`, killed on drop;
//!   [`TestCluster`], three of them in one cluster (JetStream replicas 3), each killable.
//! - [`node`]: [`TestNode`], a node in-process on a free port, and its operators.
//! - [`agent`]: [`TestAgent`], a real agent whose opener records the URLs it is asked to open.
//! - `enroll`: each machine's key file and enrollment tokens ([`TestNats::agent_config`]).
//! - [`browser`]: [`Browser`], the HTTP client of one browser profile.
//! - `loginctl`: `FakeLoginctl`, a `loginctl` answering with recorded sessions (Linux agent tests).
//! - [`sse`]: [`Sse`], an open event stream, and helpers to read chat messages from it.

pub mod agent;
pub mod browser;
mod enroll;
#[cfg(unix)]
pub mod loginctl;
pub mod nats;
pub mod node;
pub mod scenario;
pub mod sse;

use std::path::PathBuf;
use std::time::Duration;

pub use agent::TestAgent;
pub use browser::{Browser, session_id};
pub use nats::{TestCluster, TestNats};
pub use node::{TestNode, operator_password};
pub use reqwest::StatusCode;
pub use scenario::{Fixture, Scenario};
pub use sse::{Sse, SseEvent, texts};

/// Generous bound for anything that should take milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it holds, or panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
