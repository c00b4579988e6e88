//! The JSON shapes of docs/api.md: request bodies and queries, responses, and the payloads of
//! the SSE control events.
//!
//! Response fields are declared in alphabetical order: that is the order the `json!` literals
//! they replaced put on the wire, so the bytes stay the same.

use natter_actors::machines::{MachineRecord, MachineStatus, group_of, org_of};
use natter_actors::protocol::SessionView;
use serde::{Deserialize, Serialize};

use crate::auth::Login;

/// `POST /api/login`.
#[derive(Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /api/chats`.
#[derive(Deserialize)]
pub struct StartChatRequest {
    /// A chat with this machine's logged-on user…
    #[serde(default)]
    pub machine: Option<String>,
    /// …or with this operator (a username from `event: operators`).
    #[serde(default)]
    pub operator: Option<String>,
    /// With a machine: which of its logged-on users (their OS session id).
    #[serde(default)]
    pub user_session: Option<String>,
}

/// `POST /api/sessions/{id}/handoff`.
#[derive(Deserialize)]
pub struct HandOffRequest {
    /// The username of the operator to take the chat.
    pub operator: String,
}

/// `POST …/messages`.
#[derive(Deserialize)]
pub struct MessageRequest {
    /// The client's ID for the message: a retry with the same one lands once.
    pub id: String,
    pub text: String,
}

/// `POST …/typing`: `{}` while typing, `{"typing": false}` when the input was cleared or sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    #[serde(default = "typing_default")]
    pub typing: bool,
}

fn typing_default() -> bool {
    true
}

/// `POST …/seen`: the highest event seq the sender's window shows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenRequest {
    pub seq: u64,
}

/// `POST /m/{id}/api/login`: the token from the chat link.
#[derive(Deserialize)]
pub struct TokenRequest {
    pub token: String,
}

/// `?filter=` of the machine list and stream.
#[derive(Deserialize)]
pub struct FilterQuery {
    pub filter: Option<String>,
}

/// `?filter=&offset=&limit=` of the machine list and its stream (numbers checked by the handler,
/// for a clear message).
#[derive(Deserialize)]
pub struct MachineListQuery {
    pub filter: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

/// `?format=text|json` of a transcript.
#[derive(Deserialize)]
pub struct TranscriptQuery {
    pub format: Option<String>,
}

/// `?last=N` of a session's recent events (a number, checked by the handler for a clear error).
#[derive(Deserialize)]
pub struct RecentQuery {
    pub last: Option<String>,
}

/// `?sessions=A,B:17&since=N` of the event streams.
#[derive(Deserialize)]
pub struct EventsQuery {
    pub sessions: Option<String>,
    pub since: Option<u64>,
}

/// The logged-in operator (`/api/login`, `/api/me`).
#[derive(Serialize)]
pub struct OperatorView<'a> {
    pub admin: bool,
    pub id: &'a str,
    pub name: &'a str,
    pub scopes: &'a [String],
}

impl<'a> From<&'a Login> for OperatorView<'a> {
    fn from(l: &'a Login) -> Self {
        OperatorView {
            admin: l.admin,
            id: &l.who.id,
            name: &l.who.name,
            scopes: &l.scopes,
        }
    }
}

/// `POST /api/chats`: the new (or joined) session.
#[derive(Serialize)]
pub struct ChatStarted {
    pub session: Option<SessionView>,
}

/// A sent message's place in the stream.
#[derive(Serialize)]
pub struct MessageSent {
    pub duplicate: bool,
    pub seq: Option<u64>,
}

/// An ended session's `ended` event.
#[derive(Serialize)]
pub struct SessionEnded {
    pub seq: Option<u64>,
}

/// The `<MachineView>` of docs/api.md.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MachineView {
    pub agent_version: String,
    pub group: String,
    pub id: String,
    pub idle_secs: u64,
    pub ip: String,
    pub last_checkin: Option<u64>,
    pub org: String,
    pub os: String,
    /// The chat in progress with the machine (of several users: with the first).
    pub session: Option<String>,
    pub status: MachineStatus,
    pub user: Option<String>,
    /// Every logged-on user session (empty when the agent reports only `user`).
    pub users: Vec<MachineUserView>,
}

/// One logged-on user session in a `<MachineView>`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MachineUserView {
    pub active: bool,
    /// The chat in progress with this user.
    pub chat: Option<String>,
    pub idle_secs: u64,
    pub name: String,
    pub session: String,
}

