//! The six session commands, checked against the caller's scope and membership, and the
//! validation of message bodies.

use async_nats::jetstream::kv;
use ractor::ActorRef;

use super::link::{begin_epoch, issue_link};
use super::persist::{message_id, unavailable};
use super::{SessionMsg, SessionState};
use crate::machines::Scope;
use crate::protocol::{
    Ack, AgentWindow, ChatUser, EventBody, Participant, ParticipantKind, SessionCommand,
    SessionError, SessionErrorKind, SessionRecord, valid_client_id, valid_machine_id,
};

type CmdResult = Result<Ack, SessionError>;

impl SessionState {
    /// Runs one command (the state is loaded).
    pub(super) async fn execute(
        &mut self,
        cmd: SessionCommand,
        scope: &Scope,
        myself: &ActorRef<SessionMsg>,
    ) -> CmdResult {
        // A session with a machine outside the caller's scope does not exist for them.
        // (A chat between operators has no machine: its members are its only readers.)
        let machine = match &cmd {
            SessionCommand::Open { machine, .. } => Some(machine.as_str()),
            SessionCommand::OpenFromMachine { machine, .. } => Some(machine.as_str()),
            SessionCommand::OpenWithOperator { .. } => None,
            _ => self.record.as_ref().map(|r| r.machine.as_str()),
        };
        if machine.is_some_and(|m| !m.is_empty() && !scope.covers(m)) {
            return Err(not_found());
        }
        match cmd {
            SessionCommand::Open { by, machine, user } => {
                self.open(by, machine, user, myself).await
            }
            SessionCommand::OpenWithOperator { by, with } => {
                self.open_with_operator(by, with).await
            }
            SessionCommand::OpenFromMachine {
                machine,
                user,
                operator,
            } => self.open_from_machine(machine, user, operator).await,
            SessionCommand::Join { by } => self.join(by, myself).await,
            SessionCommand::Send {
                by,
                client_id,
                text,
            } => self.send(by, client_id, text).await,
            SessionCommand::HandOff { by, to } => self.hand_off(by, to).await,
            SessionCommand::End { by } => self.end(by).await,
            SessionCommand::View { by } => {
                // An invited operator may look before answering.
                let invited =
                    (self.record.as_ref()).is_some_and(|r| r.invited.iter().any(|p| p.same(&by)));
                if !invited {
                    self.member_record(&by)?;
                }
                Ok(self.view_ack())
            }
            SessionCommand::MachineLogin { token } => self.machine_login(token).await,
            SessionCommand::MachineBack { machine } => {
                self.on_machine_back(&machine, myself).await;
                Ok(Ack::default())
            }
        }
    }

    /// The record, if `by` is one of its members.
    pub(super) fn member_record(&self, by: &Participant) -> Result<&SessionRecord, SessionError> {
        let r = self.record.as_ref().ok_or_else(not_found)?;
        if r.members.iter().any(|m| m.same(by)) {
            Ok(r)
        } else {
            Err(SessionError::new(
                SessionErrorKind::NotMember,
                "you are not a member of this chat session",
            ))
        }
    }

    async fn open(
        &mut self,
        by: Participant,
        machine: String,
        user: Option<ChatUser>,
        myself: &ActorRef<SessionMsg>,
    ) -> CmdResult {
        if by.kind != ParticipantKind::Operator {
            return Err(invalid("only operators open chats with machines"));
        }
        if !valid_machine_id(&machine) {
            return Err(invalid(format!("{machine:?} is not a machine ID")));
        }
        if let Some(u) = &user
            && !crate::fleet::checkin::valid_user_session(&u.name, &u.session)
        {
            return Err(invalid("not a machine user's name and session"));
        }
        if let Some(r) = &self.record {
            // A retried open by its opener is answered as the first was.
            if r.machine == machine && r.user == user && r.members.iter().any(|m| m.same(&by)) {
                return Ok(self.view_ack());
            }
            return Err(already_exists());
        }
        let key = super::invite::machine_chat_key(&machine, user.as_ref());
        let taken = if user.is_some() {
            USER_TAKEN
        } else {
            MACHINE_TAKEN
        };
        let seq = self.begin(&by, &machine, user, &key, taken).await?;
        let Some(record) = self.record.as_mut() else {
            return Err(not_found());
        };
        let token = issue_link(record, self.ctx.link_ttl);
        self.save_record().await?;
        self.ask_agent_to_open(machine, token, myself);
        Ok(Ack {
            seq: Some(seq),
            ..self.view_ack()
        })
    }

