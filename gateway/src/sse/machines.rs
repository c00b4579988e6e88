//! The machine list as a stream: the whole list first, then each change (F10: icons change
//! live). Only machines in the operator's scope and filter ever appear.

use natter_actors::machines::{Scope, filter_matches};
use tokio::sync::broadcast::{self, error::RecvError};
use warp::sse::Event;

use super::{SseItem, SseStream, named_event};
use crate::api::models::MachineRemoved;
use crate::machines::Directory;

/// The machine stream of an operator who may see `scope`, narrowed by `filter`.
pub fn machine_stream(directory: &Directory, scope: Scope, filter: String) -> SseStream {
    // Subscribe before taking the list, so that no change falls between the two.
    let changes = directory.subscribe();
    let first = list_event(directory, &scope, &filter);
    let watch = MachineWatch {
        directory: directory.clone(),
        changes,
        scope,
        filter,
    };
    let rest = futures::stream::unfold(watch, MachineWatch::next_item);
    SseStream::new(futures::StreamExt::chain(
        futures::stream::iter([Ok(first)]),
        rest,
    ))
}

/// `event: machines`: the whole list.
fn list_event(directory: &Directory, scope: &Scope, filter: &str) -> Event {
    named_event("machines", &directory.list(scope, filter))
}

/// What a machine stream follows after its first list.
struct MachineWatch {
    directory: Directory,
    changes: broadcast::Receiver<String>,
    scope: Scope,
    filter: String,
}

impl MachineWatch {
    async fn next_item(mut self) -> Option<(SseItem, Self)> {
        loop {
            let event = match self.changes.recv().await {
                Ok(id) => match self.change_event(&id) {
                    Some(event) => event,
                    None => continue,
                },
                // Fell behind the changes: send the whole list again.
                Err(RecvError::Lagged(_)) => list_event(&self.directory, &self.scope, &self.filter),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), self));
        }
    }

    /// `event: machine` for a change of machine `id`, unless it is outside scope or filter.
    fn change_event(&self, id: &str) -> Option<Event> {
        if !self.scope.covers(id) || !filter_matches(&self.filter, id) {
            return None;
        }
        Some(match self.directory.record(id) {
            Some(record) => named_event("machine", &self.directory.view(&record)),
            None => named_event("machine", &MachineRemoved { id, removed: true }),
        })
    }
}
