//! The session supervisor: feeds session commands from NATS to session actors.
//!
//! It holds a queue subscription on every session's command subject (so each command reaches one
//! node), starts the session's actor on demand, and restarts an actor that fails or is killed.
//! Actors that stop because they were idle are forgotten and started again by their next command.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::protocol::{SessionError, SessionErrorKind, SessionReply, SessionRequest};
use crate::session::{IDLE_STOP, SessionActor, SessionArgs, SessionContext, SessionMsg};
use crate::subjects;

/// The ractor registry name of a session's actor (per process).
pub fn actor_name(session: &str) -> String {
    format!("session:{session}")
}

/// The child an event says stopped, and why ("idle", "killed", "failed: …"); `None` for events
/// that are not a child stopping.
pub(crate) fn stopped_child(evt: &SupervisionEvent) -> Option<(ActorId, String)> {
    match evt {
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.get_id(),
            reason.clone().unwrap_or_else(|| "stopped".into()),
        )),
        SupervisionEvent::ActorFailed(cell, err) => Some((cell.get_id(), format!("failed: {err}"))),
        _ => None,
    }
}

pub struct SessionSupervisor;

pub enum SupervisorMsg {
    Nats(async_nats::Message),
}

pub struct SupervisorState {
    ctx: Arc<SessionContext>,
    children: HashMap<String, ActorRef<SessionMsg>>,
    by_actor: HashMap<ActorId, String>,
    /// Recent restarts per session, to stop a crash loop from spinning.
    restarts: HashMap<String, (Instant, u32)>,
    pump: tokio::task::JoinHandle<()>,
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
        let mut sub = ctx
            .stores
            .client
            .queue_subscribe(subjects::SESSION_COMMANDS, subjects::SESSIONS_QUEUE.into())
            .await?;
        let pump = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if myself.cast(SupervisorMsg::Nats(msg)).is_err() {
                    break;
                }
            }
        });
        Ok(SupervisorState {
            ctx,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
            pump,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.pump.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisorMsg::Nats(msg) = msg;
        let reply = msg.reply.clone();
        let client = state.ctx.stores.client.clone();
        let answer_error = |err: SessionError| {
            let client = client.clone();
            let reply = reply.clone();
            async move {
                if let Some(reply) = reply {
                    let body = serde_json::to_vec::<SessionReply>(&Err(err)).unwrap_or_default();
                    let _ = client.publish(reply, body.into()).await;
                }
            }
        };
        let Some(id) = subjects::session_of_command(msg.subject.as_str())
            .filter(|id| crate::protocol::valid_session_id(id))
        else {
            answer_error(SessionError::new(
                SessionErrorKind::Invalid,
                "not a session ID",
            ))
            .await;
            return Ok(());
        };
        let request: SessionRequest = match serde_json::from_slice(&msg.payload) {
            Ok(c) => c,
            Err(e) => {
                answer_error(SessionError::new(
                    SessionErrorKind::Invalid,
                    format!("invalid session command: {e}"),
                ))
                .await;
                return Ok(());
            }
        };
        let actor = match state.children.get(id) {
            Some(a) => a.clone(),
            None => match state.spawn(&myself, id).await {
                Ok(a) => a,
                Err(e) => {
                    answer_error(SessionError::new(
                        SessionErrorKind::Unavailable,
                        format!("could not start the session: {e}"),
                    ))
                    .await;
                    return Ok(());
                }
            },
        };
        let SessionRequest { cmd, scope } = request;
        if actor
            .cast(SessionMsg::Command { cmd, scope, reply })
            .is_err()
        {
            // The actor is stopping; the caller's retry reaches its successor.
            tracing::debug!(session = %id, "command reached a stopping actor");
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((child, why)) = crate::sessions::stopped_child(&evt) else {
            return Ok(());
        };
        let Some(id) = state.by_actor.remove(&child) else {
            return Ok(());
        };
        state.children.remove(&id);
        if why == IDLE_STOP {
            return Ok(());
        }
        // Anything else is a crash: restart now and rebuild from the stream, unless this session
        // keeps crashing, in which case its next command will try again.
        let now = Instant::now();
        let entry = state.restarts.entry(id.clone()).or_insert((now, 0));
        if now.duration_since(entry.0) > Duration::from_secs(10) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > 3 {
            tracing::error!(session = %id, %why, "session actor keeps failing; not restarting");
            return Ok(());
        }
        tracing::warn!(session = %id, %why, "session actor stopped; restarting");
        match state.spawn(&myself, &id).await {
            Ok(actor) => {
                let _ = actor.cast(SessionMsg::Load);
            }
            Err(e) => tracing::error!(session = %id, error = %e, "restart failed"),
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<ActorRef<SessionMsg>, ActorProcessingErr> {
        let (actor, _handle) = Actor::spawn_linked(
            Some(actor_name(id)),
            SessionActor,
            SessionArgs {
                id: id.to_string(),
                ctx: self.ctx.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        self.children.insert(id.to_string(), actor.clone());
        self.by_actor.insert(actor.get_id(), id.to_string());
        Ok(actor)
    }
}