    async fn join(&mut self, by: Participant, myself: &ActorRef<SessionMsg>) -> CmdResult {
        if by.kind != ParticipantKind::Operator {
            return Err(invalid("machine users join with their chat link"));
        }
        let r = self.record.as_ref().ok_or_else(not_found)?;
        if !Self::may_join(r, &by) {
            return Err(SessionError::new(
                SessionErrorKind::NotMember,
                "this chat is between two other operators",
            ));
        }
        let member = r.members.iter().any(|m| m.same(&by));
        let machine = r.machine.clone();
        // A chat in progress whose user window never opened (the agent said so) is asked for
        // again, with a fresh link, in the same epoch: nobody on the machine holds a login yet.
        let window_failed = !r.ended && r.agent == AgentWindow::Failed;
        let mut seq = None;
        let mut link = None;
        let restarting = r.ended;
        if restarting {
            let (restarted, token) = self.restart(&by).await?;
            seq = Some(restarted);
            link = Some(token);
        } else if window_failed
            && !machine.is_empty()
            && let Some(r) = self.record.as_mut()
        {
            r.agent = AgentWindow::Pending;
            link = Some(issue_link(r, self.ctx.link_ttl));
        }
        let answered = self.take_invitation(&by);
        // Its incoming entry goes before the record is saved: should a step after it fail, the
        // record still has the invitation and the retried join withdraws it again. (A member of
        // a chat between operators may have one from a restart.)
        if answered || machine.is_empty() {
            self.withdraw_incoming(&by.id).await;
        }
        if !member {
            let joined = EventBody::Joined { who: by.clone() };
            seq = Some(self.append(joined, None).await?.0);
            if let Some(r) = self.record.as_mut() {
                r.members.push(by.clone());
            }
        }
        if seq.is_some() || link.is_some() || answered {
            self.save_record().await?;
        }
        if restarting {
            self.offer_restart(&by).await?;
        }
        // Only once the new link is stored: the agent must never get a link that does not work.
        // A chat between operators has no agent to ask.
        if let Some(token) = link.filter(|_| !machine.is_empty()) {
            self.ask_agent_to_open(machine, token, myself);
        }
        Ok(Ack {
            seq,
            ..self.view_ack()
        })
    }

    /// Joining an ended session restarts it, with its history, and claims its machine again.
    /// The restart starts a new epoch (earlier machine-user logins are refused) with a fresh
    /// chat link, returned for the machine's agent.
    /// The machine is claimed first: a chat started with it since this one ended keeps it, and
    /// the restart is refused (conflict, naming that chat).
    async fn restart(&mut self, by: &Participant) -> Result<(u64, String), SessionError> {
        let r = self.record.as_ref().ok_or_else(not_found)?;
        let key = super::invite::chat_key(r).ok_or_else(not_found)?;
        let taken = if r.machine.is_empty() {
            PAIR_TAKEN
        } else if r.user.is_some() {
            USER_TAKEN
        } else {
            MACHINE_TAKEN
        };
        claim_chat_key(&self.ctx.stores, &self.id, &key, taken).await?;
        let (seq, _) = self
            .append(EventBody::Restarted { by: by.clone() }, None)
            .await?;
        let r = self.record.as_mut().ok_or_else(not_found)?;
        begin_epoch(r);
        let token = issue_link(r, self.ctx.link_ttl);
        Ok((seq, token))
    }

    async fn send(&mut self, by: Participant, client_id: String, text: String) -> CmdResult {
        let r = self.member_record(&by)?;
        if r.ended {
            return Err(SessionError::new(
                SessionErrorKind::Ended,
                "this chat has ended; join it again to restart it",
            ));
        }
        validate_message(&client_id, &text, self.ctx.max_message_bytes)?;
        let msg_id = message_id(&self.id, &by, &client_id);
        let message = EventBody::Message {
            from: by,
            text,
            client_id,
        };
        let (seq, duplicate) = self.append(message, Some(msg_id)).await?;
        self.refresh_record_if_stale().await;
        Ok(Ack {
            seq: Some(seq),
            duplicate,
            ..Ack::default()
        })
    }

    async fn end(&mut self, by: Participant) -> CmdResult {
        let r = self.member_record(&by)?;
        if r.ended {
            // The same answer for operators and the machine user, and the same as a send to an
            // ended chat: the caller's window shows it ended.
            return Err(SessionError::new(
                SessionErrorKind::Ended,
                "the chat has already ended",
            ));
        }
        let key = super::invite::chat_key(r);
        // Every operator's entry: the invited, and (between operators) a member asked again by
        // a restart.
        let direct = r.machine.is_empty();
        let invited: Vec<String> = (r.members.iter().filter(|_| direct).chain(&r.invited))
            .filter(|p| p.kind == ParticipantKind::Operator)
            .map(|p| p.id.clone())
            .collect();
        let (seq, _) = self.append(EventBody::Ended { by }, None).await?;
        if let Some(r) = self.record.as_mut() {
            r.ended = true;
        }
        self.save_record().await?;
        for who in &invited {
            self.withdraw_incoming(who).await;
        }
        // Free the machine (or the pair) for a new chat, unless it has moved on to another one.
        let index = &self.ctx.stores.machine_sessions;
        if let Some(key) = key
            && let Ok(Some(entry)) = index.entry(&key).await
            && entry.value.as_ref() == self.id.as_bytes()
        {
            let _ = index
                .delete_expect_revision(&key, Some(entry.revision))
                .await;
        }
        Ok(Ack {
            seq: Some(seq),
            ..self.view_ack()
        })
    }
}

