//! Machine roles: what the user of a machine may do on their own (issue 11, item 3). An admin
//! creates roles, toggles their rights and assigns machines to them; a machine has at most one
//! role, and a machine without one has no right.
//!
//! - KV [`ROLES_BUCKET`]: role name → [`RoleRecord`].
//! - KV [`ROLE_ASSIGNMENTS_BUCKET`]: machine ID → its role's name.
//! - KV [`START_TOKENS_BUCKET`]: SHA-256 (hex) of a start token → [`StartGrant`], max age
//!   `chat.link_ttl`. A start token is what the machine user's start page is opened with
//!   (`/start/#t=…`): it works once, and only its hash is kept.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::protocol::valid_machine_id;

pub const ROLES_BUCKET: &str = "natter_machine_roles";
pub const ROLE_ASSIGNMENTS_BUCKET: &str = "natter_role_assignments";
pub const START_TOKENS_BUCKET: &str = "natter_start_tokens";

/// The longest role name.
pub const ROLE_NAME_MAX: usize = 64;

/// A machine role as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    /// "May start a chat with operators": the machine user may ask for the start page.
    #[serde(default)]
    pub may_start_chat: bool,
}

/// A role with the machines assigned to it, as listed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoleView {
    pub name: String,
    pub may_start_chat: bool,
    /// Sorted.
    pub machines: Vec<String>,
}

/// What a start token was issued for, as stored under its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StartGrant {
    pub machine: String,
    /// The user logged on when the agent asked: the machine user's display name.
    pub user: String,
    /// Milliseconds since the epoch.
    pub expires_at: u64,
}

/// Why a roles operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(
        "{0:?} is not a role name (1 to {ROLE_NAME_MAX} characters of a-z, 0-9, - and _, like helpdesk-users)"
    )]
    BadName(String),
    #[error("{0:?} is not a machine ID (like pc1.sales.acme)")]
    BadMachineId(String),
    #[error("there is no role {0}")]
    NoSuchRole(String),
    #[error("a role {0} already exists")]
    Exists(String),
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl RoleError {
    /// Whether the caller asked for something wrong (rather than the store failing).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, RoleError::BadName(_) | RoleError::BadMachineId(_))
    }
}

fn store(what: &'static str) -> impl FnOnce(async_nats::Error) -> RoleError {
    move |source| RoleError::Store { what, source }
}

/// Whether `name` is a valid role name: it is a KV key and shows in the CLI as one word.
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= ROLE_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Every start token starts with this, so one pasted in the wrong place is recognisable.
pub const START_TOKEN_PREFIX: &str = "nst_";

/// The bucket key of a start token, or `None` if it does not look like one.
fn start_token_key(token: &str) -> Option<String> {
    let body = token.strip_prefix(START_TOKEN_PREFIX)?;
    (body.len() == 64 && body.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| crate::sha256_hex(token))
}

/// The role buckets. Cheap to clone.
#[derive(Clone)]
pub struct Roles {
    roles: kv::Store,
    assignments: kv::Store,
    start_tokens: kv::Store,
}

impl Roles {
    /// Over the buckets [`crate::store::Stores::ensure`] created.
    pub fn new(roles: kv::Store, assignments: kv::Store, start_tokens: kv::Store) -> Roles {
        Roles {
            roles,
            assignments,
            start_tokens,
        }
    }