impl MachineView {
    /// The view of `m`; `chat_of(None)` is the chat in progress with the machine, and
    /// `chat_of(Some(session))` the one with that user session.
    pub fn new(m: &MachineRecord, chat_of: impl Fn(Option<&str>) -> Option<String>) -> Self {
        let users: Vec<MachineUserView> = (m.users.iter())
            .map(|u| MachineUserView {
                active: u.active(),
                chat: chat_of(Some(&u.session)),
                idle_secs: u.idle_secs,
                name: u.name.clone(),
                session: u.session.clone(),
            })
            .collect();
        // Of several users, the first's chat (or one the machine's user started, by machine).
        let session = users
            .first()
            .and_then(|first| first.chat.clone())
            .or_else(|| chat_of(None));
        MachineView {
            agent_version: m.agent_version.clone(),
            group: group_of(&m.id).to_string(),
            id: m.id.clone(),
            idle_secs: m.idle_secs,
            ip: m.ip.clone(),
            last_checkin: m.last_checkin,
            org: org_of(&m.id).to_string(),
            os: m.os.clone(),
            session,
            status: m.status,
            user: m.user.clone(),
            users,
        }
    }
}

/// `event: machine` for a machine that left the directory.
#[derive(Serialize)]
pub struct MachineRemoved<'a> {
    pub id: &'a str,
    pub removed: bool,
}

/// `event: incoming_gone`: a chat no longer waits for this operator.
#[derive(Serialize)]
pub struct IncomingGone<'a> {
    pub session: &'a str,
}

/// `event: hello`, first on every (re)connect of an event stream.
#[derive(Serialize)]
pub struct Hello<'a> {
    pub retention_secs: u64,
    pub server_time: u64,
    pub sessions: &'a [String],
}

/// `event: reset`: the client's resume point for `session` lies before what retention kept.
#[derive(Serialize)]
pub struct Reset<'a> {
    pub reason: &'static str,
    pub session: &'a str,
}

/// `event: error`, after which the stream ends.
#[derive(Serialize)]
pub struct StreamError<'a> {
    pub error: &'a str,
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use natter_actors::machines::{MachineRecord, MachineStatus};

    use super::*;

    #[test]
    fn a_machine_view_has_the_fields_of_the_docs_on_the_wire() {
        let mut record = MachineRecord::provisioned("pc1.east.sales.acme");
        record.status = MachineStatus::User;
        record.user = Some("carol".into());
        record.last_checkin = Some(1764045000123);
        record.os = "linux".into();
        record.agent_version = "0.1.0".into();
        record.ip = "10.0.0.7".into();
        let view = MachineView::new(&record, |_| None);
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"agent_version":"0.1.0","group":"east.sales.acme","id":"pc1.east.sales.acme","idle_secs":0,"ip":"10.0.0.7","last_checkin":1764045000123,"org":"acme","os":"linux","session":null,"status":"user","user":"carol","users":[]}"#
        );
        record.users = vec![natter_actors::machines::MachineUser {
            name: "dave".into(),
            session: "rdp-tcp#3".into(),
            idle_secs: 700,
        }];
        let view = MachineView::new(&record, |s| s.map(|s| format!("chat-{s}")));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["users"],
            serde_json::json!([{"active": false, "chat": "chat-rdp-tcp#3", "idle_secs": 700,
                                "name": "dave", "session": "rdp-tcp#3"}])
        );
        assert_eq!(json["session"], "chat-rdp-tcp#3", "the first user's chat");
    }

    #[test]
    fn send_and_end_answers_keep_their_shape() {
        let sent = MessageSent {
            duplicate: true,
            seq: Some(42),
        };
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"duplicate":true,"seq":42}"#
        );
        let ended = SessionEnded { seq: Some(43) };
        assert_eq!(serde_json::to_string(&ended).unwrap(), r#"{"seq":43}"#);
    }
}

/// `POST /api/roles`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    pub name: String,
    #[serde(default)]
    pub may_start_chat: bool,
}

/// `PUT /api/roles/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub may_start_chat: bool,
}

/// `PUT /api/machines/{id}/role`: a role's name, or null for none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRoleRequest {
    pub role: Option<String>,
}

/// The answer to `PUT /api/machines/{id}/role`.
#[derive(Serialize)]
pub struct MachineRole {
    pub machine: String,
    pub role: Option<String>,
}

/// `POST /start/api/chats`: the alias of the operator to chat with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartFromMachineRequest {
    pub operator: String,
}

/// An operator a machine user may reach: an alias and a display name, never a login ID.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ReachableOperator {
    pub id: String,
    pub name: String,
}

/// `GET /start/api/operators` (and the answer to the start page's login).
#[derive(Serialize)]
pub struct StartPage {
    pub machine: String,
    pub operators: Vec<ReachableOperator>,
    pub user: String,
}

/// The answer to `POST /start/api/chats`.
#[derive(Serialize)]
pub struct StartedFromMachine {
    pub session: String,
    pub url: String,
}
