//! Asking the machine's agent to open the machine user's chat window, and waiting for a
//! machine whose agent could not be reached until it checks in again (within the retention).

use std::time::{Duration, Instant};

use ractor::ActorRef;

use super::link::issue_link;
use super::{SessionMsg, SessionState};
use async_nats::jetstream::kv;

use crate::enrollment::AGENT_KEYS_BUCKET;
use crate::machines::{MachineReply, MachineRequest};
use crate::protocol::{AgentCommand, AgentWindow, EventBody, agent_window};
use crate::subjects;

/// How often a session waiting for its machine asks the machine's owner again whether it
/// checked in: the owner's wake-up notice is fire-and-forget, and its memory of who waits is
/// lost when the machine's partition moves, so this is what makes the wait robust.
const WAITING_RECHECK: Duration = Duration::from_secs(30);

impl SessionState {
    /// Whether the session waits for its machine to check in again (its agent could not be
    /// reached when asked to open the window).
    pub(super) fn waiting_for_machine(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| !r.ended && !r.machine.is_empty() && r.agent == AgentWindow::Waiting)
    }

    /// Tells the machine's owner that this session waits for the machine, and returns at once.
    /// A spawned task sends [`MachineRequest::Await`]; if the answer shows a check-in since the
    /// agent was last asked, the task reports [`SessionMsg::MachineBack`] right away, and
    /// otherwise the owner sends the session `MachineBack` at the next check-in.
    pub(super) fn await_machine(&mut self, myself: &ActorRef<SessionMsg>) {
        let Some(machine) = self.record.as_ref().map(|r| r.machine.clone()) else {
            return;
        };
        self.awaited_at = Some(Instant::now());
        let since = self.asked_agent_at;
        let request = MachineRequest::Await {
            session: self.id.clone(),
            since,
        };
        let client = self.ctx.stores.client.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let body = serde_json::to_vec(&request).unwrap_or_default();
            let answer = crate::partitions::request_owner::<MachineReply>(
                &client,
                subjects::machine_request(&machine),
                body.into(),
                crate::partitions::RETRY_FOR,
                crate::partitions::machine_moved,
            )
            .await;
            match answer {
                Ok((Ok(record), _)) if record.last_checkin.is_some_and(|t| t >= since) => {
                    let _ = myself.cast(SessionMsg::MachineBack { machine });
                }
                Ok(_) => {}
                // The next re-check tries again.
                Err(e) => {
                    tracing::debug!(%machine, error = %e, "could not reach the machine's owner")
                }
            }
        });
    }

    /// The slow re-check of a waiting session (on its timer): the wait ends after the
    /// retention; otherwise the machine's owner is asked again every [`WAITING_RECHECK`].
    pub(super) async fn recheck_machine(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.asking_agent {
            return;
        }
        if self.waited_past_retention() {
            return self.stop_waiting().await;
        }
        if self
            .awaited_at
            .is_none_or(|t| t.elapsed() >= WAITING_RECHECK)
        {
            self.await_machine(myself);
        }
    }

    /// The machine checked in again: a session waiting for it asks its agent once more, with a
    /// fresh link (same epoch: nobody on the machine holds a login yet). Ignored by a session
    /// that does not wait for this machine, or whose ask is still on its way (no second window).
    pub(super) async fn on_machine_back(&mut self, machine: &str, myself: &ActorRef<SessionMsg>) {
        let for_this_machine = self.record.as_ref().is_some_and(|r| r.machine == machine);
        if !self.waiting_for_machine() || !for_this_machine || self.asking_agent {
            return;
        }
        if self.waited_past_retention() {
            return self.stop_waiting().await;
        }
        let Some(r) = self.record.as_mut() else {
            return;
        };
        let token = issue_link(r, self.ctx.link_ttl);
        // Only once the new link is stored: the agent must never get a link that does not work.
        if let Err(e) = self.save_record().await {
            return tracing::warn!(session = %self.id, error = %e.message, "could not store the chat link; asking again later");
        }
        self.ask_agent_to_open(machine.to_owned(), token, myself);
    }

    /// Whether the session has waited for its machine longer than the retention (what it would
    /// deliver then has expired).
    fn waited_past_retention(&self) -> bool {
        let retention =
            u64::try_from(self.ctx.stores.config.retention.as_millis()).unwrap_or(u64::MAX);
        self.record
            .as_ref()
            .is_some_and(|r| crate::now_ms() > r.agent_waiting_since.saturating_add(retention))
    }

    /// Ends the wait: the window counts as `failed` (an operator may ask again by joining).
    async fn stop_waiting(&mut self) {
        let retention = humantime::format_duration(self.ctx.stores.config.retention);
        let detail = format!("the machine did not check in again within {retention}");
        let status = AgentWindow::Failed;
        let _ = self.append(EventBody::Agent { status, detail }, None).await;
        if let Some(r) = self.record.as_mut() {
            r.agent = status;
            r.agent_waiting_since = 0;
        }
        let _ = self.save_record().await;
    }

    /// Sends the agent the chat link and returns at once: a spawned task waits for the answer
    /// and reports it to the actor as [`SessionMsg::AgentAnswer`]; an agent that cannot be
    /// reached is reported as [`AgentWindow::Waiting`].
    pub(super) fn ask_agent_to_open(
        &mut self,
        machine: String,
        token: String,
        myself: &ActorRef<SessionMsg>,
    ) {
        self.asking_agent = true;
        self.asked_agent_at = crate::now_ms();
        let cmd = AgentCommand::OpenChat {
            session: self.id.clone(),
            url: chat_link(&self.ctx.public_url, &self.id, &token),
            user: self.record.as_ref().and_then(|r| r.user.clone()),
        };
        let client = self.ctx.stores.client.clone();
        let js = self.ctx.stores.js.clone();
        let timeout = self.ctx.agent_timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            let body = serde_json::to_vec(&cmd).unwrap_or_default();
            let request = async {
                let subject = command_subject(&js, &machine).await;
                client.request(subject, body.into()).await
            };
            let (status, detail) = match tokio::time::timeout(timeout, request).await {
                Ok(answer) => window_status(answer),
                Err(_) => (
                    AgentWindow::Waiting,
                    "the machine's agent did not answer".into(),
                ),
            };
            let _ = myself.cast(SessionMsg::AgentAnswer { status, detail });
        });
    }
}

