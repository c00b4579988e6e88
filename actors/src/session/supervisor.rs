//! The session supervisor: feeds session commands from NATS to session actors.
//!
//! It holds one queue subscription per partition this node owns ([`crate::partitions`]), on that
//! partition's session command subjects, starts the session's actor on demand, and restarts an
//! actor that fails or is killed. Actors that stop because they were idle are forgotten and
//! started again by their next command. When the node loses a partition it unsubscribes and
//! tells that partition's actors to stop (after answering what they already hold with
//! [`MOVED`]).

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::persist::unavailable;
use super::{IDLE_STOP, MOVED_STOP, SessionActor, SessionArgs, SessionContext, SessionMsg};
use crate::partitions::{MOVED, Owned};
use crate::protocol::{
    SessionCommand, SessionError, SessionErrorKind, SessionReply, SessionRequest,
};
use crate::subjects;
use crate::supervision::{ChildSpec, Children, follow_partitions, pump};

/// The ractor registry name of a session's actor (per process).
pub fn actor_name(session: &str) -> String {
    format!("session:{session}")
}

pub struct SessionSupervisor;

pub enum SupervisorMsg {
    Nats(async_nats::Message),
    /// The partitions this node owns now.
    Owned(Owned),
}

/// How a session actor is built.
struct SessionSpec {
    ctx: Arc<SessionContext>,
}

impl ChildSpec for SessionSpec {
    type Child = SessionActor;
    const KIND: &'static str = "session";
    const CLEAN_STOPS: &'static [&'static str] = &[IDLE_STOP, MOVED_STOP];

    fn name(&self, session: &str) -> Option<String> {
        Some(actor_name(session))
    }

    fn build(&self, session: &str) -> (SessionActor, SessionArgs) {
        let args = SessionArgs {
            id: session.to_string(),
            ctx: self.ctx.clone(),
        };
        (SessionActor, args)
    }
}

