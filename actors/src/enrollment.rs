//! Per-machine agent identity: enrollment tokens and machine → public key bindings.
//!
//! Every agent has its own NKey user key pair. An admin issues an enrollment token for a group
//! ([`Enrollment::issue_token`]); an agent that is not bound yet presents it once (as its NATS
//! password) together with its public key, and the auth callout binds machine ID → key
//! ([`Enrollment::admit`]). From then on only that key logs in as that machine, token or not.
//!
//! - KV [`AGENT_KEYS_BUCKET`]: machine ID → the agent's public user key (`U…`).
//! - KV [`ENROLL_TOKENS_BUCKET`]: SHA-256 (hex) of a token → [`TokenRecord`]. The token itself is
//!   never stored, so reading the bucket does not let anyone enroll.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::machines::Scope;

/// Machine ID → the public key its agent must sign with.
pub const AGENT_KEYS_BUCKET: &str = "natter_agent_keys";
/// Token hash → what the token allows.
pub const ENROLL_TOKENS_BUCKET: &str = "natter_enroll_tokens";
/// Every enrollment token starts with this, so one pasted in the wrong place is recognisable.
pub const TOKEN_PREFIX: &str = "nenr_";

/// What an enrollment token allows, as stored under its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The organisation or group (with its subgroups) whose machines may enroll.
    pub group: String,
    pub uses_left: u32,
    /// Milliseconds since the epoch.
    pub expires_at: u64,
    /// How many enrollments it allowed when issued (0 in records written before this was kept).
    #[serde(default)]
    pub uses: u32,
}

/// An enrollment store error.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0:?} is not an organisation or group (like acme or sales.acme)")]
    BadGroup(String),
    #[error("{0:?} is not a machine ID (like pc1.sales.acme)")]
    BadMachineId(String),
    #[error("not an enrollment token (they look like {TOKEN_PREFIX}<64 hex digits>)")]
    BadToken,
    #[error(
        "{0:?} is not a token id (at least {TOKEN_ID_MIN} hex digits, from `natter admin enroll-tokens`)"
    )]
    BadTokenId(String),
    #[error("no enrollment token has an id starting with {0}")]
    NoSuchToken(String),
    #[error("several enrollment tokens have ids starting with {0}: give more digits")]
    AmbiguousTokenId(String),
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

fn unavailable(e: EnrollError) -> Refusal {
    Refusal::Unavailable(e.to_string())
}

fn store_error(what: &'static str) -> impl FnOnce(async_nats::Error) -> EnrollError {
    move |source| EnrollError::Store { what, source }
}

/// How many hex digits of a token's id an admin types at least to name it.
pub const TOKEN_ID_MIN: usize = 8;

/// A token's id: the first 16 hex digits of its hash (the bucket key). It names the token for
/// listing and revoking; it is not the token and enrolls nobody.
pub fn token_id(key: &str) -> &str {
    &key[..key.len().min(16)]
}

/// An enrollment token as an admin lists it: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub record: TokenRecord,
}

/// Why an agent was not admitted. Only the node's log sees this; the agent is told "not
/// authorized", whatever the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the machine is bound to another key")]
    OtherKey,
    #[error("the machine is not enrolled and no enrollment token was given")]
    NoToken,
    #[error("unknown enrollment token")]
    UnknownToken,
    #[error("the enrollment token is for group {0}")]
    OtherGroup(String),
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token is used up")]
    UsedUp,
    #[error("another agent enrolled this machine at the same time")]
    LostRace,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// How an agent was admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Its key was already bound to the machine.
    Known,
    /// It enrolled now with a token.
    Enrolled,
}

