//! Connecting to NATS, forever: an agent often starts before the network or the server is up,
//! and an auth callout that is busy refuses a login that will succeed a little later. So a failed
//! connect is logged and retried with exponential backoff and full jitter (a fleet that lost its
//! server does not come back in lockstep); only a malformed server URL is fatal. Once connected,
//! async-nats reconnects by itself with the same backoff and resubscribes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{ConnectErrorKind, Event};
use tokio_util::sync::CancellationToken;

use crate::{AgentConfig, AgentError};

/// Exponential backoff with full jitter: retry `n` (0 = the first) waits a uniformly random time
/// between zero and `first · 2ⁿ`, capped at `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

/// After a network failure (refused, unreachable, DNS, timeout).
pub const NETWORK_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(250),
    cap: Duration::from_secs(30),
};

/// After the server refused the credentials: slower, since a busy auth callout needs relief
/// and a wrong secret will not fix itself quickly.
pub const AUTH_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(2),
    cap: Duration::from_secs(60),
};

impl Backoff {
    /// The longest wait before retry `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.first
            .saturating_mul(2u32.saturating_pow(retry.min(31)))
            .min(self.cap)
    }

    /// A random wait before retry `retry`, in `0..=ceiling(retry)`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(rand::random::<f64>())
    }
}

fn is_auth_failure(kind: ConnectErrorKind) -> bool {
    matches!(
        kind,
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
    )
}

fn options(config: &AgentConfig, name: &str) -> async_nats::ConnectOptions {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(seed) = &config.nkey_seed {
        // Sent along with user and password: the node checks the nonce's signature and the
        // machine's binding. async-nats signs the nonce anew at every reconnect.
        options = options.nkey(seed.clone());
    }
    if let Some(ca) = &config.nats_ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    // Replies to the agent's own requests (the start page) come to an inbox of its machine's, the
    // only one its permissions let it read; the simulator's connections have one of their own.
    let inbox = match config.nats_user == config.machine {
        true => natter_actors::subjects::agent_inbox_prefix(&config.machine),
        false => natter_actors::subjects::SIMULATOR_INBOX_PREFIX.to_string(),
    };
    options
        .name(name)
        .custom_inbox_prefix(inbox)
        .user_and_password(config.nats_user.clone(), config.nats_password.clone())
        // async-nats calls this for its own reconnects, attempt 1 first; its default is a
        // jitter-free 4 s cap, which makes a fleet reconnect in lockstep.
        .reconnect_delay_callback(|attempt| match attempt {
            0 | 1 => Duration::ZERO,
            n => NETWORK_BACKOFF.delay(u32::try_from(n - 2).unwrap_or(u32::MAX)),
        })
        .event_callback({
            let name = name.to_string();
            let first_connect = Arc::new(AtomicBool::new(true));
            move |event| {
                let first = matches!(event, Event::Connected)
                    && first_connect.swap(false, Ordering::Relaxed);
                log_event(name.clone(), first, event)
            }
        })
}

/// Logs what async-nats reports: one line per lost connection, per failed reconnect attempt and
/// per reconnect (the first connect is logged by [`connect`]).
async fn log_event(name: String, first_connect: bool, event: Event) {
    match event {
        Event::Connected if first_connect => {}
        Event::Connected => tracing::info!(connection = %name, "reconnected to NATS"),
        Event::Disconnected => tracing::warn!(connection = %name, "lost the NATS connection"),
        Event::ClientError(e) => {
            tracing::warn!(connection = %name, reason = %e, "NATS reconnect attempt failed")
        }
        other => tracing::debug!(connection = %name, event = %other, "NATS event"),
    }
}

/// Connects as an agent, retrying until it succeeds; `Ok(None)` when `shutdown` came first.
pub async fn connect(
    config: &AgentConfig,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, AgentError> {
    let (mut network_failures, mut auth_failures) = (0u32, 0u32);
    loop {
        let attempt = tokio::select! {
            result = options(config, name).connect(&config.nats_url) => result,
            _ = shutdown.cancelled() => return Ok(None),
        };
        let error = match attempt {
            Ok(client) => {
                tracing::info!(connection = %name, url = %config.nats_url, "connected to NATS");
                return Ok(Some(client));
            }
            Err(e) if e.kind() == ConnectErrorKind::ServerParse => {
                return Err(AgentError::Connect(e));
            }
            Err(e) => e,
        };
        let wait = if is_auth_failure(error.kind()) {
            auth_failures = auth_failures.saturating_add(1);
            AUTH_BACKOFF.delay(auth_failures - 1)
        } else {
            network_failures = network_failures.saturating_add(1);
            NETWORK_BACKOFF.delay(network_failures - 1)
        };
        tracing::warn!(
            connection = %name,
            url = %config.nats_url,
            reason = %error,
            attempt = network_failures + auth_failures,
            retry_in = ?wait,
            "could not connect to NATS; retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_backoff_doubles_from_250_ms_to_a_30_s_cap() {
        let ceilings: Vec<u64> = (0..10)
            .map(|n| NETWORK_BACKOFF.ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(NETWORK_BACKOFF.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn authorization_failures_back_off_slower() {
        for n in 0..20 {
            assert!(AUTH_BACKOFF.ceiling(n) >= NETWORK_BACKOFF.ceiling(n));
        }
        assert_eq!(AUTH_BACKOFF.ceiling(0), Duration::from_secs(2));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let delays: Vec<Duration> = (0..200).map(|_| NETWORK_BACKOFF.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "delays are spread, not one value");
    }
}