pub struct SupervisorState {
    sessions: Children<SessionSpec>,
    /// Per owned partition: the pump of its command subscription.
    pumps: HashMap<u32, tokio::task::JoinHandle<()>>,
    /// Forwards changes of the owned partitions to this actor.
    follow: tokio::task::JoinHandle<()>,
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<SessionContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        ctx: Arc<SessionContext>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let follow = follow_partitions(&ctx.partitions, myself.clone(), SupervisorMsg::Owned);
        Ok(SupervisorState {
            sessions: Children::new(SessionSpec { ctx }, myself.get_cell()),
            pumps: HashMap::new(),
            follow,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.follow.abort();
        for (_, pump) in state.pumps.drain() {
            pump.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Nats(msg) => {
                let reply = msg.reply.clone();
                if let Err(err) = state.route(msg).await {
                    state.answer_error(reply, err).await;
                }
            }
            SupervisorMsg::Owned(owned) => state.follow(owned, &myself).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A restarted actor rebuilds from the stream at once rather than on its next command.
        if let Some(actor) = state.sessions.on_event(evt).await {
            let _ = actor.cast(SessionMsg::Load);
        }
        Ok(())
    }
}

impl SupervisorState {
    /// Subscribes to the commands of partitions gained; unsubscribes from those lost and stops
    /// their actors.
    async fn follow(&mut self, owned: Owned, myself: &ActorRef<SupervisorMsg>) {
        let lost: Vec<u32> = self
            .pumps
            .keys()
            .copied()
            .filter(|p| !owned.contains(p))
            .collect();
        for p in lost {
            if let Some(pump) = self.pumps.remove(&p) {
                // Dropping the subscription unsubscribes.
                pump.abort();
            }
            for key in self.sessions.keys() {
                if subjects::partition_of(key) == p
                    && let Some(actor) = self.sessions.running(key)
                {
                    // Queued after the commands it holds, which it answers with MOVED.
                    let _ = actor.cast(SessionMsg::Moved);
                }
            }
        }
        let client = self.sessions.spec().ctx.stores.client.clone();
        for p in owned {
            if self.pumps.contains_key(&p) {
                continue;
            }
            let subject = subjects::session_commands_of(p);
            match client
                .queue_subscribe(subject, subjects::SESSIONS_QUEUE.into())
                .await
            {
                Ok(commands) => {
                    let pump = pump(commands, myself.clone(), SupervisorMsg::Nats);
                    self.pumps.insert(p, pump);
                }
                // The next change of the owned set retries; meanwhile the old owner's
                // subscription is gone and callers retry.
                Err(e) => tracing::warn!(partition = p, error = %e, "could not subscribe"),
            }
        }
        // The subscriptions must be known to the server before callers are told to retry here.
        let _ = client.flush().await;
    }

    /// Hands one command to its session's actor, started if needed.
    async fn route(&mut self, msg: async_nats::Message) -> Result<(), SessionError> {
        let Some(id) = subjects::session_of_command(msg.subject.as_str())
            .filter(|id| crate::protocol::valid_session_id(id))
        else {
            return Err(SessionError::new(
                SessionErrorKind::Invalid,
                "not a session ID",
            ));
        };
        if !self.sessions.spec().ctx.partitions.owns_key(id) {
            return Err(SessionError::new(SessionErrorKind::Unavailable, MOVED));
        }
        let SessionRequest { cmd, scope, epoch } =
            serde_json::from_slice(&msg.payload).map_err(|e| {
                SessionError::new(
                    SessionErrorKind::Invalid,
                    format!("invalid session command: {e}"),
                )
            })?;
        let actor = match self.sessions.running(id) {
            Some(actor) => actor,
            None => self.start(id, &cmd).await?,
        };
        let reply = msg.reply;
        let command = SessionMsg::Command {
            cmd,
            scope,
            epoch,
            reply,
        };
        if actor.cast(command).is_err() {
            // The actor is stopping; the caller's retry reaches its successor.
            tracing::debug!(session = %id, "command reached a stopping actor");
        }
        Ok(())
    }

    /// Starts the actor of a session that exists. Only the opening commands (`Open`,
    /// `OpenWithOperator`, `OpenFromMachine`) create a session: any other
    /// command on an unknown ID is `NotFound` without an actor, so made-up IDs cannot fill the
    /// node with actors idling for `idle_actor_timeout`.
    async fn start(
        &mut self,
        id: &str,
        cmd: &SessionCommand,
    ) -> Result<ActorRef<SessionMsg>, SessionError> {
        let opens = matches!(
            cmd,
            SessionCommand::Open { .. }
                | SessionCommand::OpenWithOperator { .. }
                | SessionCommand::OpenFromMachine { .. }
        );
        if !opens && !self.exists(id).await? {
            return Err(SessionError::new(
                SessionErrorKind::NotFound,
                "no such session",
            ));
        }
        self.sessions.get_or_start(id).await.map_err(|e| {
            SessionError::new(
                SessionErrorKind::Unavailable,
                format!("could not start the session: {e}"),
            )
        })
    }

    /// Whether the session has a record or, failing that (a crash between its first event and
    /// its record), events: either way its actor can rebuild it.
    async fn exists(&self, id: &str) -> Result<bool, SessionError> {
        let stores = &self.sessions.spec().ctx.stores;
        let record = stores
            .sessions
            .get(id)
            .await
            .map_err(|e| unavailable("reading the session record", e))?;
        if record.is_some() {
            return Ok(true);
        }
        let last_seq = stores
            .last_event_seq(id)
            .await
            .map_err(|e| unavailable("reading the session's events", e))?;
        Ok(last_seq > 0)
    }

    async fn answer_error(&self, reply: Option<async_nats::Subject>, err: SessionError) {
        let Some(reply) = reply else { return };
        let body = serde_json::to_vec::<SessionReply>(&Err(err)).unwrap_or_default();
        let client = &self.sessions.spec().ctx.stores.client;
        let _ = client.publish(reply, body.into()).await;
    }
}
