//! Keeps the child running: restarts it when it dies, without ever crash-looping.
//!
//! A server that cannot start (its store or port held by another process) would die again at
//! once; so the back-off grows on every failed start and is reset only after a child has run
//! for a while, and a port that a stranger took ends the supervision with a reason the node
//! reports before it exits.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{EmbeddedError, NatsServerOptions, data_dir, preflight, start_child};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long before it died was healthy: restart it quickly again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long the server gets to stop on SIGTERM before it is killed. A healthy server stops in
/// well under a second; one that does not is frozen or stuck, and the node must exit within 5 s
/// of its own SIGTERM. Its store survives a SIGKILL: what it wrote is in the OS's page cache.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub(super) struct Supervisor {
    pub opts: NatsServerOptions,
    pub port: u16,
    pub pid_file: Option<PathBuf>,
    pub stop: CancellationToken,
    pub failure: watch::Sender<Option<String>>,
}

enum Restart {
    Running(Child),
    Stopped,
    GaveUp(EmbeddedError),
}

impl Supervisor {
    /// Records the child's pid where the node's data directory keeps it.
    pub fn record_pid(&self, child: &Child) -> Result<(), EmbeddedError> {
        match (&self.pid_file, child.id()) {
            (Some(file), Some(pid)) => data_dir::write_private(file, pid.to_string().as_bytes()),
            _ => Ok(()),
        }
    }

    /// Runs until stopped, or until the server cannot be restarted.
    pub async fn run(self, mut child: Child) {
        let mut backoff = MIN_BACKOFF;
        let mut started = Instant::now();
        loop {
            tokio::select! {
                status = child.wait() => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = MIN_BACKOFF;
                    }
                    tracing::error!(?status, retry_in = ?backoff, "nats-server exited; restarting it");
                    match self.restart(&mut backoff).await {
                        Restart::Running(c) => {
                            child = c;
                            started = Instant::now();
                            if let Err(e) = self.record_pid(&child) {
                                tracing::warn!(error = %e, "could not record the nats-server pid");
                            }
                        }
                        Restart::Stopped => break,
                        Restart::GaveUp(e) => {
                            tracing::error!(error = %e, "cannot restart the embedded nats-server");
                            let _ = self.failure.send(Some(e.to_string()));
                            break;
                        }
                    }
                }
                _ = self.stop.cancelled() => {
                    stop_child(&mut child).await;
                    break;
                }
            }
        }
        if let Some(file) = &self.pid_file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Starts a new child after `backoff`, waiting (and backing off further) while another
    /// server holds our store.
    async fn restart(&self, backoff: &mut Duration) -> Restart {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(*backoff) => {}
                _ = self.stop.cancelled() => return Restart::Stopped,
            }
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            match preflight(&self.opts, self.port) {
                Ok(()) => {}
                Err(e @ EmbeddedError::StoreInUse { .. }) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "not restarting nats-server yet");
                    continue;
                }
                Err(e) => return Restart::GaveUp(e),
            }
            match start_child(&self.opts, self.port).await {
                Ok(child) => return Restart::Running(child),
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "could not restart nats-server")
                }
            }
        }
    }
}

/// SIGTERM, then SIGKILL if the server has not stopped within [`STOP_GRACE`].
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
