//! Cutting off a machine's connected agent when it is suspended or its key is forgotten.
//!
//! The auth callout refuses such a machine at its next connect; this makes that next connect
//! happen now. Whoever revokes (the machine's agent actor on suspend, the admin CLI on
//! `forget-key`) publishes the machine ID on [`subjects::AGENT_REVOKE`]; one node's [`Revoker`]
//! (queue group) asks every nats-server for that user's connections
//! (`$SYS.REQ.SERVER.PING.CONNZ`, filtered by user name, which the callout sets to the machine
//! ID) and kicks each (`$SYS.REQ.SERVER.<id>.KICK`). That needs a system-account connection,
//! which only nodes hold.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::subjects;

/// Why a revocation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("asking the servers: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("kicking a connection: {0}")]
    Kick(#[from] async_nats::RequestError),
}

/// How long to wait for the servers' connection lists (every server of a cluster answers).
const CONNZ_WAIT: Duration = Duration::from_millis(500);

/// Asks a node to cut off `machine`'s connected agents (fire and forget).
pub async fn announce(client: &async_nats::Client, machine: &str) {
    if let Err(e) = client
        .publish(subjects::AGENT_REVOKE, machine.to_string().into())
        .await
    {
        tracing::warn!(%machine, error = %e, "could not announce the revocation");
    }
}

/// Asks a node to cut off `machine`'s connected agents and waits for the number cut off.
pub async fn request(client: &async_nats::Client, machine: &str) -> Result<usize, RevokeError> {
    let answer = client
        .request(subjects::AGENT_REVOKE, machine.to_string().into())
        .await?;
    Ok(String::from_utf8_lossy(&answer.payload)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// The node's revocation service.
pub struct Revoker {
    /// The node's own account: where revocations are announced.
    pub broker: async_nats::Client,
    /// A system-account user: asks servers for connections and kicks them.
    pub system: async_nats::Client,
}

impl Revoker {
    /// Subscribes (so revocations announced after this returns are seen) and returns the
    /// task that serves them.
    pub async fn start(self) -> Result<tokio::task::JoinHandle<()>, RevokeError> {
        let mut requests = self
            .broker
            .queue_subscribe(subjects::AGENT_REVOKE, subjects::REVOKE_QUEUE.into())
            .await?;
        Ok(tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let machine = String::from_utf8_lossy(&msg.payload).into_owned();
                let kicked = match kick(&self.system, &machine).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(%machine, error = %e, "could not cut off the agent");
                        0
                    }
                };
                if let Some(reply) = msg.reply {
                    let _ = self.broker.publish(reply, kicked.to_string().into()).await;
                }
            }
        }))
    }
}

/// Disconnects every connection logged in as `machine`, on every server; returns how many.
pub async fn kick(system: &async_nats::Client, machine: &str) -> Result<usize, RevokeError> {
    if !crate::protocol::valid_machine_id(machine) {
        return Ok(0);
    }
    let mut kicked = 0;
    for (server, cid) in connections(system, machine).await? {
        let subject = format!("$SYS.REQ.SERVER.{server}.KICK");
        system
            .request(subject, json!({ "cid": cid }).to_string().into())
            .await?;
        kicked += 1;
    }
    if kicked > 0 {
        tracing::info!(%machine, connections = kicked, "agent cut off");
    }
    Ok(kicked)
}

/// (server ID, client ID) of every connection whose user is `machine`.
async fn connections(
    system: &async_nats::Client,
    machine: &str,
) -> Result<Vec<(String, u64)>, RevokeError> {
    let inbox = system.new_inbox();
    let mut answers = system.subscribe(inbox.clone()).await?;
    let filter = json!({"auth": true, "user": machine, "acc": crate::auth_callout::AGENT_ACCOUNT});
    system
        .publish_with_reply(
            "$SYS.REQ.SERVER.PING.CONNZ",
            inbox,
            filter.to_string().into(),
        )
        .await?;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + CONNZ_WAIT;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        let Ok(answer) = serde_json::from_slice::<Value>(&msg.payload) else {
            continue;
        };
        let server = answer["server"]["id"].as_str().unwrap_or_default();
        let conns = answer["data"]["connections"].as_array();
        for cid in conns
            .into_iter()
            .flatten()
            .filter_map(|c| c["cid"].as_u64())
        {
            found.push((server.to_string(), cid));
        }
    }
    Ok(found)
}
