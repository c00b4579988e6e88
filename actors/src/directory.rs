//! Operator accounts, kept in the operators KV bucket with argon2 password hashes, and their
//! options (their own bucket).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// An operator account as stored.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct OperatorRecord {
    pub username: String,
    pub name: String,
    pub admin: bool,
    /// Organisations and groups this operator may see (admins see everything).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
}

impl OperatorRecord {
    /// What the operator may see.
    pub fn scope(&self) -> crate::machines::Scope {
        if self.admin {
            crate::machines::Scope::All
        } else {
            crate::machines::Scope::Only(self.scopes.clone())
        }
    }
}

/// Why an operator could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("invalid username {0:?}: use 1-64 of a-z, 0-9, '-', '_'")]
    InvalidUsername(String),
    #[error("invalid scope {0:?}: name an organisation (acme) or a group (sales.acme)")]
    InvalidScope(String),
    #[error("the password must have at least 8 characters")]
    WeakPassword,
    #[error("hashing the password: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    #[error("hashing the password: {0}")]
    HashTask(#[source] tokio::task::JoinError),
    #[error("encoding the operator: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("operators store: {0}")]
    Store(#[from] async_nats::Error),
}

/// Usernames are KV keys and appear in events: keep them plain.
pub fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Hashes `password` with argon2id and a random salt (CPU-heavy: call off the async threads).
pub fn hash_password(password: &str) -> Result<String, DirectoryError> {
    if password.chars().count() < 8 {
        return Err(DirectoryError::WeakPassword);
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(DirectoryError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(DirectoryError::Hash)
}

/// Checks `password` against a stored PHC hash (CPU-heavy: call off the async threads).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Creates or replaces an operator.
pub async fn put_operator(
    operators: &kv::Store,
    username: &str,
    name: &str,
    admin: bool,
    scopes: &[String],
    password: &str,
) -> Result<OperatorRecord, DirectoryError> {
    if !valid_username(username) {
        return Err(DirectoryError::InvalidUsername(username.into()));
    }
    if let Some(bad) = scopes.iter().find(|s| !crate::machines::valid_scope(s)) {
        return Err(DirectoryError::InvalidScope(bad.clone()));
    }
    let pw = password.to_string();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(DirectoryError::HashTask)??;
    let record = OperatorRecord {
        username: username.into(),
        name: if name.trim().is_empty() {
            username.into()
        } else {
            name.trim().into()
        },
        admin,
        scopes: scopes.to_vec(),
        password_hash,
    };
    let json = serde_json::to_vec(&record)?;
    operators
        .put(username, json.into())
        .await
        .map_err(|e| DirectoryError::Store(e.into()))?;
    Ok(record)
}

/// Reads an operator, `None` if there is none by that name.
pub async fn get_operator(
    operators: &kv::Store,
    username: &str,
) -> Result<Option<OperatorRecord>, DirectoryError> {
    if !valid_username(username) {
        return Ok(None);
    }
    let Some(bytes) = operators
        .get(username)
        .await
        .map_err(|e| DirectoryError::Store(e.into()))?
    else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// An operator's options (`GET/PUT /api/me/options`), kept in their own bucket
/// (`natter_operator_options`, keyed by username) so that replacing an operator's account (the
/// admin CLI) does not reset them. Every field defaults to off.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorOptions {
    /// Play a tone on each new message sent or received.
    #[serde(default)]
    pub play_tone: bool,
    /// Close the chat window when either party ends the chat.
    #[serde(default)]
    pub auto_close: bool,
    /// Leave me out of other operators' lists of operators.
    #[serde(default)]
    pub hide_from_operators: bool,
    /// Leave me out of machine users' lists of operators.
    #[serde(default)]
    pub hide_from_machine_users: bool,
}

/// An operator's options; the defaults if they never saved any (or the stored value is unreadable).
pub async fn get_options(
    options: &kv::Store,
    username: &str,
) -> Result<OperatorOptions, DirectoryError> {
    if !valid_username(username) {
        return Ok(OperatorOptions::default());
    }
    let stored = options
        .get(username)
        .await
        .map_err(|e| DirectoryError::Store(e.into()))?;
    Ok(stored
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default())
}

/// Saves an operator's options (replacing what was there).
pub async fn put_options(
    options: &kv::Store,
    username: &str,
    value: &OperatorOptions,
) -> Result<(), DirectoryError> {
    if !valid_username(username) {
        return Err(DirectoryError::InvalidUsername(username.into()));
    }
    let json = serde_json::to_vec(value)?;
    options
        .put(username, json.into())
        .await
        .map_err(|e| DirectoryError::Store(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(matches!(
            hash_password("short"),
            Err(DirectoryError::WeakPassword)
        ));
    }

    #[test]
    fn options_default_off_and_refuse_unknown_fields() {
        let partial: OperatorOptions = serde_json::from_str(r#"{"play_tone":true}"#).unwrap();
        assert_eq!(
            partial,
            OperatorOptions {
                play_tone: true,
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<OperatorOptions>(r#"{"play_tone":1}"#).is_err());
        assert!(serde_json::from_str::<OperatorOptions>(r#"{"loud":true}"#).is_err());
    }
}
