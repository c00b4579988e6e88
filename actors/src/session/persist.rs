//! A session's storage: rebuilding the state from KV and the stream, the fenced and
//! de-duplicated append of events, and the session record in KV.

use std::time::Instant;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;

use super::SessionState;
use super::fold::fold;
use crate::protocol::{
    Event, EventBody, Participant, ParticipantKind, SessionError, SessionErrorKind, SessionRecord,
};

/// A storage failure as the caller sees it (retryable); the cause goes to the log.
pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> SessionError {
    tracing::warn!(error = %e, "{what}");
    SessionError::new(SessionErrorKind::Unavailable, format!("{what}; try again"))
}

/// The de-duplication key (`Nats-Msg-Id`) of a message: per session, sender and client id, so
/// a retry by the same sender lands once while two members who pick the same client id both
/// land. The sender is `operator:<username>` or `machine-user` (a session has one machine user;
/// usernames have no `:`, so the two never meet).
pub(super) fn message_id(session: &str, from: &Participant, client_id: &str) -> String {
    match from.kind {
        ParticipantKind::Operator => format!("{session}.operator:{}.{client_id}", from.id),
        ParticipantKind::MachineUser => format!("{session}.machine-user.{client_id}"),
    }
}

impl SessionState {
    /// Rebuilds the state from the sessions bucket and the events stream, once.
    pub(super) async fn ensure_loaded(&mut self) -> Result<(), SessionError> {
        if self.loaded {
            return Ok(());
        }
        let (mut record, revision) = self.stored_record().await?;
        let stores = &self.ctx.stores;
        let last_seq = stores
            .last_event_seq(&self.id)
            .await
            .map_err(|e| unavailable("reading the session's events", e))?;
        let folded_to = record.as_ref().map_or(0, |r| r.seq);
        if last_seq > folded_to {
            // Events written after the record was saved (a crash in between): fold them in.
            let mut replay = stores
                .replay(&[&self.id], folded_to + 1)
                .await
                .map_err(|e| unavailable("replaying the session", e))?;
            while let Some(ev) = replay.next().await {
                let ev = ev.map_err(|e| unavailable("replaying the session", e))?;
                if let Ok(event) = ev.decode() {
                    fold(&mut record, ev.seq, &event);
                }
            }
        }
        self.record = record;
        self.revision = revision;
        self.last_seq = last_seq;
        self.record_saved = Instant::now();
        self.loaded = true;
        Ok(())
    }

    /// The record in the sessions bucket and its revision (0 when there is none).
    async fn stored_record(&self) -> Result<(Option<SessionRecord>, u64), SessionError> {
        let entry = self
            .ctx
            .stores
            .sessions
            .entry(&self.id)
            .await
            .map_err(|e| unavailable("reading the session record", e))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice::<SessionRecord>(&e.value).ok(),
                e.revision,
            ),
            _ => (None, 0),
        })
    }

    /// Appends one event, fenced on the session's last sequence. Returns (sequence, duplicate).
    pub(super) async fn append(
        &mut self,
        body: EventBody,
        msg_id: Option<String>,
    ) -> Result<(u64, bool), SessionError> {
        self.check_owner()?;
        let event = Event {
            session: self.id.clone(),
            at: crate::now_ms(),
            body,
        };
        let payload: bytes::Bytes = serde_json::to_vec(&event)
            .map_err(|e| unavailable("encoding an event", e))?
            .into();
        for attempt in 0..2 {
            let mut publish = PublishMessage::build()
                .payload(payload.clone())
                .expected_last_subject_sequence(self.last_seq);
            if let Some(id) = &msg_id {
                publish = publish.message_id(id);
            }
            let js = &self.ctx.stores.js;
            let ack = match js.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) => {
                    if !ack.duplicate {
                        self.last_seq = ack.sequence;
                    }
                    return Ok((ack.sequence, ack.duplicate));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence && attempt == 0 => {
                    // Our fencing token is stale: events expired, or another owner wrote.
                    // Rebuild from the store and try once more; a second refusal means we
                    // are not the owner and must not write.
                    tracing::warn!(session = %self.id, "fenced off; rebuilding from the stream");
                    self.loaded = false;
                    self.ensure_loaded().await?;
                }
                Err(e) => return Err(unavailable("appending an event", e)),
            }
        }
        Err(SessionError::new(
            SessionErrorKind::Unavailable,
            "the session is owned elsewhere; try again",
        ))
    }

    /// Stores the record (compare-and-set on its revision).
    pub(super) async fn save_record(&mut self) -> Result<(), SessionError> {
        let Some(record) = self.record.as_mut() else {
            return Ok(());
        };
        record.seq = self.last_seq;
        let json: bytes::Bytes = serde_json::to_vec(record)
            .map_err(|e| unavailable("encoding the session record", e))?
            .into();
        let sessions = &self.ctx.stores.sessions;
        let written = if self.revision == 0 {
            sessions
                .create(&self.id, json)
                .await
                .map_err(|e| e.to_string())
        } else {
            let update = sessions.update(&self.id, json, self.revision).await;
            update.map_err(|e| e.to_string())
        };
        match written {
            Ok(rev) => {
                self.revision = rev;
                self.record_saved = Instant::now();
                Ok(())
            }
            Err(e) => {
                // Someone else changed the record: rebuild before the next command.
                self.loaded = false;
                Err(unavailable("storing the session record", e))
            }
        }
    }

    /// Keeps the record and the machine index from expiring while the session lives.
    pub(super) async fn refresh_record_if_stale(&mut self) {
        let half = self.ctx.stores.config.session_ttl / 2;
        if self.record_saved.elapsed() < half {
            return;
        }
        if self.save_record().await.is_ok()
            && let Some(r) = &self.record
            && !r.ended
            && let Some(key) = super::invite::chat_key(r)
        {
            let index = &self.ctx.stores.machine_sessions;
            let _ = index.put(&key, self.id.clone().into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(kind: ParticipantKind, id: &str) -> Participant {
        Participant {
            kind,
            id: id.into(),
            name: "Shown Name".into(),
        }
    }

    #[test]
    fn the_message_id_tells_senders_apart() {
        let alice = member(ParticipantKind::Operator, "alice");
        let bob = member(ParticipantKind::Operator, "bob");
        let user = member(ParticipantKind::MachineUser, "pc1.acme");
        assert_eq!(message_id("S", &alice, "c1"), "S.operator:alice.c1");
        assert_eq!(message_id("S", &user, "c1"), "S.machine-user.c1");
        assert_ne!(message_id("S", &alice, "c1"), message_id("S", &bob, "c1"));
        // An operator whose username looks like the machine user's key is still another sender.
        let lookalike = member(ParticipantKind::Operator, "machine-user");
        assert_ne!(
            message_id("S", &lookalike, "c1"),
            message_id("S", &user, "c1")
        );
        // A name change is not a new sender: a retry after it still lands once.
        let renamed = Participant {
            name: "Alice A.".into(),
            ..alice.clone()
        };
        assert_eq!(
            message_id("S", &alice, "c1"),
            message_id("S", &renamed, "c1")
        );
    }
}
