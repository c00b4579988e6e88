//! NATS auth callout for agents: each agent logs in with its own key, and gets permissions for
//! its own machine's subjects only.
//!
//! nats-server sends every connection that is not a static user (broker, simulator) to
//! `$SYS.REQ.USER.AUTH` as a JWT. An agent connects with its machine ID as user name, its NKey
//! (public key + signature of the server's nonce) and, the first time only, an enrollment token
//! as password. This service checks the signature ([`AgentLogin`]), that the machine is not
//! suspended, and that the key is the one bound to the machine, or enrolls it with the token
//! ([`Enrollment`]). It then answers with a user JWT, signed by the account key named as
//! `issuer` in `nats.conf`, that allows publishing only `natter.agent.<its token>.checkin` and
//! `.start` (asking for the start page), subscribing only `natter.agent.<its token>.cmd` and its
//! own inbox `natter.inbox.<its token>.>`, and answering requests it received. Every
//! refusal tells the client only "not authorized"; the node logs the reason.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{Value, json};

use crate::agent_login::{AgentLogin, FailureThrottle};
use crate::enrollment::{Admitted, Enrollment, Refusal};
use crate::machines::MachineRecord;
use crate::subjects;

/// Where nats-server asks.
pub const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The account agents are placed in (as named in `nats.conf`).
pub const AGENT_ACCOUNT: &str = "NATTER";

/// What a refused client is told, whatever the reason: no oracle for guessing.
pub const REFUSED: &str = "not authorized";

/// Requests answered at once; more wait (nats-server times them out after its auth timeout).
const CONCURRENT_ANSWERS: usize = 64;

