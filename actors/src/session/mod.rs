//! The session actor: one per chat session, the only writer of the session's events.
//!
//! It checks membership and limits, appends each event to the events stream with
//! `Nats-Msg-Id` de-duplication and `Nats-Expected-Last-Subject-Sequence` fencing (so a stale
//! owner can never append), keeps the session's [`SessionRecord`] in KV, and answers the
//! sender with the event's sequence. Its state is rebuilt from KV and the stream when it starts,
//! so a crashed or idle-stopped actor comes back with the session intact.
//!
//! - this module: the actor plumbing (state, messages, dispatch);
//! - [`commands`]: the six commands and message validation;
//! - [`persist`]: rebuilding, the fenced and de-duplicated append, the record in KV;
//! - [`agent`]: asking the machine's agent to open the chat window;
//! - [`invite`]: chats waiting for an operator's answer (between operators, started by a
//!   machine user) and their incoming-chat entries;
//! - [`link`]: the machine user's chat link (single use, expiry, epochs) and its login;
//! - [`fold`]: rebuilding a record from events (pure);
//! - [`supervisor`]: the [`SessionSupervisor`] feeding commands from NATS to the actors.

mod agent;
mod commands;
mod fold;
mod invite;
mod link;
mod persist;
pub mod supervisor;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::machines::Scope;
use crate::protocol::{
    Ack, AgentWindow, EventBody, SessionCommand, SessionError, SessionErrorKind, SessionRecord,
    SessionReply, SessionView,
};
use crate::subjects;

pub use fold::fold;
pub use supervisor::{SessionSupervisor, SupervisorMsg, actor_name};

/// What every session actor of a node shares.
pub struct SessionContext {
    pub stores: crate::store::Stores,
    /// The partitions this node owns: an actor acts only while its session's is one of them.
    pub partitions: crate::partitions::Partitions,
    /// Base URL of the web UI, for the machine user's chat link.
    pub public_url: String,
    /// Largest message text in bytes.
    pub max_message_bytes: usize,
    /// An actor with no command for this long stops; it is rebuilt on demand.
    pub idle_timeout: Duration,
    /// How long to wait for an agent to answer "open chat".
    pub agent_timeout: Duration,
    /// How long a chat link's token works if unused.
    pub link_ttl: Duration,
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
        /// The machine-user caller's login epoch (see [`crate::protocol::SessionRequest`]).
        epoch: Option<u32>,
        reply: Option<async_nats::Subject>,
    },
    /// Rebuild the state now (sent after a restart).
    Load,
    /// The agent's answer to "open chat" (`Waiting`: it could not be reached).
    AgentAnswer { status: AgentWindow, detail: String },
    /// The machine checked in since the session last asked its agent (found by the session's
    /// own re-check; the machine's owner sends [`SessionCommand::MachineBack`] instead).
    MachineBack { machine: String },
    /// Timer tick: stop when idle.
    IdleCheck,
    /// The node lost the session's partition: stop (after the commands queued before this).
    Moved,
}

/// The reason an actor gives when it stops because it was idle (not a failure).
pub const IDLE_STOP: &str = "idle";
/// The reason an actor gives when it stops because its partition moved to another node.
pub const MOVED_STOP: &str = "moved";

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
    /// An "open chat" to the agent is on its way: its answer has not arrived yet, so the
    /// machine's check-in must not send a second one (a second window).
    asking_agent: bool,
    /// When (ms since the epoch) the agent was last asked to open the window.
    asked_agent_at: u64,
    /// When this actor last told the machine's owner that it waits for the machine.
    awaited_at: Option<Instant>,
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
            asking_agent: false,
            asked_agent_at: 0,
            awaited_at: None,
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
            SessionMsg::Command {
                cmd,
                scope,
                epoch,
                reply,
            } => state.on_command(cmd, &scope, epoch, reply, &myself).await?,
            SessionMsg::Load => {
                if let Err(e) = state.ensure_loaded().await {
                    tracing::warn!(session = %state.id, error = %e, "rebuild failed; retrying on demand");
                }
            }
            SessionMsg::AgentAnswer { status, detail } => {
                state.on_agent_answer(status, detail, &myself).await
            }
            SessionMsg::MachineBack { machine } => {
                if state.ensure_loaded().await.is_ok() {
                    state.on_machine_back(&machine, &myself).await;
                }
            }
            SessionMsg::IdleCheck => state.on_idle_check(&myself).await,
            SessionMsg::Moved => myself.stop(Some(MOVED_STOP.into())),
        }
        Ok(())
    }
}

