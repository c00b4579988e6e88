//! Rebuilding a session record from its events (after a crash between an append and the record
//! write, or when the record is missing).

use crate::protocol::{AgentWindow, Event, EventBody, Participant, SessionRecord};

/// Applies one event, stored at stream sequence `seq`, to a session record. The record starts
/// with the session's `opened` event; events before it change nothing.
pub fn fold(record: &mut Option<SessionRecord>, seq: u64, event: &Event) {
    if let EventBody::Opened { by, machine, user } = &event.body
        && record.is_none()
    {
        let mut r = opened(&event.session, machine, by, event.at, seq);
        r.user = user.clone();
        *record = Some(r);
        return;
    }
    let Some(r) = record.as_mut() else { return };
    r.seq = seq;
    match &event.body {
        EventBody::Joined { who } => {
            r.invited.retain(|p| !p.same(who));
            if !r.members.iter().any(|m| m.same(who)) {
                r.members.push(who.clone())
            }
        }
        EventBody::Invited { who, .. } | EventBody::HandedOff { to: who, .. }
            if !r.members.iter().chain(&r.invited).any(|m| m.same(who)) =>
        {
            r.invited.push(who.clone())
        }
        EventBody::Ended { .. } => r.ended = true,
        // As the live restart: a new epoch. Its link is not in the events, so a record rebuilt
        // here has none (the operator restarts the chat again for a new one).
        EventBody::Restarted { .. } => super::link::begin_epoch(r),
        EventBody::Agent { status, .. } => {
            // As the live actor: the wait starts with the first `waiting`, and ends with any
            // other answer.
            r.agent_waiting_since = match status {
                AgentWindow::Waiting if r.agent == AgentWindow::Waiting => r.agent_waiting_since,
                AgentWindow::Waiting => event.at,
                _ => 0,
            };
            r.agent = *status;
        }
        _ => {}
    }
}

