//! NATS auth callout for agents: each agent gets permissions for its own machine's subjects only.
//!
//! nats-server sends every connection that is not a static broker user to
//! `$SYS.REQ.USER.AUTH` as a JWT. An agent connects with its machine ID as user name and the
//! fleet's agent secret as password; this service checks both and answers with a user JWT, signed
//! by the account key named as `issuer` in `nats.conf`, that allows publishing only
//! `natter.agent.<its token>.checkin`, subscribing only `natter.agent.<its token>.cmd`, and
//! answering requests it received. So an agent can neither check in as another machine nor read
//! another machine's commands: NATS refuses it. Anything else is refused with a reason.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{Value, json};

use crate::protocol::valid_machine_id;
use crate::subjects;

/// Where nats-server asks.
pub const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The account agents are placed in (as named in `nats.conf`).
pub const AGENT_ACCOUNT: &str = "NATTER";

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

/// Settings of the callout service.
#[derive(Clone)]
pub struct Callout {
    issuer: std::sync::Arc<KeyPair>,
    agent_secret: String,
}

impl Callout {
    /// `issuer_seed`: the account seed whose public key is `issuer` in `nats.conf`.
    pub fn new(issuer_seed: &str, agent_secret: &str) -> Result<Callout, CalloutError> {
        let issuer = KeyPair::from_seed(issuer_seed).map_err(CalloutError::BadSeed)?;
        if !issuer.public_key().starts_with('A') {
            return Err(CalloutError::NotAnAccount);
        }
        Ok(Callout {
            issuer: std::sync::Arc::new(issuer),
            agent_secret: agent_secret.into(),
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
        let requests = client.subscribe(AUTH_SUBJECT).await?;
        Ok(tokio::spawn(self.serve(client, requests)))
    }

    async fn serve(self, client: async_nats::Client, mut requests: async_nats::Subscriber) {
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let answer = self.answer(&msg.payload);
            let _ = client.publish(reply, answer.into()).await;
        }
    }

    /// The signed authorization response to one request JWT.
    pub fn answer(&self, request_jwt: &[u8]) -> String {
        let request = match decode_claims(request_jwt) {
            Some(r) => r,
            None => return self.refuse("", "", "unreadable authorization request"),
        };
        let nats = &request["nats"];
        let user_nkey = nats["user_nkey"].as_str().unwrap_or_default();
        let server_id = nats["server_id"]["id"].as_str().unwrap_or_default();
        let user = nats["connect_opts"]["user"].as_str().unwrap_or_default();
        let pass = nats["connect_opts"]["pass"].as_str().unwrap_or_default();
        if user_nkey.is_empty() || server_id.is_empty() {
            return self.refuse(user_nkey, server_id, "incomplete authorization request");
        }
        if !valid_machine_id(user) {
            return self.refuse(user_nkey, server_id, "the user name must be a machine ID");
        }
        if self.agent_secret.is_empty()
            || !crate::constant_time_eq(pass.as_bytes(), self.agent_secret.as_bytes())
        {
            tracing::warn!(machine = %user, "agent refused: wrong secret");
            return self.refuse(user_nkey, server_id, "wrong agent credentials");
        }
        let now = now_secs();
        let user_claims = json!({
            "jti": jti(),
            "iat": now,
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            "name": user,
            "aud": AGENT_ACCOUNT,
            "nats": {
                "pub": {"allow": [subjects::agent_checkin(user)]},
                "sub": {"allow": [subjects::agent_command(user)]},
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

    fn refuse(&self, user_nkey: &str, server_id: &str, why: &str) -> String {
        let response = json!({
            "jti": jti(),
            "iat": now_secs(),
            "iss": self.issuer.public_key(),
            "sub": user_nkey,
            "aud": server_id,
            "nats": {"error": why, "type": "authorization_response", "version": 2},
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