impl SessionState {
    /// Whether this node still owns the session's partition; if not, the caller retries and
    /// reaches the new owner. (The append's fencing refuses a stale owner anyway.)
    pub(super) fn check_owner(&self) -> Result<(), SessionError> {
        if self.ctx.partitions.owns_key(&self.id) {
            Ok(())
        } else {
            Err(SessionError::new(
                SessionErrorKind::Unavailable,
                crate::partitions::MOVED,
            ))
        }
    }

    /// The session as its members see it now.
    fn view(&self) -> Option<SessionView> {
        let r = self.record.as_ref()?;
        Some(SessionView {
            id: r.id.clone(),
            machine: r.machine.clone(),
            user: r.user.clone(),
            ended: r.ended,
            last_seq: self.last_seq,
            members: r.members.clone(),
            invited: r.invited.clone(),
            retention_secs: self.ctx.stores.config.retention.as_secs(),
            agent: r.agent,
        })
    }

    /// An answer carrying the session as it is now.
    fn view_ack(&self) -> Ack {
        Ack {
            session: self.view(),
            ..Ack::default()
        }
    }

    /// Runs a command and answers it on `reply`.
    async fn on_command(
        &mut self,
        cmd: SessionCommand,
        scope: &Scope,
        epoch: Option<u32>,
        reply: Option<async_nats::Subject>,
        myself: &ActorRef<SessionMsg>,
    ) -> Result<(), serde_json::Error> {
        self.last_activity = Instant::now();
        let ready = match self.check_owner() {
            Ok(()) => self.ensure_loaded().await,
            Err(e) => Err(e),
        };
        let result: SessionReply = match ready {
            Ok(()) => match self.check_epoch(&cmd, epoch) {
                Ok(()) => self.execute(cmd, scope, myself).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Some(reply) = reply {
            let body = serde_json::to_vec(&result)?;
            if let Err(e) = self.ctx.stores.client.publish(reply, body.into()).await {
                tracing::warn!(session = %self.id, error = %e, "could not answer");
            }
        }
        Ok(())
    }

    /// Records what the agent said about the chat window, as an event and in the record. An
    /// agent that could not be reached is waited for: one `waiting` event (not one per
    /// attempt), and the machine's owner is told to wake the session at its next check-in.
    async fn on_agent_answer(
        &mut self,
        status: AgentWindow,
        detail: String,
        myself: &ActorRef<SessionMsg>,
    ) {
        self.asking_agent = false;
        if self.ensure_loaded().await.is_err() || self.record.is_none() {
            return;
        }
        let was_waiting = self.waiting_for_machine();
        if !(status == AgentWindow::Waiting && was_waiting) {
            let _ = self.append(EventBody::Agent { status, detail }, None).await;
            if let Some(r) = self.record.as_mut() {
                r.agent_waiting_since = if status == AgentWindow::Waiting {
                    crate::now_ms()
                } else {
                    0
                };
                r.agent = status;
            }
            let _ = self.save_record().await;
        }
        if self.waiting_for_machine() {
            self.await_machine(myself);
        }
    }

    /// Stops the actor when it has been idle long enough. A session waiting for its machine
    /// stays, re-checking the machine now and then, until the wait ends.
    async fn on_idle_check(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.loaded && self.waiting_for_machine() {
            self.recheck_machine(myself).await;
            if self.waiting_for_machine() {
                return;
            }
        }
        if self.last_activity.elapsed() < self.ctx.idle_timeout {
            return;
        }
        // Leave a fresh record behind so the next start needs no replay.
        let behind = self.record.as_ref().is_some_and(|r| r.seq < self.last_seq);
        if self.loaded && behind {
            let _ = self.save_record().await;
        }
        myself.stop(Some(IDLE_STOP.into()));
    }
}