/// The record of a session `by` opened with `machine` at `at` (ms), its `opened` event at
/// stream sequence `seq`: epoch 0, no link yet (the live open issues one; a link cannot be rebuilt
/// from events), the agent's window pending.
pub(super) fn opened(
    id: &str,
    machine: &str,
    by: &Participant,
    at: u64,
    seq: u64,
) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        machine: machine.into(),
        user: None,
        created_at: at,
        members: vec![by.clone()],
        invited: Vec::new(),
        ended: false,
        token_sha256: String::new(),
        token_expires_at: 0,
        epoch: 0,
        agent: AgentWindow::Pending,
        agent_waiting_since: 0,
        seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Participant, ParticipantKind};

    fn operator(id: &str) -> Participant {
        Participant {
            kind: ParticipantKind::Operator,
            id: id.into(),
            name: id.to_uppercase(),
        }
    }

    fn event(at: u64, body: EventBody) -> Event {
        Event {
            session: "S1".into(),
            at,
            body,
        }
    }

    /// Folds `bodies` as events 1, 2, … written at times 1000, 1001, …
    fn fold_all(bodies: Vec<EventBody>) -> Option<SessionRecord> {
        let mut record = None;
        for (i, body) in bodies.into_iter().enumerate() {
            fold(&mut record, i as u64 + 1, &event(1000 + i as u64, body));
        }
        record
    }

    fn opened() -> EventBody {
        EventBody::Opened {
            by: operator("alice"),
            machine: "pc1.acme".into(),
            user: None,
        }
    }

    #[test]
    fn a_chat_with_one_of_several_users_is_rebuilt_with_that_user() {
        let dave = crate::protocol::ChatUser {
            name: "dave".into(),
            session: "rdp-tcp#3".into(),
        };
        let r = fold_all(vec![EventBody::Opened {
            by: operator("alice"),
            machine: "ts1.acme".into(),
            user: Some(dave.clone()),
        }])
        .unwrap();
        assert_eq!(r.user, Some(dave));
        assert_eq!(fold_all(vec![opened()]).unwrap().user, None);
    }

    #[test]
    fn opened_starts_the_record_at_the_event_time() {
        let r = fold_all(vec![opened()]).unwrap();
        assert_eq!(r.id, "S1");
        assert_eq!(r.machine, "pc1.acme");
        assert_eq!(r.created_at, 1000);
        assert_eq!(r.members, vec![operator("alice")]);
        assert!(!r.ended);
        assert_eq!(r.agent, AgentWindow::Pending);
        assert_eq!(r.seq, 1);
    }

    #[test]
    fn joins_add_each_member_once() {
        let bob = EventBody::Joined {
            who: operator("bob"),
        };
        let r = fold_all(vec![opened(), bob.clone(), bob]).unwrap();
        assert_eq!(r.members, vec![operator("alice"), operator("bob")]);
        assert_eq!(r.seq, 3);
    }

    #[test]
    fn messages_move_the_sequence_only() {
        let message = EventBody::Message {
            from: operator("alice"),
            text: "hello".into(),
            client_id: "c1".into(),
        };
        let r = fold_all(vec![opened(), message]).unwrap();
        assert_eq!(r.members, vec![operator("alice")]);
        assert!(!r.ended);
        assert_eq!(r.seq, 2);
    }

    #[test]
    fn end_and_restart_toggle_ended() {
        let end = EventBody::Ended {
            by: operator("alice"),
        };
        let r = fold_all(vec![opened(), end.clone()]).unwrap();
        assert!(r.ended);
        let restart = EventBody::Restarted {
            by: operator("bob"),
        };
        let r = fold_all(vec![opened(), end, restart]).unwrap();
        assert!(!r.ended);
    }

    #[test]
    fn every_restart_starts_a_new_epoch_without_a_link() {
        let end = EventBody::Ended {
            by: operator("alice"),
        };
        let restart = EventBody::Restarted {
            by: operator("bob"),
        };
        let mut record = fold_all(vec![opened()]);
        if let Some(r) = record.as_mut() {
            r.token_sha256 = "ab".repeat(32);
        }
        for (i, body) in [end.clone(), restart.clone(), end, restart]
            .into_iter()
            .enumerate()
        {
            fold(&mut record, i as u64 + 2, &event(2000, body));
        }
        let r = record.unwrap();
        assert_eq!(r.epoch, 2);
        assert!(r.token_sha256.is_empty());
    }

    #[test]
    fn the_agent_answer_is_kept() {
        let answer = EventBody::Agent {
            status: AgentWindow::Opened,
            detail: String::new(),
        };
        assert_eq!(
            fold_all(vec![opened(), answer]).unwrap().agent,
            AgentWindow::Opened
        );
    }

    #[test]
    fn waiting_for_the_machine_starts_at_the_first_waiting_and_ends_with_an_answer() {
        let agent = |status| EventBody::Agent {
            status,
            detail: String::new(),
        };
        // Events 2 and 3 (at 1001 and 1002): the wait started at the first.
        let waiting = fold_all(vec![
            opened(),
            agent(AgentWindow::Waiting),
            agent(AgentWindow::Waiting),
        ])
        .unwrap();
        assert_eq!(waiting.agent, AgentWindow::Waiting);
        assert_eq!(waiting.agent_waiting_since, 1001);
        let opened_at_last = fold_all(vec![
            opened(),
            agent(AgentWindow::Waiting),
            agent(AgentWindow::Opened),
        ])
        .unwrap();
        assert_eq!(opened_at_last.agent, AgentWindow::Opened);
        assert_eq!(opened_at_last.agent_waiting_since, 0);
    }

    #[test]
    fn events_before_the_opening_change_nothing() {
        let join = EventBody::Joined {
            who: operator("bob"),
        };
        assert_eq!(fold_all(vec![join]), None);
    }

    #[test]
    fn a_second_opening_does_not_reset_the_record() {
        let r = fold_all(vec![opened(), opened()]).unwrap();
        assert_eq!(r.created_at, 1000);
        assert_eq!(r.seq, 2);
    }
}
