//! The start service: answers an agent that asks, for its machine user, for a link to the start
//! page (`natter-agent chat`; issue 11, item 3). It is a queue-subscribed task of every node
//! (one node answers each request), not an actor: each request reads KV in a task of its own.
//!
//! It answers with a single-use start link only if the machine is known and not suspended, a
//! user is logged on, and the machine's role has the right "may start a chat with operators";
//! otherwise with a refusal and its reason ([`StartRefusal`]). A simulated machine's request is
//! answered only if no real agent enrolled it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;

use crate::machines::MachineRecord;
use crate::protocol::{StartChatReply, StartChatRequest, StartRefusal};
use crate::store::Stores;
use crate::subjects;

/// Requests answered at once; more wait in the subscription.
const CONCURRENT_ANSWERS: usize = 32;

/// The start service of a node.
#[derive(Clone)]
pub struct StartService {
    pub stores: Stores,
    /// Machine ID → bound key: a simulated request for an enrolled machine is refused.
    pub agent_keys: kv::Store,
    /// `http.public_url`: the start link's base.
    pub public_url: String,
    /// How long a start link works unused (`chat.link_ttl`).
    pub link_ttl: Duration,
}

impl StartService {
    /// Subscribes (so the node is not ready before it can answer) and returns the answering
    /// task.
    pub async fn start(
        self,
        client: async_nats::Client,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let real = client
            .queue_subscribe(subjects::ALL_START_REQUESTS, subjects::START_QUEUE.into())
            .await?;
        let simulated = client
            .queue_subscribe(
                subjects::ALL_SIMULATED_START_REQUESTS,
                subjects::START_QUEUE.into(),
            )
            .await?;
        Ok(tokio::spawn(
            self.serve(client, futures::stream::select(real, simulated)),
        ))
    }

    async fn serve(
        self,
        client: async_nats::Client,
        mut requests: impl futures::Stream<Item = async_nats::Message> + Unpin,
    ) {
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ANSWERS));
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (service, client) = (self.clone(), client.clone());
            tokio::spawn(async move {
                let answer = service.answer(&msg).await;
                if let Some(reason) = answer.reason {
                    tracing::info!(subject = %msg.subject, ?reason, "start request refused");
                }
                let body = serde_json::to_vec(&answer).unwrap_or_default();
                let _ = client.publish(reply, body.into()).await;
                drop(permit);
            });
        }
    }

    /// The answer to one start request.
    pub async fn answer(&self, msg: &async_nats::Message) -> StartChatReply {
        let subject = msg.subject.as_str();
        let (machine, simulated) = match subjects::machine_of_start_request(subject) {
            Some(m) => (m, false),
            None => match subjects::machine_of_simulated_start_request(subject) {
                Some(m) => (m, true),
                None => {
                    return StartChatReply::refused(
                        StartRefusal::BadRequest,
                        "not a start request",
                    );
                }
            },
        };
        match serde_json::from_slice::<StartChatRequest>(&msg.payload) {
            Ok(StartChatRequest { v: 1 }) => {}
            _ => {
                return StartChatReply::refused(
                    StartRefusal::BadRequest,
                    "not a start request of protocol version 1",
                );
            }
        }
        match self.check(&machine, simulated).await {
            Ok(reply) => reply,
            Err(why) => {
                tracing::warn!(%machine, error = %why, "start request: store unavailable");
                StartChatReply::refused(StartRefusal::Unavailable, "the service is busy; try again")
            }
        }
    }

    async fn check(&self, machine: &str, simulated: bool) -> Result<StartChatReply, String> {
        let unknown = || {
            StartChatReply::refused(
                StartRefusal::UnknownMachine,
                "this machine is not known to Natter",
            )
        };
        if simulated
            && self
                .agent_keys
                .get(machine)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
        {
            // A real agent speaks for this machine: the simulator does not exist for it.
            return Ok(unknown());
        }
        let record = self
            .stores
            .machines
            .get(machine)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|b| serde_json::from_slice::<MachineRecord>(&b).ok());
        let Some(record) = record else {
            return Ok(unknown());
        };
        if record.suspended {
            return Ok(StartChatReply::refused(
                StartRefusal::Suspended,
                "this machine's agent is suspended",
            ));
        }
        let Some(user) = record.user.clone() else {
            return Ok(StartChatReply::refused(
                StartRefusal::NoUser,
                "nobody is logged on to this machine",
            ));
        };
        let roles = &self.stores.roles;
        if !roles
            .may_start_chat(machine)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(StartChatReply::refused(
                StartRefusal::NotAllowed,
                "this machine's role does not allow starting a chat with operators",
            ));
        }
        let token = roles
            .issue_start_token(machine, &user, self.link_ttl)
            .await
            .map_err(|e| e.to_string())?;
        Ok(StartChatReply::link(start_link(&self.public_url, &token)))
    }
}

/// The start page's link: the token in the fragment, which never reaches a server's log.
pub fn start_link(public_url: &str, token: &str) -> String {
    format!("{}/start/#t={token}", public_url.trim_end_matches('/'))
}
