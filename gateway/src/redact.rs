//! What a machine user may not read: operators' login IDs. Wherever a machine user reads a
//! session (its view, its event stream) every operator's `id` is replaced by an alias
//! (`op-` and 16 hex digits) that is the same for that operator throughout one session, on every
//! node, and different in every other session; display names stay (docs/api.md, "Machine user").
//!
//! The alias is a keyed hash of the session and the login ID, so it cannot be turned back into
//! a login ID by trying likely names. The key is random, made once per installation and kept
//! in the KV bucket [`SECRETS_BUCKET`] (only nodes reach KV), so every gateway agrees on it.

use std::borrow::Cow;

use async_nats::jetstream::{self, kv};
use natter_actors::protocol::{EventBody, Participant, ParticipantKind, SessionView};
use natter_actors::store::{StoreError, StoredEvent};
use sha2::{Digest, Sha256};

use crate::signals::Signal;

/// Installation-wide secrets of the gateways.
pub const SECRETS_BUCKET: &str = "natter_gateway_secrets";
const ALIAS_KEY: &str = "operator_alias_key";
/// How many times a node tries to read or make the key when it starts (200 ms apart).
const LOAD_TRIES: u32 = 10;

/// The key operators' aliases are made with.
#[derive(Clone)]
pub struct AliasKey([u8; 32]);

impl AliasKey {
    /// Reads the installation's key, making it if this is the first node to ask. The bucket has
    /// as many copies as the other stores (a cluster keeps it when a server dies).
    pub async fn load(stores: &natter_actors::store::Stores) -> Result<AliasKey, StoreError> {
        let bucket = stores
            .js
            .create_or_update_key_value(kv::Config {
                bucket: SECRETS_BUCKET.into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: stores.config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::new("creating the gateway secrets bucket", e))?;
        // On a cluster a bucket just made may not answer yet ("no stream found for given
        // subject", seen in CI): a few tries, a moment apart.
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::read_or_make(&bucket).await {
                Err(e) if tries < LOAD_TRIES => {
                    tracing::debug!(error = %e, "operator alias key: trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                done => return done,
            }
        }
    }

    async fn read_or_make(bucket: &kv::Store) -> Result<AliasKey, StoreError> {
        let fresh: [u8; 32] = rand::random();
        // The first node's key wins; every other node reads it.
        match bucket.create(ALIAS_KEY, fresh.to_vec().into()).await {
            Ok(_) => return Ok(AliasKey(fresh)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::new("storing the operator alias key", e)),
        }
        let stored = bucket
            .get(ALIAS_KEY)
            .await
            .map_err(|e| StoreError::new("reading the operator alias key", e))?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
            .ok_or_else(|| {
                StoreError::new(
                    "reading the operator alias key",
                    std::io::Error::other("the stored key is not 32 bytes"),
                )
            })?;
        Ok(AliasKey(stored))
    }

    /// The alias of operator `id` in `session`.
    pub fn alias(&self, session: &str, id: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(self.0);
        hash.update(session.as_bytes());
        hash.update([0]);
        hash.update(id.as_bytes());
        format!("op-{}", hex::encode(&hash.finalize()[..8]))
    }

    /// Replaces an operator's login ID by its alias; the machine user is left as is.
    fn hide(&self, session: &str, who: &mut Participant) {
        if who.kind == ParticipantKind::Operator {
            who.id = self.alias(session, &who.id);
        }
    }

    /// A signal as a machine user may read it.
    pub fn signal(&self, signal: &Signal) -> Signal {
        let mut signal = signal.clone();
        self.hide(&signal.session, &mut signal.who);
        signal
    }

    /// A session view as a machine user may read it.
    pub fn view(&self, mut view: SessionView) -> SessionView {
        for member in view.members.iter_mut().chain(&mut view.invited) {
            self.hide(&view.id, member);
        }
        view
    }

    /// A stored event as a machine user may read it.
    pub fn event<'a>(&self, stored: &'a StoredEvent) -> Cow<'a, StoredEvent> {
        let Ok(mut event) = stored.decode() else {
            return Cow::Borrowed(stored);
        };
        let session = event.session.clone();
        match &mut event.body {
            EventBody::Opened { by, .. }
            | EventBody::Ended { by }
            | EventBody::Restarted { by } => self.hide(&session, by),
            EventBody::Joined { who } => self.hide(&session, who),
            EventBody::Invited { who, by } | EventBody::HandedOff { to: who, by } => {
                self.hide(&session, who);
                self.hide(&session, by);
            }
            EventBody::Message { from, .. } => self.hide(&session, from),
            EventBody::Agent { .. } => return Cow::Borrowed(stored),
        }
        Cow::Owned(StoredEvent {
            seq: stored.seq,
            session: stored.session.clone(),
            payload: serde_json::to_vec(&event).unwrap_or_default().into(),
        })
    }
}

