//! The Chat page's stream: the machine list (the whole list first, then each change: F10 icons
//! change live), the operators one may chat with (F8), and the chats waiting for this operator's
//! answer (F5). Only machines in the operator's scope and filter ever appear. While the stream
//! is open its operator is present on the Chat page ([`crate::presence`]).

use std::collections::{HashSet, VecDeque};

use natter_actors::machines::{Scope, filter_matches, group_of};
use natter_actors::protocol::Incoming;
use tokio::sync::broadcast::{self, error::RecvError};
use warp::sse::Event;

use super::{SseItem, SseStream, named_event};
use crate::api::models::{IncomingGone, MachineRemoved};
use crate::incoming::{IncomingChange, IncomingChats};
use crate::machines::Directory;
use crate::presence::{Presence, PresenceGuard, PresentOperator};

/// The Chat page stream of the operator `presence` stands for, who may see `scope`, narrowed by
/// `filter`.
pub fn machine_stream(
    gw: &crate::Gateway,
    scope: Scope,
    filter: String,
    presence: PresenceGuard,
) -> SseStream {
    // Subscribe before taking the lists, so that no change falls between the two.
    let directory = gw.directory().clone();
    let machine_changes = directory.subscribe();
    let presence_changes = gw.presence().subscribe();
    let incoming_changes = gw.incoming().subscribe();
    let operator = presence.username().to_owned();
    let mut watch = ChatPageWatch {
        groups: directory.groups(&scope, &filter),
        directory,
        machine_changes,
        presence_changes,
        incoming_changes,
        operators: Vec::new(),
        scope,
        filter,
        pending: VecDeque::new(),
        presence_list: gw.presence().clone(),
        incoming: gw.incoming().clone(),
        _present: presence,
    };
    watch.pending.push_back(watch.list_event());
    watch.push_operators_if_changed(true);
    for waiting in watch.incoming.waiting_for(&operator) {
        watch.pending.push_back(incoming_event(&waiting));
    }
    SseStream::new(futures::stream::unfold(watch, ChatPageWatch::next_item))
}

/// `event: incoming`: a chat waiting for this operator.
fn incoming_event(entry: &Incoming) -> Event {
    named_event("incoming", entry)
}

/// What a Chat page stream follows after its first events.
struct ChatPageWatch {
    directory: Directory,
    machine_changes: broadcast::Receiver<String>,
    presence_changes: broadcast::Receiver<()>,
    incoming_changes: broadcast::Receiver<IncomingChange>,
    presence_list: Presence,
    incoming: IncomingChats,
    scope: Scope,
    filter: String,
    /// The groups of the machines the list shows (whose operators the page lists).
    groups: HashSet<String>,
    /// The operators the page was last sent.
    operators: Vec<PresentOperator>,
    /// Events due before waiting for more changes.
    pending: VecDeque<Event>,
    /// The operator is present while the stream lives.
    _present: PresenceGuard,
}

impl ChatPageWatch {
    fn operator(&self) -> &str {
        self._present.username()
    }

    async fn next_item(mut self) -> Option<(SseItem, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            tokio::select! {
                change = self.machine_changes.recv() => match change {
                    Ok(id) => self.machine_changed(&id),
                    // Fell behind the changes: send the whole list again.
                    Err(RecvError::Lagged(_)) => {
                        self.groups = self.directory.groups(&self.scope, &self.filter);
                        self.pending.push_back(self.list_event());
                        self.push_operators_if_changed(false);
                    }
                    Err(RecvError::Closed) => return None,
                },
                change = self.presence_changes.recv() => match change {
                    Ok(()) | Err(RecvError::Lagged(_)) => self.push_operators_if_changed(false),
                    Err(RecvError::Closed) => return None,
                },
                change = self.incoming_changes.recv() => match change {
                    Ok(c) => self.incoming_changed(c),
                    Err(RecvError::Lagged(_)) => self.resend_incoming(),
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// `event: machines`: the whole list.
    fn list_event(&self) -> Event {
        named_event("machines", &self.directory.list(&self.scope, &self.filter))
    }

    /// `event: machine` for a change of machine `id`, unless it is outside scope or filter; a
    /// machine of a group the list did not show yet may change whom the page lists.
    fn machine_changed(&mut self, id: &str) {
        if !self.scope.covers(id) || !filter_matches(&self.filter, id) {
            return;
        }
        let event = match self.directory.record(id) {
            Some(record) => named_event("machine", &self.directory.view(&record)),
            None => named_event("machine", &MachineRemoved { id, removed: true }),
        };
        self.pending.push_back(event);
        if !self.groups.contains(group_of(id)) {
            self.groups = self.directory.groups(&self.scope, &self.filter);
            self.push_operators_if_changed(false);
        }
    }

    /// `event: operators` when whom the page lists changed (or `always`, first).
    fn push_operators_if_changed(&mut self, always: bool) {
        let now = self
            .presence_list
            .operators_for(self.operator(), &self.groups);
        if always || now != self.operators {
            let shown: Vec<OperatorShown> = now.iter().map(OperatorShown::from).collect();
            self.pending.push_back(named_event("operators", &shown));
            self.operators = now;
        }
    }

    fn incoming_changed(&mut self, change: IncomingChange) {
        if change.operator != self.operator() {
            return;
        }
        let event = match &change.entry {
            Some(entry) => incoming_event(entry),
            None => named_event(
                "incoming_gone",
                &IncomingGone {
                    session: &change.session,
                },
            ),
        };
        self.pending.push_back(event);
    }

    /// After missing changes: every chat waiting now (the page ignores ones it shows already;
    /// one it shows that is not among them stays until its `incoming_gone` or a reload).
    fn resend_incoming(&mut self) {
        for waiting in self.incoming.waiting_for(self.operator()) {
            self.pending.push_back(incoming_event(&waiting));
        }
    }
}

/// An operator in `event: operators`: their username (to start a chat with) and name.
#[derive(serde::Serialize)]
struct OperatorShown<'a> {
    id: &'a str,
    name: &'a str,
}

impl<'a> From<&'a PresentOperator> for OperatorShown<'a> {
    fn from(p: &'a PresentOperator) -> Self {
        OperatorShown {
            id: &p.username,
            name: &p.name,
        }
    }
}
