//! `GET /readyz`: whether this node can serve now, and if not, why.

use std::time::{Duration, Instant};

use async_nats::connection::State;
use natter_actors::store::Stores;

use crate::Gateway;

/// A JetStream round trip slower than this counts as failed.
pub const RTT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the node is not ready: a sentence for the operator reading the probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// Ready when both NATS connections are up, the node owns at least one partition or every
/// partition is held by a live node (a node beyond the 32nd may own none and still serve), the
/// gateway follows the events, the machine directory is loaded and JetStream answers for the
/// events stream (so the stores exist).
/// The cheap checks come first: a node cut off from NATS answers at once.
pub async fn check(gw: &Gateway) -> Result<(), NotReady> {
    let not_ready = |why: String| Err(NotReady(why));
    let gateway_state = gw.stores().client.connection_state();
    if gateway_state != State::Connected {
        return not_ready(format!("NATS is not connected ({gateway_state})"));
    }
    if let Some(node) = gw.metrics().node_readings() {
        if !node.actors_connected {
            return not_ready("NATS is not connected (the actors' connection)".into());
        }
        if node.partitions_owned == 0 && !node.partitions_all_held {
            return not_ready("no partition is owned here and some have no live owner yet".into());
        }
    }
    if !gw.hub().is_live() {
        return not_ready("the event feed is not following the stream yet".into());
    }
    if !gw.directory().is_ready() {
        return not_ready("the machine list is still loading".into());
    }
    match stores_round_trip(gw.stores()).await {
        Ok(_) => Ok(()),
        Err(e) => not_ready(format!(
            "JetStream does not answer for the events stream: {e}"
        )),
    }
}

/// One JetStream round trip: the events stream's info (which also proves the stream exists).
pub async fn stores_round_trip(stores: &Stores) -> Result<Duration, String> {
    let started = Instant::now();
    let mut events = stores.events.clone();
    match tokio::time::timeout(RTT_TIMEOUT, events.info()).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", RTT_TIMEOUT.as_secs())),
    }
}
