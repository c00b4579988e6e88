//! What an agent's connection must prove before the auth callout asks the enrollment store,
//! and how often it may fail.
//!
//! nats-server sends each connection a nonce (only because `nats.conf` configures an nkey
//! user), the client signs it with its NKey seed, and the server passes user, password, nkey,
//! signature and nonce on to the callout. The server does not check an unknown nkey's signature
//! itself, so [`AgentLogin::from_request`] does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use crate::protocol::valid_machine_id;

/// A connect attempt that proved possession of its key.
#[derive(Debug, PartialEq, Eq)]
pub struct AgentLogin {
    /// The machine ID (the NATS user name).
    pub machine: String,
    /// The agent's public user key (`U…`), whose seed signed the server's nonce.
    pub public_key: String,
    /// The password: an enrollment token, or empty.
    pub password: String,
}

/// Why a connect attempt is refused before any lookup (logged at the node only).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadLogin {
    #[error("the user name is not a machine ID")]
    NotAMachine,
    #[error("no user nkey (an agent from before per-machine keys?)")]
    NoKey,
    #[error("the nkey is not a user public key")]
    NotAUserKey,
    #[error("no nonce in the request")]
    NoNonce,
    #[error("the nonce signature does not verify")]
    BadSignature,
}

impl AgentLogin {
    /// Checks the `nats` claims of an authorization request.
    pub fn from_request(nats: &Value) -> Result<AgentLogin, BadLogin> {
        let opts = &nats["connect_opts"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let machine = text(&opts["user"]);
        if !valid_machine_id(&machine) {
            return Err(BadLogin::NotAMachine);
        }
        let public_key = text(&opts["nkey"]);
        if public_key.is_empty() {
            return Err(BadLogin::NoKey);
        }
        verify_nonce(
            &public_key,
            nats["client_info"]["nonce"].as_str().unwrap_or_default(),
            opts["sig"].as_str().unwrap_or_default(),
        )?;
        Ok(AgentLogin {
            machine,
            public_key,
            password: text(&opts["pass"]),
        })
    }
}

/// Checks that `signature` (base64, URL-safe or standard, as nats-server accepts) is the
/// signature of `nonce` by the user key `public_key`.
pub fn verify_nonce(public_key: &str, nonce: &str, signature: &str) -> Result<(), BadLogin> {
    if !public_key.starts_with('U') {
        return Err(BadLogin::NotAUserKey);
    }
    let key = nkeys::KeyPair::from_public_key(public_key).map_err(|_| BadLogin::NotAUserKey)?;
    if nonce.is_empty() {
        return Err(BadLogin::NoNonce);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(signature))
        .map_err(|_| BadLogin::BadSignature)?;
    key.verify(nonce.as_bytes(), &signature)
        .map_err(|_| BadLogin::BadSignature)
}

/// Failed attempts per key (the callout uses machine ID + public key): after
/// [`FailureThrottle::MAX_FAILURES`] failures within [`FailureThrottle::WINDOW`], further
/// attempts are refused unchecked until the window ends, so retrying costs the node nothing and
/// gains nothing.
#[derive(Default)]
pub struct FailureThrottle {
    failures: parking_lot::Mutex<HashMap<String, (u32, Instant)>>,
}

impl FailureThrottle {
    pub const MAX_FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Bounds the memory a flood of made-up machine IDs can take.
    const MAX_TRACKED: usize = 100_000;

    /// Whether `machine` has failed too often lately.
    pub fn blocked(&self, machine: &str) -> bool {
        let failures = self.failures.lock();
        failures
            .get(machine)
            .is_some_and(|(n, since)| *n >= Self::MAX_FAILURES && since.elapsed() < Self::WINDOW)
    }

    /// Counts a failed attempt.
    pub fn failed(&self, machine: &str) {
        let mut failures = self.failures.lock();
        if failures.len() >= Self::MAX_TRACKED {
            failures.retain(|_, (_, since)| since.elapsed() < Self::WINDOW);
        }
        let entry = failures
            .entry(machine.to_string())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= Self::WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets the failures of a machine that logged in.
    pub fn succeeded(&self, machine: &str) {
        self.failures.lock().remove(machine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(user: &str, key: &nkeys::KeyPair, nonce: &str, signed: &[u8]) -> Value {
        json!({
            "connect_opts": {
                "user": user, "pass": "nenr_x", "nkey": key.public_key(),
                "sig": URL_SAFE_NO_PAD.encode(key.sign(signed).unwrap()),
            },
            "client_info": {"nonce": nonce},
        })
    }

    #[test]
    fn a_signed_nonce_proves_the_key() {
        let key = nkeys::KeyPair::new_user();
        let login = AgentLogin::from_request(&request("pc1.sales.acme", &key, "n0nce", b"n0nce"))
            .expect("admitted");
        assert_eq!(login.machine, "pc1.sales.acme");
        assert_eq!(login.public_key, key.public_key());
        assert_eq!(login.password, "nenr_x");
    }

    #[test]
    fn a_signature_over_another_nonce_or_by_another_key_is_refused() {
        let key = nkeys::KeyPair::new_user();
        let other = request("pc1.sales.acme", &key, "n0nce", b"older-nonce");
        assert_eq!(
            AgentLogin::from_request(&other),
            Err(BadLogin::BadSignature)
        );
        let mut forged = request("pc1.sales.acme", &key, "n0nce", b"n0nce");
        forged["connect_opts"]["nkey"] = json!(nkeys::KeyPair::new_user().public_key());
        assert_eq!(
            AgentLogin::from_request(&forged),
            Err(BadLogin::BadSignature)
        );
    }

    #[test]
    fn no_nonce_no_key_or_a_non_user_key_is_refused() {
        let key = nkeys::KeyPair::new_user();
        let no_nonce = request("pc1.sales.acme", &key, "", b"");
        assert_eq!(AgentLogin::from_request(&no_nonce), Err(BadLogin::NoNonce));
        let mut no_key = request("pc1.sales.acme", &key, "n", b"n");
        no_key["connect_opts"]["nkey"] = json!("");
        assert_eq!(AgentLogin::from_request(&no_key), Err(BadLogin::NoKey));
        let account = nkeys::KeyPair::new_account();
        let wrong_kind = request("pc1.sales.acme", &account, "n", b"n");
        assert_eq!(
            AgentLogin::from_request(&wrong_kind),
            Err(BadLogin::NotAUserKey)
        );
        let not_machine = request("natter-simulator", &key, "n", b"n");
        assert_eq!(
            AgentLogin::from_request(&not_machine),
            Err(BadLogin::NotAMachine)
        );
    }

    #[test]
    fn repeated_failures_block_that_machine_only() {
        let throttle = FailureThrottle::default();
        for _ in 0..FailureThrottle::MAX_FAILURES {
            assert!(!throttle.blocked("pc1.sales.acme"));
            throttle.failed("pc1.sales.acme");
        }
        assert!(throttle.blocked("pc1.sales.acme"));
        assert!(!throttle.blocked("pc2.sales.acme"));
        throttle.succeeded("pc1.sales.acme");
        assert!(!throttle.blocked("pc1.sales.acme"));
    }
}