/// Whether `group` names an organisation or group: dot-separated segments of `a-z 0-9 - _`.
pub fn valid_group(group: &str) -> bool {
    group.len() <= 253
        && group.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// Whether a token for `group` may enroll `machine` (the group itself or one of its subgroups).
pub fn covers(group: &str, machine: &str) -> bool {
    Scope::Only(vec![group.to_string()]).covers(machine)
}

/// A new random token: the prefix and 256 random bits in hex.
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The bucket key of a token, or `None` if it does not look like one.
pub fn token_key(token: &str) -> Option<String> {
    let body = token.strip_prefix(TOKEN_PREFIX)?;
    if body.len() != 64 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(crate::sha256_hex(token))
}

/// The enrollment buckets. Cheap to clone.
#[derive(Clone)]
pub struct Enrollment {
    keys: kv::Store,
    tokens: kv::Store,
}

impl Enrollment {
    /// Opens (creating if needed) both buckets, with one replica.
    pub async fn ensure(client: async_nats::Client) -> Result<Enrollment, EnrollError> {
        Self::ensure_replicated(client, 1).await
    }

    /// Opens (creating or updating) both buckets with `replicas` copies (`nats.replicas`).
    pub async fn ensure_replicated(
        client: async_nats::Client,
        replicas: usize,
    ) -> Result<Enrollment, EnrollError> {
        let js = jetstream::new(client);
        let bucket = |name: &'static str| {
            let js = js.clone();
            async move {
                js.create_or_update_key_value(kv::Config {
                    bucket: name.into(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| store_error("creating an enrollment bucket")(e.into()))
            }
        };
        Ok(Enrollment {
            keys: bucket(AGENT_KEYS_BUCKET).await?,
            tokens: bucket(ENROLL_TOKENS_BUCKET).await?,
        })
    }

    /// The bucket of machine ID → bound key (the fleet watches it: [`crate::fleet::EnrolledMachines`]).
    pub fn agent_keys(&self) -> &kv::Store {
        &self.keys
    }

    /// Issues a token that enrolls up to `uses` machines of `group` within `ttl`; returns it.
    /// Only its hash is stored: show it to the admin once.
    pub async fn issue_token(
        &self,
        group: &str,
        uses: u32,
        ttl: Duration,
    ) -> Result<String, EnrollError> {
        let token = new_token();
        self.register_token(&token, group, uses, ttl).await?;
        Ok(token)
    }

    /// Stores the hash of a token made with [`new_token`] (e.g. handed to an agent that starts
    /// before its server), with what it allows.
    pub async fn register_token(
        &self,
        token: &str,
        group: &str,
        uses: u32,
        ttl: Duration,
    ) -> Result<(), EnrollError> {
        if !valid_group(group) {
            return Err(EnrollError::BadGroup(group.into()));
        }
        let key = token_key(token).ok_or(EnrollError::BadToken)?;
        let record = TokenRecord {
            group: group.into(),
            uses_left: uses,
            uses,
            expires_at: crate::now_ms().saturating_add(ttl.as_millis() as u64),
        };
        let body = serde_json::to_vec(&record).expect("a token record serializes");
        self.tokens
            .create(&key, body.into())
            .await
            .map_err(|e| store_error("storing the enrollment token")(e.into()))?;
        Ok(())
    }

    /// Every enrollment token in the bucket (spent and expired ones too), sorted by expiry.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, EnrollError> {
        let mut tokens: Vec<TokenInfo> = self
            .token_entries()
            .await?
            .into_iter()
            .map(|(key, record)| TokenInfo {
                id: token_id(&key).to_string(),
                record,
            })
            .collect();
        tokens.sort_by(|a, b| (a.record.expires_at, &a.id).cmp(&(b.record.expires_at, &b.id)));
        Ok(tokens)
    }

    /// Deletes the token whose id (or a unique prefix of it, at least [`TOKEN_ID_MIN`] hex
    /// digits) is `id`; from then on it enrolls nobody. Returns the token's id.
    pub async fn revoke_token(&self, id: &str) -> Result<String, EnrollError> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < TOKEN_ID_MIN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EnrollError::BadTokenId(id));
        }
        let mut found: Vec<String> = self
            .token_entries()
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| token_id(key).starts_with(&id))
            .collect();
        let key = match found.len() {
            1 => found.remove(0),
            0 => return Err(EnrollError::NoSuchToken(id)),
            _ => return Err(EnrollError::AmbiguousTokenId(id)),
        };
        // Purged, not just deleted: nothing of the token's record stays behind.
        self.tokens
            .purge(&key)
            .await
            .map_err(|e| store_error("deleting the enrollment token")(e.into()))?;
        Ok(token_id(&key).to_string())
    }

    /// Every token's bucket key and record.
    async fn token_entries(&self) -> Result<Vec<(String, TokenRecord)>, EnrollError> {
        let keys = self
            .tokens
            .keys()
            .await
            .map_err(|e| store_error("listing the enrollment tokens")(e.into()))?;
        let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self
                .tokens
                .get(&key)
                .await
                .map_err(|e| store_error("reading an enrollment token")(e.into()))?;
            if let Some(record) = value.and_then(|v| serde_json::from_slice(&v).ok()) {
                entries.push((key, record));
            }
        }
        Ok(entries)
    }

    /// The public key bound to `machine`, if any.
    pub async fn bound_key(&self, machine: &str) -> Result<Option<String>, EnrollError> {
        let entry = self
            .keys
            .entry(machine)
            .await
            .map_err(|e| store_error("reading the agent key")(e.into()))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Deletes the binding of `machine` (re-enrollment, key rotation). Returns whether there
    /// was one.
    pub async fn forget_key(&self, machine: &str) -> Result<bool, EnrollError> {
        if !crate::protocol::valid_machine_id(machine) {
            return Err(EnrollError::BadMachineId(machine.into()));
        }
        let existed = self.bound_key(machine).await?.is_some();
        self.keys
            .delete(machine)
            .await
            .map_err(|e| store_error("deleting the agent key")(e.into()))?;
        Ok(existed)
    }

    /// Decides whether the holder of `public_key` (already proven by its signature) may log in
    /// as `machine`, offering `password` as enrollment token; enrolls it if so.
    pub async fn admit(
        &self,
        machine: &str,
        public_key: &str,
        password: &str,
    ) -> Result<Admitted, Refusal> {
        if self.is_bound_to(machine, public_key).await? {
            return Ok(Admitted::Known);
        }
        self.enroll(machine, public_key, password).await
    }

    /// Whether `machine` is bound to `public_key` (`false`: not bound at all; bound to another
    /// key is a refusal).
    pub async fn is_bound_to(&self, machine: &str, public_key: &str) -> Result<bool, Refusal> {
        match self.bound_key(machine).await.map_err(unavailable)? {
            Some(bound) if bound == public_key => Ok(true),
            Some(_) => Err(Refusal::OtherKey),
            None => Ok(false),
        }
    }

    /// Binds the unbound `machine` to `public_key` if `password` is an enrollment token that
    /// covers the machine, has not expired and has a use left (which it then loses).
    pub async fn enroll(
        &self,
        machine: &str,
        public_key: &str,
        password: &str,
    ) -> Result<Admitted, Refusal> {
        if password.is_empty() {
            return Err(Refusal::NoToken);
        }
        let key = token_key(password).ok_or(Refusal::UnknownToken)?;
        // Spend a use first: a binding that then loses a race wastes one use, never allows
        // more enrollments than the token says.
        self.spend_use(&key, machine).await?;
        match self
            .keys
            .create(machine, public_key.to_string().into())
            .await
        {
            Ok(_) => Ok(Admitted::Enrolled),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.is_bound_to(machine, public_key).await {
                    Ok(true) => Ok(Admitted::Known),
                    _ => Err(Refusal::LostRace),
                }
            }
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    /// Takes one use of the token at `key` for `machine`, with compare-and-set on its revision.
    async fn spend_use(&self, key: &str, machine: &str) -> Result<(), Refusal> {
        loop {
            let entry = self
                .tokens
                .entry(key)
                .await
                .map_err(|e| Refusal::Unavailable(e.to_string()))?
                .filter(|e| e.operation == kv::Operation::Put)
                .ok_or(Refusal::UnknownToken)?;
            let mut record: TokenRecord =
                serde_json::from_slice(&entry.value).map_err(|_| Refusal::UnknownToken)?;
            if !covers(&record.group, machine) {
                return Err(Refusal::OtherGroup(record.group));
            }
            if crate::now_ms() >= record.expires_at {
                return Err(Refusal::Expired);
            }
            if record.uses_left == 0 {
                return Err(Refusal::UsedUp);
            }
            record.uses_left -= 1;
            let body = serde_json::to_vec(&record).expect("a token record serializes");
            match self.tokens.update(key, body.into(), entry.revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(Refusal::Unavailable(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_token_covers_its_machines_and_subgroups_only() {
        assert!(covers("sales.acme", "pc1.sales.acme"));
        assert!(covers("sales.acme", "pc1.east.sales.acme"));
        assert!(covers("acme", "pc1.east.sales.acme"));
        assert!(!covers("sales.acme", "pc1.support.acme"));
        assert!(!covers("sales.acme", "pc1.presales.acme"));
        assert!(!covers("sales.acme", "sales.acme"));
        assert!(!covers("acme", "pc1.globex"));
    }

    #[test]
    fn tokens_have_the_prefix_and_256_random_bits() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        let key = token_key(&a).expect("a token parses");
        assert_eq!(key.len(), 64);
        assert_ne!(
            key,
            a[TOKEN_PREFIX.len()..],
            "the key is a hash, not the token"
        );
    }

    #[test]
    fn things_that_are_not_tokens_have_no_key() {
        assert_eq!(token_key(""), None);
        assert_eq!(token_key("agent-test-secret"), None);
        assert_eq!(token_key(&format!("{TOKEN_PREFIX}abc")), None);
        assert_eq!(
            token_key(&format!("{TOKEN_PREFIX}{}", "g".repeat(64))),
            None
        );
    }

    #[test]
    fn groups_are_dotted_lowercase_segments() {
        assert!(valid_group("acme"));
        assert!(valid_group("east.sales.acme"));
        assert!(!valid_group(""));
        assert!(!valid_group("Sales.acme"));
        assert!(!valid_group("sales..acme"));
        assert!(!valid_group("*.acme"));
    }
}
