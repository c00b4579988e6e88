//! Chats that wait for an operator to answer: a chat between two operators, a chat a machine
//! user starts with an operator, and the incoming-chat entries (KV `natter_incoming`) that tell
//! the invited operator's Chat pages about them. Only this actor writes its session's entries:
//! one for each invited operator who has not joined, deleted when they join or the chat ends.

use super::SessionState;
use super::commands::{MACHINE_TAKEN, PAIR_TAKEN, already_exists, invalid, not_found};
use super::link::issue_link;
use crate::protocol::{
    Ack, AgentWindow, ChatUser, EventBody, Incoming, Participant, ParticipantKind, SessionError,
    SessionErrorKind, SessionRecord, valid_machine_id,
};
use crate::subjects;

type CmdResult = Result<Ack, SessionError>;

/// The key that holds a chat's one-in-progress claim in the machine-sessions bucket: the
/// machine's ID (with the user's session, for one of several users), or for a chat between
/// operators the pair's key.
pub(super) fn chat_key(r: &SessionRecord) -> Option<String> {
    if !r.machine.is_empty() {
        return Some(machine_chat_key(&r.machine, r.user.as_ref()));
    }
    let mut ops = r
        .members
        .iter()
        .chain(&r.invited)
        .filter(|p| p.kind == ParticipantKind::Operator)
        .map(|p| p.id.as_str());
    let (a, b) = (ops.next()?, ops.next()?);
    Some(subjects::operator_pair_key(a, b))
}

/// The claim key of a chat with `machine`, or with one `user` of it.
pub(super) fn machine_chat_key(machine: &str, user: Option<&ChatUser>) -> String {
    match user {
        Some(u) => subjects::machine_user_chat_key(machine, &u.session),
        None => machine.to_owned(),
    }
}

impl SessionState {
    /// Operator `by` starts a chat with operator `with`, who gets an incoming chat.
    pub(super) async fn open_with_operator(
        &mut self,
        by: Participant,
        with: Participant,
    ) -> CmdResult {
        if by.kind != ParticipantKind::Operator || with.kind != ParticipantKind::Operator {
            return Err(invalid("a chat between operators is between two operators"));
        }
        if by.same(&with) {
            return Err(invalid("you cannot start a chat with yourself"));
        }
        if let Some(r) = &self.record {
            // A retried open by its opener is answered as the first was (and the invitation
            // written again, in case the first attempt stopped before it).
            if r.machine.is_empty() && r.members.iter().any(|m| m.same(&by)) {
                self.offer_incoming().await?;
                return Ok(self.view_ack());
            }
            return Err(already_exists());
        }
        let pair = subjects::operator_pair_key(&by.id, &with.id);
        self.begin(&by, "", None, &pair, PAIR_TAKEN).await?;
        let seq = self.invite(with, by).await?;
        Ok(Ack {
            seq: Some(seq),
            ..self.view_ack()
        })
    }

    /// The user logged on to `machine` starts a chat and invites `operator`. Their window is
    /// open (they asked for it), so the agent is not asked; the answer carries a fresh link
    /// token, which the gateway exchanges for their login.
    pub(super) async fn open_from_machine(
        &mut self,
        machine: String,
        user: String,
        operator: Participant,
    ) -> CmdResult {
        if !valid_machine_id(&machine) {
            return Err(invalid(format!("{machine:?} is not a machine ID")));
        }
        if operator.kind != ParticipantKind::Operator {
            return Err(invalid("a machine user starts a chat with an operator"));
        }
        let user = crate::protocol::clean_text(&user, 64);
        let by = Participant {
            kind: ParticipantKind::MachineUser,
            id: machine.clone(),
            name: if user.trim().is_empty() {
                "Machine user".into()
            } else {
                user
            },
        };
        if self.record.is_some() {
            return Err(already_exists());
        }
        self.begin(&by, &machine, None, &machine, MACHINE_TAKEN)
            .await?;
        let Some(record) = self.record.as_mut() else {
            return Err(not_found());
        };
        record.agent = AgentWindow::Opened;
        let token = issue_link(record, self.ctx.link_ttl);
        let seq = self.invite(operator, by).await?;
        Ok(Ack {
            seq: Some(seq),
            token: Some(token),
            ..self.view_ack()
        })
    }