    async fn get_role(&self, name: &str) -> Result<Option<RoleRecord>, RoleError> {
        if !valid_role_name(name) {
            return Err(RoleError::BadName(name.into()));
        }
        let value = self
            .roles
            .get(name)
            .await
            .map_err(|e| store("reading a role")(e.into()))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Creates a role; a role of that name must not exist.
    pub async fn create(&self, name: &str, may_start_chat: bool) -> Result<RoleRecord, RoleError> {
        if !valid_role_name(name) {
            return Err(RoleError::BadName(name.into()));
        }
        let record = RoleRecord {
            name: name.into(),
            may_start_chat,
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        match self.roles.create(name, json.into()).await {
            Ok(_) => Ok(record),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(RoleError::Exists(name.into()))
            }
            Err(e) => Err(store("storing a role")(e.into())),
        }
    }

    /// Switches a role's right "may start a chat with operators" on or off.
    pub async fn set_may_start_chat(
        &self,
        name: &str,
        may_start_chat: bool,
    ) -> Result<RoleRecord, RoleError> {
        let mut record = self
            .get_role(name)
            .await?
            .ok_or_else(|| RoleError::NoSuchRole(name.into()))?;
        record.may_start_chat = may_start_chat;
        let json = serde_json::to_vec(&record).unwrap_or_default();
        self.roles
            .put(name, json.into())
            .await
            .map_err(|e| store("storing a role")(e.into()))?;
        Ok(record)
    }

    /// Deletes a role; its machines have no role (and no right) from then on.
    pub async fn delete(&self, name: &str) -> Result<(), RoleError> {
        if self.get_role(name).await?.is_none() {
            return Err(RoleError::NoSuchRole(name.into()));
        }
        for (machine, role) in self.assignments().await? {
            if role == name {
                self.assignments
                    .delete(&machine)
                    .await
                    .map_err(|e| store("removing an assignment")(e.into()))?;
            }
        }
        self.roles
            .delete(name)
            .await
            .map_err(|e| store("deleting a role")(e.into()))
    }

    /// Every machine → role assignment.
    async fn assignments(&self) -> Result<Vec<(String, String)>, RoleError> {
        let mut keys = match self.assignments.keys().await {
            Ok(k) => k,
            Err(e) => return Err(store("listing assignments")(e.into())),
        };
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| store("listing assignments")(e.into()))?;
            if let Some(role) = self
                .assignments
                .get(&key)
                .await
                .map_err(|e| store("reading an assignment")(e.into()))?
            {
                out.push((key, String::from_utf8_lossy(&role).into_owned()));
            }
        }
        Ok(out)
    }

    /// Every role with its machines, by name.
    pub async fn list(&self) -> Result<Vec<RoleView>, RoleError> {
        let mut keys = match self.roles.keys().await {
            Ok(k) => k,
            Err(e) => return Err(store("listing roles")(e.into())),
        };
        let mut roles = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| store("listing roles")(e.into()))?;
            if let Ok(Some(r)) = self.get_role(&key).await {
                roles.push(RoleView {
                    name: r.name,
                    may_start_chat: r.may_start_chat,
                    machines: Vec::new(),
                });
            }
        }
        for (machine, role) in self.assignments().await? {
            if let Some(view) = roles.iter_mut().find(|r| r.name == role) {
                view.machines.push(machine);
            }
        }
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut roles {
            r.machines.sort();
        }
        Ok(roles)
    }

    /// Puts `machine` in `role` (replacing any role it had).
    pub async fn assign(&self, machine: &str, role: &str) -> Result<(), RoleError> {
        if !valid_machine_id(machine) {
            return Err(RoleError::BadMachineId(machine.into()));
        }
        if self.get_role(role).await?.is_none() {
            return Err(RoleError::NoSuchRole(role.into()));
        }
        self.assignments
            .put(machine, role.as_bytes().to_vec().into())
            .await
            .map_err(|e| store("storing an assignment")(e.into()))?;
        Ok(())
    }

    /// Takes `machine` out of its role; returns the role it had, if any.
    pub async fn unassign(&self, machine: &str) -> Result<Option<String>, RoleError> {
        if !valid_machine_id(machine) {
            return Err(RoleError::BadMachineId(machine.into()));
        }
        let had = self.role_of(machine).await?;
        if had.is_some() {
            self.assignments
                .delete(machine)
                .await
                .map_err(|e| store("removing an assignment")(e.into()))?;
        }
        Ok(had)
    }

    /// The role `machine` is assigned to, if any.
    pub async fn role_of(&self, machine: &str) -> Result<Option<String>, RoleError> {
        let value = self
            .assignments
            .get(machine)
            .await
            .map_err(|e| store("reading an assignment")(e.into()))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Whether `machine`'s role has the right "may start a chat with operators". No role, or a
    /// role deleted since, is no right.
    pub async fn may_start_chat(&self, machine: &str) -> Result<bool, RoleError> {
        let Some(role) = self.role_of(machine).await? else {
            return Ok(false);
        };
        Ok(self
            .get_role(&role)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.may_start_chat))
    }

    /// Issues a single-use start token for `machine`'s `user`, valid for `ttl`; only its hash
    /// is stored.
    pub async fn issue_start_token(
        &self,
        machine: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<String, RoleError> {
        let token = format!(
            "{START_TOKEN_PREFIX}{}",
            hex::encode(rand::random::<[u8; 32]>())
        );
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let grant = StartGrant {
            machine: machine.into(),
            user: user.into(),
            expires_at: crate::now_ms().saturating_add(ttl_ms),
        };
        let json = serde_json::to_vec(&grant).unwrap_or_default();
        self.start_tokens
            .put(crate::sha256_hex(&token), json.into())
            .await
            .map_err(|e| store("storing a start token")(e.into()))?;
        Ok(token)
    }

    /// Uses a start token up and returns what it was issued for; `None` for a token that is
    /// wrong, used or expired (one answer for all: no oracle). Of two concurrent uses, one wins:
    /// the delete names the revision read.
    pub async fn take_start_token(&self, token: &str) -> Result<Option<StartGrant>, RoleError> {
        let Some(key) = start_token_key(token) else {
            return Ok(None);
        };
        let entry = self
            .start_tokens
            .entry(&key)
            .await
            .map_err(|e| store("reading a start token")(e.into()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let Ok(grant) = serde_json::from_slice::<StartGrant>(&entry.value) else {
            return Ok(None);
        };
        if self
            .start_tokens
            .delete_expect_revision(&key, Some(entry.revision))
            .await
            .is_err()
        {
            return Ok(None);
        }
        Ok(Some(grant).filter(|g| crate::now_ms() < g.expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_one_lowercase_word() {
        assert!(valid_role_name("helpdesk-users"));
        assert!(valid_role_name("kiosk_2"));
        assert!(!valid_role_name(""));
        assert!(!valid_role_name("Help"));
        assert!(!valid_role_name("a.b"));
        assert!(!valid_role_name("a b"));
        assert!(!valid_role_name(&"a".repeat(ROLE_NAME_MAX + 1)));
    }

    #[test]
    fn start_tokens_have_a_shape() {
        let token = format!("{START_TOKEN_PREFIX}{}", "ab".repeat(32));
        assert!(start_token_key(&token).is_some());
        assert!(start_token_key("nst_abc").is_none());
        assert!(start_token_key(&"ab".repeat(32)).is_none());
    }
}