/// Why a machine (or a pair of operators) cannot have another chat now.
pub(super) const MACHINE_TAKEN: &str = "a chat with this machine is already in progress";
pub(super) const USER_TAKEN: &str = "a chat with this user of the machine is already in progress";
pub(super) const PAIR_TAKEN: &str = "a chat with this operator is already in progress";

/// An opening command for an ID that is a session already.
pub(super) fn already_exists() -> SessionError {
    SessionError::new(SessionErrorKind::Conflict, "this session already exists")
}

impl SessionState {
    /// Starts this session: claims `key` (one chat in progress per machine, or per pair of
    /// operators), appends its `opened` event (de-duplicated: a retried open lands once) and
    /// makes its record. Returns the event's sequence.
    pub(super) async fn begin(
        &mut self,
        by: &Participant,
        machine: &str,
        user: Option<ChatUser>,
        key: &str,
        taken: &str,
    ) -> Result<u64, SessionError> {
        claim_chat_key(&self.ctx.stores, &self.id, key, taken).await?;
        let opened = EventBody::Opened {
            by: by.clone(),
            machine: machine.to_owned(),
            user: user.clone(),
        };
        let (seq, _) = self
            .append(opened, Some(format!("{}.opened", self.id)))
            .await?;
        let at = crate::now_ms();
        let mut record = super::fold::opened(&self.id, machine, by, at, seq);
        record.user = user;
        self.record = Some(record);
        Ok(seq)
    }
}

/// One chat in progress per machine (and per pair of operators): claims `key` (a machine ID or
/// [`crate::subjects::operator_pair_key`]) in the machine-sessions bucket for `session`, or
/// fails with `Conflict` naming the session that holds it.
pub(super) async fn claim_chat_key(
    stores: &crate::store::Stores,
    session: &str,
    key: &str,
    taken: &str,
) -> Result<(), SessionError> {
    let index = &stores.machine_sessions;
    let Err(e) = index.create(key, session.to_owned().into()).await else {
        return Ok(());
    };
    if e.kind() != kv::CreateErrorKind::AlreadyExists {
        return Err(unavailable("claiming the chat", e));
    }
    let current = index
        .get(key)
        .await
        .map_err(|e| unavailable("reading the chat in progress", e))?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    if current.as_deref() == Some(session) {
        return Ok(());
    }
    let mut err = SessionError::new(SessionErrorKind::Conflict, taken);
    err.session = current;
    Err(err)
}

pub(super) fn not_found() -> SessionError {
    SessionError::new(
        SessionErrorKind::NotFound,
        "no such chat session (it may have expired)",
    )
}

pub(super) fn invalid(message: impl Into<String>) -> SessionError {
    SessionError::new(SessionErrorKind::Invalid, message)
}

/// Checks a message before it is appended: its client id, and a text that is not blank, fits
/// in `max_bytes` and has no NUL character.
pub(super) fn validate_message(
    client_id: &str,
    text: &str,
    max_bytes: usize,
) -> Result<(), SessionError> {
    if !valid_client_id(client_id) {
        return Err(invalid(
            "the message id must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    if text.trim().is_empty() {
        return Err(invalid("the message is empty"));
    }
    if text.len() > max_bytes {
        return Err(SessionError::new(
            SessionErrorKind::TooLarge,
            format!(
                "the message has {} bytes; the limit is {max_bytes}",
                text.len()
            ),
        ));
    }
    if text.contains('\0') {
        return Err(invalid("the message contains a NUL character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(client_id: &str, text: &str) -> (SessionErrorKind, String) {
        let e = validate_message(client_id, text, 10).unwrap_err();
        (e.kind, e.message)
    }

    #[test]
    fn a_plain_message_passes() {
        assert!(validate_message("c-1_A", "hello", 10).is_ok());
        assert!(validate_message("c1", "0123456789", 10).is_ok());
    }

    #[test]
    fn blank_text_is_refused() {
        assert_eq!(
            refusal("c1", " \n\t"),
            (SessionErrorKind::Invalid, "the message is empty".into())
        );
    }

    #[test]
    fn text_over_the_limit_is_too_large() {
        assert_eq!(
            refusal("c1", "01234567890"),
            (
                SessionErrorKind::TooLarge,
                "the message has 11 bytes; the limit is 10".into()
            )
        );
        // The limit counts bytes, not characters.
        assert_eq!(refusal("c1", "ééééééé").0, SessionErrorKind::TooLarge);
    }

    #[test]
    fn nul_characters_are_refused() {
        assert_eq!(
            refusal("c1", "a\0b"),
            (
                SessionErrorKind::Invalid,
                "the message contains a NUL character".into()
            )
        );
    }

    #[test]
    fn bad_client_ids_are_refused() {
        for id in ["", "a.b", "with space", &"x".repeat(65)] {
            let (kind, message) = refusal(id, "hello");
            assert_eq!(kind, SessionErrorKind::Invalid, "{id:?}");
            assert!(message.starts_with("the message id"), "{message}");
        }
    }
}

#[cfg(test)]
mod properties;
