//! The session actor: one per chat session, the only writer of the session's events.
//!
//! It checks membership and limits, appends each event to the events stream with
//! `Nats-Msg-Id` de-duplication and `Nats-Expected-Last-Subject-Sequence` fencing (so a stale
//! owner can never append), keeps the session's [`SessionRecord`] in KV, and answers the
//! sender with the event's sequence. Its state is rebuilt from KV and the stream when it starts,
//! so a crashed or idle-stopped actor comes back with the session intact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sha2::{Digest, Sha256};

use crate::machines::{MachineRecord, Scope};
use crate::protocol::{
    Ack, AgentCommand, AgentReply, AgentWindow, Event, EventBody, Participant, ParticipantKind,
    SessionCommand, SessionError, SessionErrorKind, SessionRecord, SessionReply, SessionView,
    valid_client_id, valid_machine_id,
};
use crate::store::Stores;
use crate::subjects;

/// What every session actor of a node shares.
pub struct SessionContext {
    pub stores: Stores,
    /// Base URL of the web UI, for the machine user's chat link.
    pub public_url: String,
    /// Largest message text in bytes.
    pub max_message_bytes: usize,
    /// An actor with no command for this long stops; it is rebuilt on demand.
    pub idle_timeout: Duration,
    /// How long to wait for an agent to answer "open chat".
    pub agent_timeout: Duration,
}

pub struct SessionActor;

pub struct SessionArgs {
    pub id: String,
    pub ctx: Arc<SessionContext>,
}

/// Messages a session actor handles.
pub enum SessionMsg {
    /// A command from a gateway, with the NATS subject to answer on.
    Command {
        cmd: SessionCommand,
        scope: Scope,
        reply: Option<async_nats::Subject>,
    },
    /// Rebuild the state now (sent after a restart).
    Load,
    /// The agent's answer to "open chat".
    AgentAnswer { status: AgentWindow, detail: String },
    /// Timer tick: stop when idle.
    IdleCheck,
}

/// The reason an actor gives when it stops because it was idle (not a failure).
pub const IDLE_STOP: &str = "idle";

pub struct SessionState {
    id: String,
    subject: String,
    ctx: Arc<SessionContext>,
    loaded: bool,
    record: Option<SessionRecord>,
    /// KV revision of `record`, for compare-and-set; 0 when not stored.
    revision: u64,
    record_saved: Instant,
    /// Sequence of the session's newest event: the fencing token for the next append.
    last_seq: u64,
    last_activity: Instant,
    timer: Option<tokio::task::JoinHandle<()>>,
}

type CmdResult = Result<Ack, SessionError>;

