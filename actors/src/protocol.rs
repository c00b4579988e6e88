//! The JSON shapes Natter puts on NATS: session commands and replies, chat events, session
//! records, agent check-ins and agent commands.
//!
//! Every payload is JSON. Session commands carry the caller's identity, which the gateway has
//! authenticated; only broker nodes may publish on session subjects (NATS permissions).

use serde::{Deserialize, Serialize};

pub use crate::untrusted::{
    MAX_AGENT_DETAIL_CHARS, agent_window, clean_text, is_json_object, is_unprintable,
};

/// Who takes part in a chat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    Operator,
    MachineUser,
}

/// A chat participant: an operator (`id` = username) or a machine user (`id` = machine ID).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Participant {
    pub kind: ParticipantKind,
    pub id: String,
    pub name: String,
}

impl Participant {
    /// Whether two participants are the same person in a session (names may change).
    pub fn same(&self, other: &Participant) -> bool {
        self.kind == other.kind && self.id == other.id
    }
}

/// A command to a session actor, sent by a gateway as a NATS request on
/// [`crate::subjects::session_command`]. The reply is a [`SessionReply`].
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum SessionCommand {
    /// Start the session with a machine (with `user`, one of its logged-on users: each has a
    /// chat of their own). Fails with `Conflict` (carrying the session in progress) when that
    /// machine (or that user of it) already has one.
    Open {
        by: Participant,
        machine: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<ChatUser>,
    },
    /// Start a chat between two operators: `by` is its member and `with` is invited (an incoming
    /// chat for them). Fails with `Conflict` (carrying the session) when the two already have a
    /// chat in progress.
    OpenWithOperator { by: Participant, with: Participant },
    /// The machine user of `machine` (logged on as `user`) starts a chat and invites `operator`.
    /// The user's window is open already (they asked for it), so the agent is not asked; the
    /// answer carries a fresh chat-link `token` for their login. Fails with `Conflict` when the
    /// machine has a chat in progress.
    OpenFromMachine {
        machine: String,
        user: String,
        operator: Participant,
    },
    /// Join (or restart, if ended) the session.
    Join { by: Participant },
    /// Append a message. `client_id` makes a retried send land once.
    Send {
        by: Participant,
        client_id: String,
        text: String,
    },
    /// Hand the chat to operator `to`: they are invited (an incoming chat for them) and take
    /// over when they join; `by` stays a member until they close their window.
    HandOff { by: Participant, to: Participant },
    /// End the session.
    End { by: Participant },
    /// The session as `by` may see it (membership check included).
    View { by: Participant },
    /// Exchange the token of the machine user's chat link for the machine user's identity.
    /// The token works once, until it expires, and only while the chat is not ended.
    MachineLogin { token: String },
    /// The machine checked in again after its agent could not be reached (sent by the node
    /// that owns the machine, never by a gateway): a session waiting for it asks the agent
    /// again; any other session ignores it.
    MachineBack { machine: String },
}

impl SessionCommand {
    /// Who sends the command; `None` for the machine-user login, which has no caller yet.
    pub fn by(&self) -> Option<&Participant> {
        match self {
            SessionCommand::Open { by, .. }
            | SessionCommand::OpenWithOperator { by, .. }
            | SessionCommand::Join { by }
            | SessionCommand::HandOff { by, .. }
            | SessionCommand::Send { by, .. }
            | SessionCommand::End { by }
            | SessionCommand::View { by } => Some(by),
            SessionCommand::MachineLogin { .. }
            | SessionCommand::OpenFromMachine { .. }
            | SessionCommand::MachineBack { .. } => None,
        }
    }
}

/// A command as sent on the wire: the command plus the caller's scope (an operator who may see
/// only some organisations and groups gets `not_found` for sessions with machines outside it).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SessionRequest {
    #[serde(flatten)]
    pub cmd: SessionCommand,
    #[serde(default)]
    pub scope: crate::machines::Scope,
    /// For a machine user's command: the session epoch its login was made in. The session
    /// actor refuses the command (`BadToken`) unless that is still the session's epoch, so a
    /// restart landing after the gateway's own check still cuts the old login off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
}

/// The answer to a [`SessionCommand`].
pub type SessionReply = Result<Ack, SessionError>;

/// A successful answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Ack {
    /// The stream sequence of the event the command appended (or of the first one, for a
    /// duplicate send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionView>,
    /// For `MachineLogin`: who the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<Participant>,
    /// For `MachineLogin`: the session's epoch the login belongs to (see [`SessionRecord`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// For `OpenFromMachine`: the machine user's chat-link token (single use), for the gateway
    /// to log them in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Why a session command failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionErrorKind {
    /// No such session (never opened, or expired with the retention).
    NotFound,
    /// The caller is not a member of the session.
    NotMember,
    /// The session has ended.
    Ended,
    /// A session with that machine is already in progress (`session` says which).
    Conflict,
    /// The message is over the size limit.
    TooLarge,
    /// The command is malformed (empty text, bad client id, bad machine ID…).
    Invalid,
    /// The machine-user token is wrong.
    BadToken,
    /// Storage did not answer; the command may be retried.
    Unavailable,
}