    /// Member `by` hands this chat with a machine to operator `to`, who gets an incoming chat.
    /// Asking again for the same operator changes nothing.
    pub(super) async fn hand_off(&mut self, by: Participant, to: Participant) -> CmdResult {
        if by.kind != ParticipantKind::Operator || to.kind != ParticipantKind::Operator {
            return Err(invalid("operators hand chats to operators"));
        }
        let r = self.member_record(&by)?;
        if r.machine.is_empty() {
            return Err(invalid("only a chat with a machine can be handed on"));
        }
        if r.ended {
            return Err(SessionError::new(
                SessionErrorKind::Ended,
                "this chat has ended; join it again to restart it",
            ));
        }
        if r.members.iter().any(|m| m.same(&to)) {
            return Err(invalid(format!("{} is in this chat already", to.name)));
        }
        if r.invited.iter().any(|m| m.same(&to)) {
            return Ok(self.view_ack());
        }
        let handed = EventBody::HandedOff {
            by: by.clone(),
            to: to.clone(),
        };
        let seq = self.invite_with(handed, to, by).await?;
        Ok(Ack {
            seq: Some(seq),
            ..self.view_ack()
        })
    }

    /// Invites operator `who` (an `invited` event, the record, their incoming entry); returns
    /// the event's sequence.
    async fn invite(&mut self, who: Participant, by: Participant) -> Result<u64, SessionError> {
        let invited = EventBody::Invited {
            who: who.clone(),
            by: by.clone(),
        };
        self.invite_with(invited, who, by).await
    }

    /// Appends `event` (an invitation of `who` by `by`), adds `who` to the invited and writes
    /// their incoming entry, asked by `by`.
    async fn invite_with(
        &mut self,
        event: EventBody,
        who: Participant,
        by: Participant,
    ) -> Result<u64, SessionError> {
        let handoff = matches!(event, EventBody::HandedOff { .. });
        let (seq, _) = self.append(event, None).await?;
        if let Some(r) = self.record.as_mut()
            && !r.invited.iter().any(|p| p.same(&who))
        {
            r.invited.push(who.clone());
        }
        self.save_record().await?;
        self.offer_to(&who.id, &by, crate::now_ms(), handoff)
            .await?;
        Ok(seq)
    }

    /// Writes the incoming entry of every invited operator (again: a put is idempotent).
    pub(super) async fn offer_incoming(&self) -> Result<(), SessionError> {
        let r = self.record.as_ref().ok_or_else(not_found)?;
        if r.ended {
            return Ok(());
        }
        let Some(from) = r.members.first() else {
            return Ok(());
        };
        for who in &r.invited {
            self.offer_to(&who.id, from, r.created_at, false).await?;
        }
        Ok(())
    }

    /// Writes operator `who`'s incoming entry for this chat, asked by `from` at `at` (ms);
    /// `handoff`: `from` hands the chat to them.
    async fn offer_to(
        &self,
        who: &str,
        from: &Participant,
        at: u64,
        handoff: bool,
    ) -> Result<(), SessionError> {
        let machine = self.record.as_ref().map(|r| r.machine.clone());
        let entry = Incoming {
            session: self.id.clone(),
            from: from.clone(),
            machine: machine.unwrap_or_default(),
            at,
            handoff,
        };
        let json = serde_json::to_vec(&entry).unwrap_or_default();
        self.ctx
            .stores
            .incoming
            .put(subjects::incoming_key(who, &self.id), json.into())
            .await
            .map_err(|e| super::persist::unavailable("offering the chat", e))?;
        Ok(())
    }

    /// A chat between operators restarted by `by`: the other one is asked again (an incoming
    /// chat), as when it started.
    pub(super) async fn offer_restart(&self, by: &Participant) -> Result<(), SessionError> {
        let r = self.record.as_ref().ok_or_else(not_found)?;
        if !r.machine.is_empty() {
            return Ok(());
        }
        let now = crate::now_ms();
        for other in r.members.iter().filter(|m| !m.same(by)) {
            self.offer_to(&other.id, by, now, false).await?;
        }
        Ok(())
    }

    /// Deletes the incoming entry of operator `who` (they answered, or the chat ended). A failed
    /// delete is logged: the entry then waits until the session record expires, and the Chat
    /// page's answer joins a live or ended chat as usual.
    pub(super) async fn withdraw_incoming(&self, who: &str) {
        let key = subjects::incoming_key(who, &self.id);
        if let Err(e) = self.ctx.stores.incoming.delete(&key).await {
            tracing::warn!(session = %self.id, error = %e, "could not withdraw an incoming chat");
        }
    }

    /// `by` joins: an invited operator answers their incoming chat.
    pub(super) fn take_invitation(&mut self, by: &Participant) -> bool {
        let Some(r) = self.record.as_mut() else {
            return false;
        };
        let before = r.invited.len();
        r.invited.retain(|p| !p.same(by));
        r.invited.len() != before
    }

    /// Whether `by` may join this chat: anyone in scope may join a chat with a machine; a chat
    /// between operators only its two operators.
    pub(super) fn may_join(r: &SessionRecord, by: &Participant) -> bool {
        !r.machine.is_empty() || r.members.iter().chain(&r.invited).any(|m| m.same(by))
    }
}