/// Why the callout service could not start.
#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    #[error("the auth callout issuer seed is not an account seed: {0}")]
    BadSeed(#[source] nkeys::error::Error),
    #[error("the auth callout issuer seed is not an account seed: not an account key")]
    NotAnAccount,
    #[error("subscribing to {AUTH_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// The callout service. Cheap to clone.
#[derive(Clone)]
pub struct Callout {
    issuer: Arc<KeyPair>,
    enrollment: Enrollment,
    /// The machine records (a suspended machine is refused).
    machines: kv::Store,
    throttle: Arc<FailureThrottle>,
}

impl Callout {
    /// `issuer_seed`: the account seed whose public key is `issuer` in `nats.conf`.
    pub fn new(
        issuer_seed: &str,
        enrollment: Enrollment,
        machines: kv::Store,
    ) -> Result<Callout, CalloutError> {
        let issuer = KeyPair::from_seed(issuer_seed).map_err(CalloutError::BadSeed)?;
        if !issuer.public_key().starts_with('A') {
            return Err(CalloutError::NotAnAccount);
        }
        Ok(Callout {
            issuer: Arc::new(issuer),
            enrollment,
            machines,
            throttle: Arc::default(),
        })
    }

    /// A fresh issuer key pair: (seed, public key).
    pub fn generate_issuer() -> (String, String) {
        let kp = KeyPair::new_account();
        (kp.seed().unwrap_or_default(), kp.public_key())
    }

    /// Subscribes to auth requests (so the node is not reported ready before agents can log
    /// in) and returns the task that answers them.
    pub async fn start(
        self,
        client: async_nats::Client,
    ) -> Result<tokio::task::JoinHandle<()>, CalloutError> {
        // One node answers each connect: with every node answering, the ones that lose the race
        // for a single-use enrollment token refuse, and the server may take that answer.
        let requests = client
            .queue_subscribe(AUTH_SUBJECT, crate::subjects::AUTH_CALLOUT_QUEUE.into())
            .await?;
        Ok(tokio::spawn(self.serve(client, requests)))
    }

    /// Answers requests concurrently (each reads KV), at most [`CONCURRENT_ANSWERS`] at once.
    async fn serve(self, client: async_nats::Client, mut requests: async_nats::Subscriber) {
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ANSWERS));
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (callout, client) = (self.clone(), client.clone());
            tokio::spawn(async move {
                let answer = callout.answer(&msg.payload).await;
                let _ = client.publish(reply, answer.into()).await;
                drop(permit);
            });
        }
    }

    /// The signed authorization response to one request JWT.
    pub async fn answer(&self, request_jwt: &[u8]) -> String {
        let Some(request) = decode_claims(request_jwt) else {
            tracing::warn!("auth callout: unreadable authorization request");
            return self.refuse("", "");
        };
        let nats = &request["nats"];
        let user_nkey = nats["user_nkey"].as_str().unwrap_or_default();
        let server_id = nats["server_id"]["id"].as_str().unwrap_or_default();
        let user = nats["connect_opts"]["user"].as_str().unwrap_or_default();
        if user_nkey.is_empty() || server_id.is_empty() {
            tracing::warn!("auth callout: incomplete authorization request");
            return self.refuse(user_nkey, server_id);
        }
        match self.check(nats).await {
            Ok(machine) => self.admit(user_nkey, server_id, &machine),
            Err(why) => {
                tracing::warn!(machine = %user, reason = %why, "agent refused");
                self.refuse(user_nkey, server_id)
            }
        }
    }

    /// The machine ID the request may log in as, or why not.
    async fn check(&self, nats: &Value) -> Result<String, String> {
        let login = AgentLogin::from_request(nats).map_err(|e| e.to_string())?;
        let machine = login.machine.as_str();
        if self.suspended(machine).await? {
            return Err("the machine is suspended".into());
        }
        // Throttled per machine and key: a stale or hostile agent failing under a machine's
        // name does not lock out that machine's real agent.
        let attempt = format!("{machine} {}", login.public_key);
        if self.throttle.blocked(&attempt) {
            return Err("too many failed attempts; try later".into());
        }
        let admitted = self
            .enrollment
            .admit(machine, &login.public_key, &login.password)
            .await;
        match admitted {
            Ok(how) => {
                if how == Admitted::Enrolled {
                    tracing::info!(%machine, key = %login.public_key, "agent enrolled");
                }
                self.throttle.succeeded(&attempt);
                Ok(login.machine)
            }
            Err(refusal) => {
                // A store outage is nobody's failed attempt.
                if !matches!(refusal, Refusal::Unavailable(_)) {
                    self.throttle.failed(&attempt);
                }
                Err(refusal.to_string())
            }
        }
    }

    async fn suspended(&self, machine: &str) -> Result<bool, String> {
        let entry = self
            .machines
            .get(machine)
            .await
            .map_err(|e| format!("reading the machine record: {e}"))?;
        Ok(entry
            .and_then(|b| serde_json::from_slice::<MachineRecord>(&b).ok())
            .is_some_and(|r| r.suspended))
    }

    fn admit(&self, user_nkey: &str, server_id: &str, machine: &str) -> String {
        let now = now_secs();
        let user_claims = json!({
            "jti": jti(),
            "iat": now,
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            // The connection's user name from now on: revocation finds it by this name.
            "name": machine,
            "aud": AGENT_ACCOUNT,
            "nats": {
                "pub": {"allow": [
                    subjects::agent_checkin(machine),
                    subjects::agent_start_request(machine),
                ]},
                // Its own inbox (the agent connects with this inbox prefix): the broker's answers
                // to its start requests, and nobody else's.
                "sub": {"allow": [
                    subjects::agent_command(machine),
                    format!("{}.>", subjects::agent_inbox_prefix(machine)),
                ]},
                "resp": {"max": 1, "ttl": 0},
                "subs": -1, "data": -1, "payload": -1,
                "type": "user",
                "version": 2,
            },
        });
        let user_jwt = self.sign(&user_claims);
        let response = json!({
            "jti": jti(),
            "iat": now,
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            "aud": server_id,
            "nats": {"jwt": user_jwt, "type": "authorization_response", "version": 2},
        });
        self.sign(&response)
    }

    fn refuse(&self, user_nkey: &str, server_id: &str) -> String {
        let response = json!({
            "jti": jti(),
            "iat": now_secs(),
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            "aud": server_id,
            "nats": {"error": REFUSED, "type": "authorization_response", "version": 2},
        });
        self.sign(&response)
    }

    fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{body}");
        let signature = self
            .issuer
            .sign(signing_input.as_bytes())
            .unwrap_or_default();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn decode_claims(jwt: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(jwt).ok()?;
    let claims = text.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn jti() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
