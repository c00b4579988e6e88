//! The Chat page's stream: the machine list (the whole list or one page of it first, then each
//! change: F10 icons change live), the operators one may chat with (F8), and the chats waiting
//! for this operator's answer (F5). Only machines in the operator's scope and filter ever
//! appear; with a page, only the changes of the machines on it, and the page again (at most
//! once a second) when machines come or go. While the stream is open its operator is present
//! on the Chat page ([`crate::presence`]).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use natter_actors::machines::{Scope, filter_matches, group_of};
use natter_actors::protocol::Incoming;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::{Frame, SseStream, named_event};
use crate::api::models::{IncomingGone, MachineRemoved};
use crate::incoming::{IncomingChange, IncomingChats};
use crate::machines::{Directory, MachineChange, MachinePage};
use crate::presence::{Presence, PresenceGuard, PresentOperator};

/// How often at most a paged stream sends its page (or count) again while machines come or go.
const PAGE_RESEND: Duration = Duration::from_secs(1);

/// The Chat page stream of the operator `presence` stands for, who may see `scope`, narrowed by
/// `filter`, and (`page`: offset, limit) only that page of it.
pub fn machine_stream(
    gw: &crate::Gateway,
    scope: Scope,
    filter: String,
    page: Option<(usize, usize)>,
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
        window: page.map(|(offset, limit)| Window {
            offset,
            limit,
            ids: HashSet::new(),
            last: None,
            full: false,
        }),
        stale: Stale::No,
        last_resent: Instant::now(),
        pending: VecDeque::new(),
        presence_list: gw.presence().clone(),
        incoming: gw.incoming().clone(),
        _present: presence,
    };
    let first = watch.list_event();
    watch.pending.push_back(first);
    watch.push_operators_if_changed(true);
    for waiting in watch.incoming.waiting_for(&operator) {
        watch.pending.push_back(incoming_event(&waiting));
    }
    SseStream::new(futures::stream::unfold(watch, ChatPageWatch::next_item))
}

/// `event: incoming`: a chat waiting for this operator.
fn incoming_event(entry: &Incoming) -> Frame {
    named_event("incoming", entry)
}

/// The page of the list a stream shows.
struct Window {
    offset: usize,
    limit: usize,
    /// The machines on it as last sent.
    ids: HashSet<String>,
    /// Its last machine ID.
    last: Option<String>,
    /// It has `limit` machines (a machine added after `last` is not on it).
    full: bool,
}

/// What of a page is out of date.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stale {
    No,
    /// Only the count: machines came or went after the page's last one.
    Total,
    /// The page's machines.
    Page,
}

/// What a Chat page stream follows after its first events.
struct ChatPageWatch {
    directory: Directory,
    machine_changes: broadcast::Receiver<MachineChange>,
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
    /// The page the stream shows (`None`: the whole list).
    window: Option<Window>,
    /// What of the page is out of date since machines came or went.
    stale: Stale,
    /// When the page (or count) was last sent again.
    last_resent: Instant,
    /// Events due before waiting for more changes.
    pending: VecDeque<Frame>,
    /// The operator is present while the stream lives.
    _present: PresenceGuard,
}

impl ChatPageWatch {
    fn operator(&self) -> &str {
        self._present.username()
    }

    async fn next_item(mut self) -> Option<(Frame, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self));
            }
            let resend_at = self.last_resent + PAGE_RESEND;
            tokio::select! {
                () = tokio::time::sleep_until(resend_at), if self.stale != Stale::No => {
                    self.resend();
                }
                change = self.machine_changes.recv() => match change {
                    Ok(change) => self.machine_changed(&change),
                    // Fell behind the changes: send the whole list again.
                    Err(RecvError::Lagged(_)) => {
                        self.groups = self.directory.groups(&self.scope, &self.filter);
                        let list = self.list_event();
                        self.pending.push_back(list);
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

    /// `event: machines`: the whole list, or the page (then remembered as sent).
    fn list_event(&mut self) -> Frame {
        let Some(window) = &mut self.window else {
            return named_event("machines", &self.directory.list(&self.scope, &self.filter));
        };
        let page: MachinePage =
            self.directory
                .page(&self.scope, &self.filter, window.offset, window.limit);
        window.ids = page.machines.iter().map(|m| m.id.clone()).collect();
        window.last = page.machines.last().map(|m| m.id.clone());
        window.full = page.machines.len() == window.limit;
        self.stale = Stale::No;
        self.last_resent = Instant::now();
        named_event("machines", &page)
    }

    /// The page, or its count, again after machines came or went.
    fn resend(&mut self) {
        if self.stale == Stale::Page {
            let event = self.list_event();
            self.pending.push_back(event);
        } else {
            let total = self.directory.count(&self.scope, &self.filter);
            self.pending
                .push_back(named_event("total", &serde_json::json!({ "total": total })));
            self.stale = Stale::No;
            self.last_resent = Instant::now();
        }
    }

    /// `event: machine` for a change of a machine, unless it is outside scope or filter (or, on
    /// a paged stream, off the page); a machine of a group the list did not show yet may change
    /// whom the page lists.
    fn machine_changed(&mut self, change: &MachineChange) {
        let id = change.id.as_str();
        if !self.scope.covers(id) || !filter_matches(&self.filter, id) {
            return;
        }
        if !self.groups.contains(group_of(id)) {
            self.groups = self.directory.groups(&self.scope, &self.filter);
            self.push_operators_if_changed(false);
        }
        if let Some(window) = &self.window {
            let on_page = window.ids.contains(id);
            if change.membership {
                // Before the page's last machine (or on a page with room): its rows move.
                let moves =
                    on_page || !window.full || window.last.as_deref().is_none_or(|l| id < l);
                let stale = if moves { Stale::Page } else { Stale::Total };
                self.stale = self.stale.max(stale);
                return;
            }
            if !on_page {
                return;
            }
        }
        let event = match self.directory.record(id) {
            Some(record) => named_event("machine", &self.directory.view(&record)),
            None => named_event("machine", &MachineRemoved { id, removed: true }),
        };
        self.pending.push_back(event);
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