/// A failed answer.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SessionError {
    pub kind: SessionErrorKind,
    pub message: String,
    /// For `Conflict`: the session already in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl SessionError {
    pub fn new(kind: SessionErrorKind, message: impl Into<String>) -> Self {
        SessionError {
            kind,
            message: message.into(),
            session: None,
        }
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for SessionError {}

/// What the machine's agent said about opening the chat window there.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentWindow {
    #[default]
    Pending,
    Opened,
    Failed,
    /// The agent could not be reached (no agent listening, or no answer): the session asks it
    /// again when the machine checks in next, within the retention.
    Waiting,
}

/// The one user of a machine with several logged-on users (a terminal server) whom a chat is
/// with: their name and the OS's session id of their desktop (from the machine's check-in).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChatUser {
    pub name: String,
    pub session: String,
}

/// A session as a member sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionView {
    pub id: String,
    /// The machine chatted with; empty for a chat between operators.
    pub machine: String,
    /// The machine's user this chat is with, when it was opened for one of several users;
    /// absent for a chat with a machine's only user (as agents without `users` report them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ChatUser>,
    pub ended: bool,
    pub last_seq: u64,
    pub members: Vec<Participant>,
    /// Operators asked to join who have not answered yet (their incoming chat is waiting).
    #[serde(default)]
    pub invited: Vec<Participant>,
    pub retention_secs: u64,
    pub agent: AgentWindow,
}

/// One chat event, as stored in the events stream (its sequence is the stream's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub session: String,
    /// Milliseconds since the epoch.
    pub at: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Opened {
        by: Participant,
        machine: String,
        /// The machine's user the chat is with (one of several), if one was picked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<ChatUser>,
    },
    Joined {
        who: Participant,
    },
    /// `by` asked operator `who` to join: an incoming chat for them until they join.
    Invited {
        who: Participant,
        by: Participant,
    },
    /// `by` handed the chat to operator `to` (invited until they join).
    HandedOff {
        by: Participant,
        to: Participant,
    },
    Message {
        from: Participant,
        text: String,
        client_id: String,
    },
    Agent {
        status: AgentWindow,
        detail: String,
    },
    Ended {
        by: Participant,
    },
    Restarted {
        by: Participant,
    },
}

/// A session's state, kept in the sessions KV bucket by the session's actor, so that an actor
/// rebuilt after a crash or an idle stop knows the session even when its first events have
/// expired. `seq` is the last event folded into it; later events are replayed on rebuild.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    /// Empty for a chat between operators.
    pub machine: String,
    /// The machine's user the chat is with, when picked among several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ChatUser>,
    pub created_at: u64,
    pub members: Vec<Participant>,
    /// Operators invited who have not joined yet.
    #[serde(default)]
    pub invited: Vec<Participant>,
    pub ended: bool,
    /// Hex SHA-256 of the machine user's live link token; empty when there is none (used, or
    /// lost with a restart whose record was rebuilt from events).
    pub token_sha256: String,
    /// When the live link token expires unused (milliseconds since the epoch).
    #[serde(default)]
    pub token_expires_at: u64,
    /// Bumped by every restart: machine-user logins of an earlier epoch are refused.
    #[serde(default)]
    pub epoch: u32,
    pub agent: AgentWindow,
    /// When the agent became unreachable (ms since the epoch; its `agent` `waiting` event), 0
    /// when the session is not waiting for the machine. The wait ends after the retention.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub agent_waiting_since: u64,
    pub seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A chat waiting for an operator to answer: the value of key `<operator>.<session>` in the
/// incoming-chats KV bucket ([`crate::subjects::incoming_key`]), written and deleted only by
/// the session's actor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Incoming {
    pub session: String,
    /// Who asked (the machine user, or an operator).
    pub from: Participant,
    /// The machine of the chat; empty for a chat between operators.
    pub machine: String,
    /// When it was asked, ms since the epoch.
    pub at: u64,
    /// `from` hands the chat over (rather than asking to chat).
    #[serde(default)]
    pub handoff: bool,
}