/// How one reader's stream shows events: as stored, or with operators' IDs hidden.
pub enum Redaction {
    None,
    MachineUser(AliasKey),
}

impl Redaction {
    /// What `login` may read.
    pub fn for_login(gw: &crate::Gateway, login: &crate::auth::Login) -> Redaction {
        match login.who.kind {
            ParticipantKind::Operator => Redaction::None,
            ParticipantKind::MachineUser => Redaction::MachineUser(gw.alias_key().clone()),
        }
    }

    /// `signal` as this reader may read it.
    pub fn signal<'a>(&self, signal: &'a Signal) -> Cow<'a, Signal> {
        match self {
            Redaction::None => Cow::Borrowed(signal),
            Redaction::MachineUser(key) => Cow::Owned(key.signal(signal)),
        }
    }

    /// `event` as this reader may read it.
    pub fn event<'a>(&self, event: &'a StoredEvent) -> Cow<'a, StoredEvent> {
        match self {
            Redaction::None => Cow::Borrowed(event),
            Redaction::MachineUser(key) => key.event(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_actors::protocol::{AgentWindow, Event};

    fn alice() -> Participant {
        Participant {
            kind: ParticipantKind::Operator,
            id: "alice".into(),
            name: "Alice Admin".into(),
        }
    }

    fn stored(body: EventBody) -> StoredEvent {
        let event = Event {
            session: "S1".into(),
            at: 1,
            body,
        };
        StoredEvent {
            seq: 7,
            session: "S1".into(),
            payload: serde_json::to_vec(&event).unwrap().into(),
        }
    }

    #[test]
    fn aliases_are_stable_per_session_and_differ_between_sessions_and_keys() {
        let key = AliasKey([7; 32]);
        let a = key.alias("S1", "alice");
        assert_eq!(a, key.alias("S1", "alice"));
        assert!(a.starts_with("op-") && a.len() == 3 + 16, "{a}");
        assert_ne!(a, key.alias("S2", "alice"));
        assert_ne!(a, key.alias("S1", "bob"));
        assert_ne!(a, AliasKey([8; 32]).alias("S1", "alice"));
    }

    #[test]
    fn a_machine_user_reads_no_login_id_but_the_names() {
        let key = AliasKey([7; 32]);
        let message = stored(EventBody::Message {
            from: alice(),
            text: "hi".into(),
            client_id: "c1".into(),
        });
        let shown = key.event(&message);
        let wire = shown.to_wire_json();
        assert!(!wire.contains("\"alice\""), "{wire}");
        assert!(
            wire.contains("Alice Admin") && wire.contains("\"seq\":7"),
            "{wire}"
        );
        assert_eq!(shown.decode().expect("an event").at, 1);

        let bob = Participant {
            kind: ParticipantKind::MachineUser,
            id: "pc1.acme".into(),
            name: "bob".into(),
        };
        let view = key.view(SessionView {
            id: "S1".into(),
            machine: "pc1.acme".into(),
            user: None,
            ended: false,
            last_seq: 7,
            members: vec![alice(), bob.clone()],
            invited: vec![alice()],
            retention_secs: 3600,
            agent: AgentWindow::Opened,
        });
        assert_eq!(view.members[0].id, key.alias("S1", "alice"));
        assert_eq!(view.members[0].name, "Alice Admin");
        assert_eq!(view.members[1], bob);
        // Invited operators too (a chat the machine user started).
        assert_eq!(view.invited[0].id, key.alias("S1", "alice"));
        // An operator's stream is untouched.
        let wire = Redaction::None.event(&message).to_wire_json();
        assert!(wire.contains("\"alice\""));
    }
}