fn unavailable(what: &str, e: impl std::fmt::Display) -> SessionError {
    tracing::warn!(error = %e, "{what}");
    SessionError::new(SessionErrorKind::Unavailable, format!("{what}; try again"))
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        // No I/O here: the supervisor awaits pre_start. State is loaded by the first message.
        let tick = (args.ctx.idle_timeout / 4).max(Duration::from_millis(50));
        let timer = myself.send_interval(tick, || SessionMsg::IdleCheck);
        Ok(SessionState {
            subject: subjects::session_events(&args.id),
            id: args.id,
            ctx: args.ctx,
            loaded: false,
            record: None,
            revision: 0,
            record_saved: Instant::now(),
            last_seq: 0,
            last_activity: Instant::now(),
            timer: Some(timer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Command { cmd, scope, reply } => {
                state.last_activity = Instant::now();
                let result = match state.ensure_loaded().await {
                    Ok(()) => state.execute(cmd, &scope, &myself).await,
                    Err(e) => Err(e),
                };
                if let Some(reply) = reply {
                    let body = serde_json::to_vec::<SessionReply>(&result)?;
                    if let Err(e) = state.ctx.stores.client.publish(reply, body.into()).await {
                        tracing::warn!(session = %state.id, error = %e, "could not answer");
                    }
                }
            }
            SessionMsg::Load => {
                if let Err(e) = state.ensure_loaded().await {
                    tracing::warn!(session = %state.id, error = %e, "rebuild failed; retrying on demand");
                }
            }
            SessionMsg::AgentAnswer { status, detail } => {
                if state.ensure_loaded().await.is_ok() && state.record.is_some() {
                    let _ = state
                        .append(EventBody::Agent { status, detail }, None)
                        .await;
                    if let Some(r) = state.record.as_mut() {
                        r.agent = status;
                    }
                    let _ = state.save_record().await;
                }
            }
            SessionMsg::IdleCheck => {
                if state.last_activity.elapsed() >= state.ctx.idle_timeout {
                    // Leave a fresh record behind so the next start needs no replay.
                    if state.loaded
                        && state
                            .record
                            .as_ref()
                            .is_some_and(|r| r.seq < state.last_seq)
                    {
                        let _ = state.save_record().await;
                    }
                    myself.stop(Some(IDLE_STOP.into()));
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    /// Rebuilds the state from the sessions bucket and the events stream, once.
    async fn ensure_loaded(&mut self) -> Result<(), SessionError> {
        if self.loaded {
            return Ok(());
        }
        let stores = &self.ctx.stores;
        let entry = stores
            .sessions
            .entry(&self.id)
            .await
            .map_err(|e| unavailable("reading the session record", e))?;
        let (mut record, revision) = match entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice::<SessionRecord>(&e.value).ok(),
                e.revision,
            ),
            _ => (None, 0),
        };
        let last_seq = stores
            .last_event_seq(&self.id)
            .await
            .map_err(|e| unavailable("reading the session's events", e))?;
        let folded_to = record.as_ref().map_or(0, |r| r.seq);
        if last_seq > folded_to {
            // Events written after the record was saved (a crash in between): fold them in.
            let mut replay = stores
                .replay(&[&self.id], folded_to + 1)
                .await
                .map_err(|e| unavailable("replaying the session", e))?;
            while let Some(ev) = replay.next().await {
                let ev = ev.map_err(|e| unavailable("replaying the session", e))?;
                if let Ok(event) = ev.decode() {
                    fold(&mut record, &self.id, ev.seq, &event.body);
                }
            }
        }
        self.record = record;
        self.revision = revision;
        self.last_seq = last_seq;
        self.record_saved = Instant::now();
        self.loaded = true;
        Ok(())
    }

    fn view(&self) -> Option<SessionView> {
        let r = self.record.as_ref()?;
        Some(SessionView {
            id: r.id.clone(),
            machine: r.machine.clone(),
            ended: r.ended,
            last_seq: self.last_seq,
            members: r.members.clone(),
            retention_secs: self.ctx.stores.config.retention.as_secs(),
            agent: r.agent,
        })
    }

    fn not_found(&self) -> SessionError {
        SessionError::new(
            SessionErrorKind::NotFound,
            "no such chat session (it may have expired)",
        )
    }

    /// The record, if `by` is one of its members.
    fn member_record(&self, by: &Participant) -> Result<&SessionRecord, SessionError> {
        let r = self.record.as_ref().ok_or_else(|| self.not_found())?;
        if r.members.iter().any(|m| m.same(by)) {
            Ok(r)
        } else {
            Err(SessionError::new(
                SessionErrorKind::NotMember,
                "you are not a member of this chat session",
            ))
        }
    }

    async fn execute(
        &mut self,
        cmd: SessionCommand,
        scope: &Scope,
        myself: &ActorRef<SessionMsg>,
    ) -> CmdResult {
        // A session with a machine outside the caller's scope does not exist for them.
        let machine = match &cmd {
            SessionCommand::Open { machine, .. } => Some(machine.as_str()),
            _ => self.record.as_ref().map(|r| r.machine.as_str()),
        };
        if machine.is_some_and(|m| !scope.covers(m)) {
            return Err(self.not_found());
        }
        match cmd {
            SessionCommand::Open { by, machine } => self.open(by, machine, myself).await,
            SessionCommand::Join { by } => self.join(by).await,
            SessionCommand::Send {
                by,
                client_id,
                text,
            } => self.send(by, client_id, text).await,
            SessionCommand::End { by } => self.end(by).await,
            SessionCommand::View { by } => {
                self.member_record(&by)?;
                Ok(Ack {
                    session: self.view(),
                    ..Ack::default()
                })
            }
            SessionCommand::MachineLogin { token } => self.machine_login(token).await,
        }
    }

    async fn open(
        &mut self,
        by: Participant,
        machine: String,
        myself: &ActorRef<SessionMsg>,
    ) -> CmdResult {
        if by.kind != ParticipantKind::Operator {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                "only operators open chats with machines",
            ));
        }
        if !valid_machine_id(&machine) {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                format!("{machine:?} is not a machine ID"),
            ));
        }
        if let Some(r) = &self.record {
            // A retried open by its opener is answered as the first was.
            if r.machine == machine && r.members.iter().any(|m| m.same(&by)) {
                return Ok(Ack {
                    session: self.view(),
                    ..Ack::default()
                });
            }
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                "this session already exists",
            ));
        }
        // One session in progress per machine: claim the machine first.
        let index = &self.ctx.stores.machine_sessions;
        if let Err(e) = index.create(&machine, self.id.clone().into()).await {
            if e.kind() != kv::CreateErrorKind::AlreadyExists {
                return Err(unavailable("claiming the machine", e));
            }
            let current = index
                .get(&machine)
                .await
                .map_err(|e| unavailable("reading the machine's session", e))?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if current.as_deref() != Some(self.id.as_str()) {
                let mut err = SessionError::new(
                    SessionErrorKind::Conflict,
                    "a chat with this machine is already in progress",
                );
                err.session = current;
                return Err(err);
            }
        }
        let token = hex::encode(rand::random::<[u8; 24]>());
        let seq = self
            .append(
                EventBody::Opened {
                    by: by.clone(),
                    machine: machine.clone(),
                },
                Some(format!("{}.opened", self.id)),
            )
            .await?
            .0;
        self.record = Some(SessionRecord {
            id: self.id.clone(),
            machine: machine.clone(),
            created_at: crate::now_ms(),
            members: vec![by],
            ended: false,
            token_sha256: sha256_hex(&token),
            agent: AgentWindow::Pending,
            seq,
        });
        self.save_record().await?;
        self.ask_agent_to_open(machine, token, myself);
        Ok(Ack {
            seq: Some(seq),
            session: self.view(),
            ..Ack::default()
        })
    }

    /// Asks the machine's agent to open the chat window, without waiting for it here.
    fn ask_agent_to_open(&self, machine: String, token: String, myself: &ActorRef<SessionMsg>) {
        let url = format!(
            "{}/m/{}/#t={}",
            self.ctx.public_url.trim_end_matches('/'),
            self.id,
            token
        );
        let cmd = AgentCommand::OpenChat {
            session: self.id.clone(),
            url,
        };
        let client = self.ctx.stores.client.clone();
        let timeout = self.ctx.agent_timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            let body = serde_json::to_vec(&cmd).unwrap_or_default();
            let answer = tokio::time::timeout(
                timeout,
                client.request(subjects::agent_command(&machine), body.into()),
            )
            .await;
            let (status, detail) = match answer {
                Ok(Ok(msg)) => match serde_json::from_slice::<AgentReply>(&msg.payload) {
                    Ok(r) if r.ok => (AgentWindow::Opened, r.detail),
                    Ok(r) => (AgentWindow::Failed, r.detail),
                    Err(e) => (AgentWindow::Failed, format!("unreadable agent answer: {e}")),
                },
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    (AgentWindow::Failed, "the machine's agent is offline".into())
                }
                Ok(Err(e)) => (AgentWindow::Failed, format!("agent request failed: {e}")),
                Err(_) => (
                    AgentWindow::Failed,
                    "the machine's agent did not answer".into(),
                ),
            };
            let _ = myself.cast(SessionMsg::AgentAnswer { status, detail });
        });
    }

    async fn join(&mut self, by: Participant) -> CmdResult {
        if by.kind != ParticipantKind::Operator {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                "machine users join with their chat link",
            ));
        }
        let r = self.record.as_ref().ok_or_else(|| self.not_found())?;
        let member = r.members.iter().any(|m| m.same(&by));
        let mut seq = None;
        if r.ended {
            // F7: joining an ended session restarts it, with its history.
            let machine = r.machine.clone();
            seq = Some(
                self.append(EventBody::Restarted { by: by.clone() }, None)
                    .await?
                    .0,
            );
            if let Some(r) = self.record.as_mut() {
                r.ended = false;
            }
            self.ctx
                .stores
                .machine_sessions
                .put(&machine, self.id.clone().into())
                .await
                .map_err(|e| unavailable("claiming the machine", e))?;
        }
        if !member {
            seq = Some(
                self.append(EventBody::Joined { who: by.clone() }, None)
                    .await?
                    .0,
            );
            if let Some(r) = self.record.as_mut() {
                r.members.push(by);
            }
        }
        if seq.is_some() {
            self.save_record().await?;
        }
        Ok(Ack {
            seq,
            session: self.view(),
            ..Ack::default()
        })
    }

    async fn send(&mut self, by: Participant, client_id: String, text: String) -> CmdResult {
        let r = self.member_record(&by)?;
        if r.ended {
            return Err(SessionError::new(
                SessionErrorKind::Ended,
                "this chat has ended; join it again to restart it",
            ));
        }
        if !valid_client_id(&client_id) {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                "the message id must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        if text.trim().is_empty() {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                "the message is empty",
            ));
        }
        if text.len() > self.ctx.max_message_bytes {
            return Err(SessionError::new(
                SessionErrorKind::TooLarge,
                format!(
                    "the message has {} bytes; the limit is {}",
                    text.len(),
                    self.ctx.max_message_bytes
                ),
            ));
        }
        if text.contains('\0') {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                "the message contains a NUL character",
            ));
        }
        let msg_id = format!("{}.m.{}", self.id, client_id);
        let (seq, duplicate) = self
            .append(
                EventBody::Message {
                    from: by,
                    text,
                    client_id,
                },
                Some(msg_id),
            )
            .await?;
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
            return Ok(Ack {
                session: self.view(),
                ..Ack::default()
            });
        }
        let machine = r.machine.clone();
        let (seq, _) = self.append(EventBody::Ended { by }, None).await?;
        if let Some(r) = self.record.as_mut() {
            r.ended = true;
        }
        self.save_record().await?;
        // Free the machine for a new chat, unless it has moved on to another session.
        let index = &self.ctx.stores.machine_sessions;
        if let Ok(Some(entry)) = index.entry(&machine).await
            && entry.value.as_ref() == self.id.as_bytes()
        {
            let _ = index
                .delete_expect_revision(&machine, Some(entry.revision))
                .await;
        }
        Ok(Ack {
            seq: Some(seq),
            session: self.view(),
            ..Ack::default()
        })
    }

    async fn machine_login(&mut self, token: String) -> CmdResult {
        let r = self.record.as_ref().ok_or_else(|| self.not_found())?;
        if !crate::constant_time_eq(sha256_hex(&token).as_bytes(), r.token_sha256.as_bytes()) {
            return Err(SessionError::new(
                SessionErrorKind::BadToken,
                "this chat link is not valid",
            ));
        }
        let machine = r.machine.clone();
        let existing = r
            .members
            .iter()
            .find(|m| m.kind == ParticipantKind::MachineUser)
            .cloned();
        let participant = match existing {
            Some(p) => p,
            None => {
                let name = self.logged_on_user(&machine).await;
                let who = Participant {
                    kind: ParticipantKind::MachineUser,
                    id: machine,
                    name,
                };
                self.append(EventBody::Joined { who: who.clone() }, None)
                    .await?;
                if let Some(r) = self.record.as_mut() {
                    r.members.push(who.clone());
                }
                self.save_record().await?;
                who
            }
        };
        Ok(Ack {
            participant: Some(participant),
            session: self.view(),
            ..Ack::default()
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

    /// Appends one event, fenced on the session's last sequence. Returns (sequence, duplicate).
    async fn append(
        &mut self,
        body: EventBody,
        msg_id: Option<String>,
    ) -> Result<(u64, bool), SessionError> {
        let event = Event {
            session: self.id.clone(),
            at: crate::now_ms(),
            body,
        };
        let payload: bytes::Bytes = serde_json::to_vec(&event)
            .map_err(|e| unavailable("encoding an event", e))?
            .into();
        for attempt in 0..2 {
            let mut publish = PublishMessage::build()
                .payload(payload.clone())
                .expected_last_subject_sequence(self.last_seq);
            if let Some(id) = &msg_id {
                publish = publish.message_id(id);
            }
            let ack = match self
                .ctx
                .stores
                .js
                .send_publish(self.subject.clone(), publish)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) => {
                    if !ack.duplicate {
                        self.last_seq = ack.sequence;
                    }
                    return Ok((ack.sequence, ack.duplicate));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence && attempt == 0 => {
                    // Our fencing token is stale: events expired, or another owner wrote.
                    // Rebuild from the store and try once more; a second refusal means we
                    // are not the owner and must not write.
                    tracing::warn!(session = %self.id, "fenced off; rebuilding from the stream");
                    self.loaded = false;
                    self.ensure_loaded().await?;
                }
                Err(e) => return Err(unavailable("appending an event", e)),
            }
        }
        Err(SessionError::new(
            SessionErrorKind::Unavailable,
            "the session is owned elsewhere; try again",
        ))
    }

    /// Stores the record (compare-and-set on its revision).
    async fn save_record(&mut self) -> Result<(), SessionError> {
        let Some(record) = self.record.as_mut() else {
            return Ok(());
        };
        record.seq = self.last_seq;
        let json: bytes::Bytes = serde_json::to_vec(record)
            .map_err(|e| unavailable("encoding the session record", e))?
            .into();
        let sessions = &self.ctx.stores.sessions;
        let written = if self.revision == 0 {
            sessions
                .create(&self.id, json)
                .await
                .map_err(|e| unavailable("storing the session record", e))
        } else {
            sessions
                .update(&self.id, json, self.revision)
                .await
                .map_err(|e| unavailable("storing the session record", e))
        };
        match written {
            Ok(rev) => {
                self.revision = rev;
                self.record_saved = Instant::now();
                Ok(())
            }
            Err(e) => {
                // Someone else changed the record: rebuild before the next command.
                self.loaded = false;
                Err(e)
            }
        }
    }

    /// Keeps the record and the machine index from expiring while the session lives.
    async fn refresh_record_if_stale(&mut self) {
        let half = self.ctx.stores.config.session_ttl / 2;
        if self.record_saved.elapsed() < half {
            return;
        }
        if self.save_record().await.is_ok()
            && let Some(r) = &self.record
            && !r.ended
        {
            let _ = self
                .ctx
                .stores
                .machine_sessions
                .put(&r.machine, self.id.clone().into())
                .await;
        }
    }
}

/// Applies one event to a session record (used when rebuilding).
pub fn fold(record: &mut Option<SessionRecord>, id: &str, seq: u64, body: &EventBody) {
    if let EventBody::Opened { by, machine } = body
        && record.is_none()
    {
        *record = Some(SessionRecord {
            id: id.into(),
            machine: machine.clone(),
            created_at: crate::now_ms(),
            members: vec![by.clone()],
            ended: false,
            token_sha256: String::new(),
            agent: AgentWindow::Pending,
            seq,
        });
        return;
    }
    let Some(r) = record.as_mut() else { return };
    r.seq = seq;
    match body {
        EventBody::Joined { who } if !r.members.iter().any(|m| m.same(who)) => {
            r.members.push(who.clone())
        }
        EventBody::Left { who } => r.members.retain(|m| !m.same(who)),
        EventBody::Ended { .. } => r.ended = true,
        EventBody::Restarted { .. } => r.ended = false,
        EventBody::Agent { status, .. } => r.agent = *status,
        _ => {}
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}
