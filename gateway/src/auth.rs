//! Logins: operators with a password, machine users with their chat link's token (once; the
//! login then lasts while the session stays in the epoch it was made in).
//!
//! A login is a random token in an HttpOnly SameSite=Strict cookie; the gateway keeps only its
//! SHA-256 in the logins KV bucket, so every gateway of every node knows every login and a leaked
//! bucket does not leak cookies. The request filters (operator login, CSRF) are in
//! `api::filters`.

use natter_actors::machines::Scope;
use natter_actors::protocol::{Participant, ParticipantKind, SessionRecord};
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::error::ApiError;

pub const OPERATOR_COOKIE: &str = "natter_op";
pub const MACHINE_USER_COOKIE: &str = "natter_mu";

/// Who a login belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Login {
    pub who: Participant,
    #[serde(default)]
    pub admin: bool,
    /// For a machine user: the one session the login is good for.
    #[serde(default)]
    pub session: Option<String>,
    /// What an operator may see: read from the operator's record on every cache miss, so a
    /// changed scope applies within [`crate::LOGIN_CACHE_TTL`].
    #[serde(default)]
    pub scope: Scope,
    /// For operators: the organisations and groups granted (for display).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// For a machine user: the session's epoch at login. A restart of the chat starts a new
    /// epoch, and the login dies with the old one.
    #[serde(default)]
    pub epoch: u32,
    /// The SHA-256 of the login's cookie, which names the login (for its stream cap). Set when
    /// the login is looked up; not stored.
    #[serde(skip)]
    pub key: String,
}

fn token_key(token: &str) -> String {
    natter_actors::sha256_hex(token)
}

impl Gateway {
    /// Stores a login and returns its cookie token.
    pub async fn create_login(&self, login: &Login) -> Result<String, ApiError> {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let json = serde_json::to_vec(login).map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.stores()
            .logins
            .put(token_key(&token), json.into())
            .await
            .map_err(|_| ApiError::unavailable("could not store the login; try again"))?;
        Ok(token)
    }

    /// The login behind a cookie token, if it is live. For operators, name, admin flag and
    /// scope come from the operator's current record.
    pub async fn find_login(&self, token: &str) -> Result<Option<Login>, ApiError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let key = token_key(token);
        {
            let cache = self.login_cache().lock();
            if let Some((at, login)) = cache.get(&key)
                && at.elapsed() < crate::LOGIN_CACHE_TTL
            {
                return Ok(Some(login.clone()));
            }
        }
        let unavailable = |_| ApiError::unavailable("could not check the login; try again");
        let value = self.stores().logins.get(&key).await.map_err(unavailable)?;
        let mut login: Option<Login> = value.and_then(|v| serde_json::from_slice(&v).ok());
        if let Some(l) = login.as_mut() {
            l.key = key.clone();
        }
        if let Some(l) = login.as_mut()
            && l.who.kind == ParticipantKind::Operator
        {
            let record =
                natter_actors::directory::get_operator(&self.stores().operators, &l.who.id)
                    .await
                    .map_err(|_| ApiError::unavailable("could not check the login; try again"))?;
            match record {
                Some(r) => {
                    l.who.name = r.name.clone();
                    l.admin = r.admin;
                    l.scope = r.scope();
                    l.scopes = r.scopes.clone();
                }
                None => login = None,
            }
        }
        // Only live logins are cached: random cookies must not fill the cache.
        if let Some(l) = &login {
            let mut cache = self.login_cache().lock();
            if cache.len() > 100_000 {
                cache.retain(|_, (at, _)| at.elapsed() < crate::LOGIN_CACHE_TTL);
            }
            cache.insert(key, (std::time::Instant::now(), l.clone()));
        }
        Ok(login)
    }

    pub async fn delete_login(&self, token: &str) {
        let key = token_key(token);
        self.login_cache().lock().remove(&key);
        let _ = self.stores().logins.delete(key).await;
    }
}

/// A `Set-Cookie` value for a login.
pub fn login_cookie(
    name: &str,
    token: &str,
    path: &str,
    max_age_secs: u64,
    secure: bool,
) -> String {
    format!(
        "{name}={token}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A `Set-Cookie` value that removes a login cookie.
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    login_cookie(name, "", path, 0, secure)
}

/// The machine user logged in for `session` in its current epoch, or 401.
pub async fn machine_user(
    gw: &Gateway,
    token: Option<String>,
    session: &str,
) -> Result<Login, ApiError> {
    let token = token.ok_or_else(ApiError::unauthenticated)?;
    match gw.find_login(&token).await? {
        Some(l)
            if l.who.kind == ParticipantKind::MachineUser
                && l.session.as_deref() == Some(session)
                && gw.in_current_epoch(session, l.epoch).await? =>
        {
            Ok(l)
        }
        _ => Err(ApiError::unauthenticated()),
    }
}

impl Gateway {
    /// Whether `epoch` is the session's current one. Read from the session record on every
    /// request (not cached), so a restart cuts earlier machine-user logins off at once. A
    /// session without a record is left to its actor, which answers that it does not exist.
    async fn in_current_epoch(&self, session: &str, epoch: u32) -> Result<bool, ApiError> {
        let record = self
            .stores()
            .sessions
            .get(session)
            .await
            .map_err(|_| ApiError::unavailable("could not check the login; try again"))?;
        let current = record.and_then(|b| serde_json::from_slice::<SessionRecord>(&b).ok());
        Ok(current.is_none_or(|r| r.epoch == epoch))
    }
}