/// A check-in, published by an agent on [`crate::subjects::agent_checkin`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Checkin {
    /// Protocol version, 1.
    pub v: u32,
    pub machine: String,
    pub agent_version: String,
    pub os: String,
    pub ip: String,
    /// The logged-on user, if any (with `users`: the console's or first user, for old brokers).
    pub user: Option<String>,
    /// Seconds since the logged-on user's last input.
    #[serde(default)]
    pub idle_secs: u64,
    /// Every logged-on user session (terminal servers have several); when present it is the
    /// truth and `user` / `idle_secs` are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<CheckinUser>>,
    /// The agent's check-in interval, so the broker can tell when it is overdue.
    pub interval_secs: u64,
    /// Whether the machine's first audit has completed (absent = yes).
    #[serde(default = "yes")]
    pub audit_done: bool,
    /// Whether remote control is enabled on the machine (absent = yes).
    #[serde(default = "yes")]
    pub remote_control: bool,
}

/// One logged-on user session in a check-in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckinUser {
    pub name: String,
    /// The OS's id of the user's session (e.g. `rdp-tcp#3`, `2`, `tty7`).
    pub session: String,
    /// Seconds since this user's last input.
    #[serde(default)]
    pub idle_secs: u64,
}

fn yes() -> bool {
    true
}

/// A command to an agent (request/reply on [`crate::subjects::agent_command`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Open the machine user's chat window at `url`: in `user`'s desktop session when the chat
    /// is with one of several users, else in the logged-on user's.
    OpenChat {
        session: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<ChatUser>,
    },
}

/// An agent's answer to an [`AgentCommand`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AgentReply {
    pub ok: bool,
    #[serde(default)]
    pub detail: String,
}

/// An agent's request for its machine user's start page (on `natter.agent.<token>.start`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StartChatRequest {
    pub v: u32,
}

/// Why the broker refused a [`StartChatRequest`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartRefusal {
    /// The machine has no role, or its role lacks "may start a chat with operators".
    NotAllowed,
    /// Nobody is logged on to the machine (as its last check-in said).
    NoUser,
    /// The broker has no record of the machine (it never checked in).
    UnknownMachine,
    /// An admin suspended the machine's agent.
    Suspended,
    /// The request was not a start request (version or shape).
    BadRequest,
    /// The broker's store did not answer; try again.
    Unavailable,
}

/// The broker's answer to a [`StartChatRequest`]: `{"ok": true, "url": …}` or
/// `{"ok": false, "reason": …, "message": …}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StartChatReply {
    pub ok: bool,
    /// The start page's link, with its single-use token (`<public_url>/start/#t=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StartRefusal>,
    /// For a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl StartChatReply {
    pub fn link(url: String) -> Self {
        StartChatReply {
            ok: true,
            url: Some(url),
            reason: None,
            message: String::new(),
        }
    }

    pub fn refused(reason: StartRefusal, message: impl Into<String>) -> Self {
        StartChatReply {
            ok: false,
            url: None,
            reason: Some(reason),
            message: message.into(),
        }
    }
}

/// Checks a machine ID: dot-separated segments of `[a-z0-9_-]`, at least `machine.group` (an
/// organisation may be the group), at most 253 characters.
pub fn valid_machine_id(id: &str) -> bool {
    id.len() <= 253
        && id.split('.').count() >= 2
        && id.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// Checks a client-chosen message id: 1–64 characters of `[A-Za-z0-9_-]` (a UUID fits).
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a session ID: a ULID.
pub fn valid_session_id(id: &str) -> bool {
    id.len() == 26 && ulid::Ulid::from_string(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_with_a_type_tag() {
        let e = Event {
            session: "S".into(),
            at: 5,
            body: EventBody::Message {
                from: Participant {
                    kind: ParticipantKind::Operator,
                    id: "alice".into(),
                    name: "Alice".into(),
                },
                text: "hi".into(),
                client_id: "c1".into(),
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "message");
        assert_eq!(json["from"]["kind"], "operator");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
    }

    #[test]
    fn replies_are_results() {
        let r: SessionReply = Err(SessionError::new(SessionErrorKind::NotMember, "no"));
        let s = serde_json::to_string(&r).unwrap();
        let back: SessionReply = serde_json::from_str(&s).unwrap();
        assert_eq!(back.unwrap_err().kind, SessionErrorKind::NotMember);
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_machine_id("pc1.east.sales.acme"));
        assert!(!valid_machine_id("pc1"));
        assert!(!valid_machine_id("PC1.acme"));
        assert!(!valid_machine_id("pc1..acme"));
        assert!(!valid_machine_id("pc1.ac me"));
        assert!(valid_client_id("0b9c6a4e-1f2d-4c3b-9a8e-7d6c5b4a3f2e"));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("a.b"));
        assert!(valid_session_id(&ulid::Ulid::new().to_string()));
        assert!(!valid_session_id("nope"));
    }
}
