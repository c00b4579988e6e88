//! The machine user's chat link: a token that works once, expires unused after
//! `chat.link_ttl`, is refused once the chat has ended, and is replaced by a fresh one (in a new
//! epoch) when the chat restarts. The record keeps only the token's SHA-256, so a link found in a
//! log later is useless: it worked once or it expired.

use std::time::Duration;

use super::SessionState;
use super::commands::not_found;
use crate::machines::MachineRecord;
use crate::protocol::{
    Ack, AgentWindow, EventBody, Participant, ParticipantKind, SessionCommand, SessionError,
    SessionErrorKind, SessionRecord,
};
use crate::sha256_hex;

impl SessionState {
    /// Refuses a machine user's command unless it carries the session's current epoch: the
    /// gateway checks the login's epoch too, but a restart can land between that check and the
    /// command, and this actor is the one that orders the two.
    pub(super) fn check_epoch(
        &self,
        cmd: &SessionCommand,
        epoch: Option<u32>,
    ) -> Result<(), SessionError> {
        let by_machine_user = cmd
            .by()
            .is_some_and(|by| by.kind == ParticipantKind::MachineUser);
        let current = self.record.as_ref().map(|r| r.epoch);
        if by_machine_user && current.is_some() && epoch != current {
            return Err(SessionError::new(
                SessionErrorKind::BadToken,
                "this login ended with a restart of the chat; open the chat link again",
            ));
        }
        Ok(())
    }

    /// Exchanges the chat link's token for the machine user's identity and the session's epoch.
    /// The first login adds the machine user to the members; every login uses the token up,
    /// in the stored record before the answer, so neither this actor nor a rebuilt one takes it
    /// again.
    pub(super) async fn machine_login(&mut self, token: String) -> Result<Ack, SessionError> {
        let r = self.record.as_ref().ok_or_else(not_found)?;
        if !link_accepts(r, &token, crate::now_ms()) {
            return Err(SessionError::new(
                SessionErrorKind::BadToken,
                "this chat link is not valid",
            ));
        }
        let machine = r.machine.clone();
        let picked = r.user.as_ref().map(|u| u.name.clone());
        let existing = r
            .members
            .iter()
            .find(|m| m.kind == ParticipantKind::MachineUser)
            .cloned();
        let participant = match existing {
            Some(p) => p,
            None => {
                let who = Participant {
                    kind: ParticipantKind::MachineUser,
                    name: match picked {
                        Some(name) => name,
                        None => self.logged_on_user(&machine).await,
                    },
                    id: machine,
                };
                self.append(EventBody::Joined { who: who.clone() }, None)
                    .await?;
                if let Some(r) = self.record.as_mut() {
                    r.members.push(who.clone());
                }
                who
            }
        };
        let Some(r) = self.record.as_mut() else {
            return Err(not_found());
        };
        use_up_link(r);
        let epoch = r.epoch;
        self.save_record().await?;
        Ok(Ack {
            participant: Some(participant),
            epoch: Some(epoch),
            ..self.view_ack()
        })
    }

    /// The name the machine's last check-in gave for its logged-on user.
    async fn logged_on_user(&self, machine: &str) -> String {
        let record = self.ctx.stores.machines.get(machine).await.ok().flatten();
        record
            .and_then(|b| serde_json::from_slice::<MachineRecord>(&b).ok())
            .and_then(|m| m.user)
            .unwrap_or_else(|| "Machine user".into())
    }
}

/// Puts a fresh link token in `record` (its hash and expiry replace any earlier link's) and
/// returns the token, which only the machine's agent gets.
pub(super) fn issue_link(record: &mut SessionRecord, ttl: Duration) -> String {
    let token = hex::encode(rand::random::<[u8; 24]>());
    record.token_sha256 = sha256_hex(&token);
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    record.token_expires_at = crate::now_ms().saturating_add(ttl_ms);
    token
}

/// A restart of the chat: a new epoch (older machine-user logins end), not ended, the agent's
/// window pending again, and no live link until [`issue_link`] makes one.
pub(super) fn begin_epoch(record: &mut SessionRecord) {
    record.ended = false;
    record.epoch += 1;
    record.agent = AgentWindow::Pending;
    use_up_link(record);
}

/// Forgets the live link: no token logs in any more.
pub(super) fn use_up_link(record: &mut SessionRecord) {
    record.token_sha256.clear();
    record.token_expires_at = 0;
}

/// Whether `token` is the record's live link at `now_ms`: unused, unexpired, chat not ended.
fn link_accepts(record: &SessionRecord, token: &str, now_ms: u64) -> bool {
    // Compared in constant time whatever else is wrong, so timing says nothing about the token.
    let matches =
        crate::constant_time_eq(sha256_hex(token).as_bytes(), record.token_sha256.as_bytes());
    matches && !record.token_sha256.is_empty() && now_ms < record.token_expires_at && !record.ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        SessionRecord {
            id: "S1".into(),
            machine: "pc1.acme".into(),
            user: None,
            created_at: 0,
            members: Vec::new(),
            invited: Vec::new(),
            ended: false,
            token_sha256: String::new(),
            token_expires_at: 0,
            epoch: 0,
            agent: AgentWindow::Pending,
            agent_waiting_since: 0,
            seq: 1,
        }
    }

    #[test]
    fn a_fresh_link_accepts_its_token_only() {
        let mut r = record();
        let token = issue_link(&mut r, Duration::from_secs(60));
        let now = crate::now_ms();
        assert!(link_accepts(&r, &token, now));
        assert!(!link_accepts(&r, "0".repeat(48).as_str(), now));
        assert!(
            !r.token_sha256.contains(&token),
            "the record keeps only a hash"
        );
    }

    #[test]
    fn a_used_link_is_refused() {
        let mut r = record();
        let token = issue_link(&mut r, Duration::from_secs(60));
        use_up_link(&mut r);
        assert!(!link_accepts(&r, &token, crate::now_ms()));
        // An empty token never matches the empty hash of a used link.
        assert!(!link_accepts(&r, "", crate::now_ms()));
    }

    #[test]
    fn an_expired_link_is_refused() {
        let mut r = record();
        let token = issue_link(&mut r, Duration::from_secs(60));
        assert!(!link_accepts(&r, &token, r.token_expires_at));
    }

    #[test]
    fn a_link_of_an_ended_chat_is_refused() {
        let mut r = record();
        let token = issue_link(&mut r, Duration::from_secs(60));
        r.ended = true;
        assert!(!link_accepts(&r, &token, crate::now_ms()));
    }

    #[test]
    fn a_new_link_replaces_the_old_one() {
        let mut r = record();
        let old = issue_link(&mut r, Duration::from_secs(60));
        let new = issue_link(&mut r, Duration::from_secs(60));
        assert!(!link_accepts(&r, &old, crate::now_ms()));
        assert!(link_accepts(&r, &new, crate::now_ms()));
    }
}