/// Where the machine's agent takes commands: a machine a real agent enrolled (a key bound in
/// the agent keys bucket) on its own subject, any other on the simulator's family. If the
/// binding cannot be read, the real subject: a chat link never goes to the simulator by mistake.
async fn command_subject(js: &async_nats::jetstream::Context, machine: &str) -> String {
    let binding = async {
        let keys = js.get_key_value(AGENT_KEYS_BUCKET).await.ok()?;
        keys.entry(machine).await.ok()
    };
    match binding.await {
        Some(None) => subjects::simulated_command(machine),
        Some(Some(entry)) if entry.operation != kv::Operation::Put => {
            subjects::simulated_command(machine)
        }
        _ => subjects::agent_command(machine),
    }
}

/// The machine user's chat link. The token rides in the fragment, which browsers never send to
/// servers, so it stays out of logs.
fn chat_link(public_url: &str, session: &str, token: &str) -> String {
    format!(
        "{}/m/{session}/#t={token}",
        public_url.trim_end_matches('/')
    )
}

/// What an agent's answer (or the lack of one) says about the chat window: an agent that
/// answered says `opened` or `failed`; one that could not be reached is waited for.
fn window_status(
    answer: Result<async_nats::Message, async_nats::RequestError>,
) -> (AgentWindow, String) {
    match answer {
        Ok(msg) => agent_window(&msg.payload),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => (
            AgentWindow::Waiting,
            "the machine's agent is offline".into(),
        ),
        Err(e) => (AgentWindow::Waiting, format!("agent request failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_link_carries_the_token_in_the_fragment() {
        assert_eq!(
            chat_link("https://chat.example/", "S1", "abc"),
            "https://chat.example/m/S1/#t=abc"
        );
    }
}
