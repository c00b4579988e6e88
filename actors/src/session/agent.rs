//! Asking the machine's agent to open the machine user's chat window.

use ractor::ActorRef;

use super::{SessionMsg, SessionState};
use async_nats::jetstream::kv;

use crate::enrollment::AGENT_KEYS_BUCKET;
use crate::protocol::{AgentCommand, AgentWindow, agent_window};
use crate::subjects;

impl SessionState {
    /// Sends the agent the chat link and returns at once: a spawned task waits for the answer
    /// and reports it to the actor as [`SessionMsg::AgentAnswer`].
    pub(super) fn ask_agent_to_open(
        &self,
        machine: String,
        token: String,
        myself: &ActorRef<SessionMsg>,
    ) {
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
                    AgentWindow::Failed,
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

/// What an agent's answer (or the lack of one) says about the chat window.
fn window_status(
    answer: Result<async_nats::Message, async_nats::RequestError>,
) -> (AgentWindow, String) {
    match answer {
        Ok(msg) => agent_window(&msg.payload),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            (AgentWindow::Failed, "the machine's agent is offline".into())
        }
        Err(e) => (AgentWindow::Failed, format!("agent request failed: {e}")),
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
