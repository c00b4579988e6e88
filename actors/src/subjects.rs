//! Every NATS subject Natter uses, built in one place.
//!
//! Machine IDs contain dots (`pc1.sales.acme`) and dots separate subject tokens, so a machine ID
//! becomes one token with `:` in place of `.` ([`machine_token`]). Session IDs are ULIDs and are
//! tokens as they are.

/// How many partitions sessions and machines are spread over. Each partition is owned by one
/// node at a time (leases in the `natter_partitions` bucket, [`crate::partitions`]).
/// *Stable forever*: changing it moves every key to another partition.
pub const PARTITIONS: u32 = 32;

/// The partition of a session (key: its ID) or a machine (key: its machine ID): FNV-1a 32-bit
/// of the key's bytes, mod [`PARTITIONS`]. *Stable forever* (gateways, nodes and the admin CLI of
/// different versions must agree).
pub fn partition_of(key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % PARTITIONS
}

/// Commands to a session actor (request/reply): `natter.session.<partition>.<session>.cmd`, so
/// only the node owning the session's partition receives them.
pub fn session_command(session: &str) -> String {
    format!("natter.session.{}.{session}.cmd", partition_of(session))
}

/// Every session's commands (a subscription pattern for observers such as the benchmark; owners
/// subscribe per partition, [`session_commands_of`]).
pub const ALL_SESSION_COMMANDS: &str = "natter.session.*.*.cmd";

/// What the owner of partition `p` subscribes to (in [`SESSIONS_QUEUE`]).
pub fn session_commands_of(p: u32) -> String {
    format!("natter.session.{p}.*.cmd")
}

/// The session ID in a [`session_command`] subject; `None` when the subject is not one, or names
/// a partition that is not the session's (it would reach the wrong owner).
pub fn session_of_command(subject: &str) -> Option<&str> {
    let (p, session) = subject
        .strip_prefix("natter.session.")?
        .strip_suffix(".cmd")?
        .split_once('.')?;
    let p: u32 = p.parse().ok()?;
    Some(session).filter(|s| !s.contains('.') && partition_of(s) == p)
}

/// A session's events in the events stream.
pub fn session_events(session: &str) -> String {
    format!("natter.events.{session}")
}

/// All sessions' events: the events stream's subjects.
pub const ALL_EVENTS: &str = "natter.events.*";

/// The session ID in a [`session_events`] subject.
pub fn session_of_events(subject: &str) -> Option<&str> {
    subject.strip_prefix("natter.events.")
}

/// A session's events as the events stream republishes them the moment they are stored (core
/// NATS, no consumer): what a gateway subscribes to for the sessions its browsers follow.
pub fn session_live(session: &str) -> String {
    format!("natter.live.{session}")
}

/// Every session's live events (a subscription pattern; gateways subscribe per session).
pub const ALL_LIVE: &str = "natter.live.*";

/// The events stream's republish destination for [`ALL_EVENTS`]: each session's events land on
/// its [`session_live`] subject (the server's mapping syntax; a bare `*` is refused there).
pub const LIVE_REPUBLISH: &str = "natter.live.{{wildcard(1)}}";

/// The session ID in a [`session_live`] subject.
pub fn session_of_live(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("natter.live.")
        .filter(|s| !s.is_empty() && !s.contains('.'))
}

/// A session's signals ("is typing", "seen"): core NATS only, never stored, published by the
/// gateway a member posts to and read by every gateway whose browsers follow the session.
pub fn session_signal(session: &str) -> String {
    format!("natter.signal.{session}")
}

/// The session ID in a [`session_signal`] subject.
pub fn session_of_signal(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("natter.signal.")
        .filter(|s| !s.is_empty() && !s.contains('.'))
}

/// A machine ID as one subject token.
pub fn machine_token(machine: &str) -> String {
    machine.replace('.', ":")
}

/// The machine ID from its subject token.
pub fn machine_from_token(token: &str) -> String {
    token.replace(':', ".")
}

/// Where an agent publishes its check-ins.
pub fn agent_checkin(machine: &str) -> String {
    format!("natter.agent.{}.checkin", machine_token(machine))
}

/// What the fleet subscribes to.
pub const ALL_CHECKINS: &str = "natter.agent.*.checkin";

/// The machine ID in an [`agent_checkin`] subject.
pub fn machine_of_checkin(subject: &str) -> Option<String> {
    subject
        .strip_prefix("natter.agent.")?
        .strip_suffix(".checkin")
        .filter(|t| !t.contains('.'))
        .map(machine_from_token)
}

/// Commands to an agent (request/reply), such as "open a chat window".
pub fn agent_command(machine: &str) -> String {
    format!("natter.agent.{}.cmd", machine_token(machine))
}

/// Where an agent asks, for its machine user, for a link to the start page (request/reply;
/// issue 11, item 3): only the broker answers, and only if the machine's role allows it.
pub fn agent_start_request(machine: &str) -> String {
    format!("natter.agent.{}.start", machine_token(machine))
}

/// What the broker's start service subscribes to (in [`START_QUEUE`]).
pub const ALL_START_REQUESTS: &str = "natter.agent.*.start";

/// The machine ID in an [`agent_start_request`] subject.
pub fn machine_of_start_request(subject: &str) -> Option<String> {
    subject
        .strip_prefix("natter.agent.")?
        .strip_suffix(".start")
        .filter(|t| !t.contains('.'))
        .map(machine_from_token)
}

/// The prefix of a real agent's reply subjects (its NATS inbox): one per machine, so the auth
/// callout can let an agent receive the answers to its own requests and nobody else's.
pub fn agent_inbox_prefix(machine: &str) -> String {
    format!("natter.inbox.{}", machine_token(machine))
}

/// The start request of a simulated machine (the simulator's family; answered only for
/// machines no real agent enrolled).
pub fn simulated_start_request(machine: &str) -> String {
    format!("natter.simagent.{}.start", machine_token(machine))
}

/// What the broker's start service subscribes to for simulated machines.
pub const ALL_SIMULATED_START_REQUESTS: &str = "natter.simagent.*.start";

/// The machine ID in a [`simulated_start_request`] subject.
pub fn machine_of_simulated_start_request(subject: &str) -> Option<String> {
    subject
        .strip_prefix("natter.simagent.")?
        .strip_suffix(".start")
        .filter(|t| !t.contains('.'))
        .map(machine_from_token)
}

/// The prefix of the simulator's reply subjects (`custom_inbox_prefix` of its connections).
pub const SIMULATOR_INBOX_PREFIX: &str = "natter.siminbox";

/// Queue group of every node's start service: one node answers each start request.
pub const START_QUEUE: &str = "natter-start";

/// Where a simulated agent (`natter-agent --simulate`) publishes its check-ins: a subject family
/// of its own, so the simulator's NATS user never reaches a real machine's subjects. The fleet
/// accepts these only for machines no real agent enrolled.
pub fn simulated_checkin(machine: &str) -> String {
    format!("natter.simagent.{}.checkin", machine_token(machine))
}

/// What the fleet subscribes to for simulated check-ins.
pub const ALL_SIMULATED_CHECKINS: &str = "natter.simagent.*.checkin";

/// The machine ID in a [`simulated_checkin`] subject.
pub fn machine_of_simulated_checkin(subject: &str) -> Option<String> {
    subject
        .strip_prefix("natter.simagent.")?
        .strip_suffix(".checkin")
        .filter(|t| !t.contains('.'))
        .map(machine_from_token)
}

/// Commands to a simulated agent: sent here only for machines no real agent enrolled.
pub fn simulated_command(machine: &str) -> String {
    format!("natter.simagent.{}.cmd", machine_token(machine))
}

/// Requests to a machine's agent actor (view, provision, suspend), from gateways and the admin
/// CLI: `natter.machine.<partition>.<token>.req`. Agents may not publish here.
pub fn machine_request(machine: &str) -> String {
    format!(
        "natter.machine.{}.{}.req",
        partition_of(machine),
        machine_token(machine)
    )
}

/// What the owner of partition `p` subscribes to for machine requests (in [`FLEET_QUEUE`]).
pub fn machine_requests_of(p: u32) -> String {
    format!("natter.machine.{p}.*.req")
}

/// The machine ID in a [`machine_request`] subject; `None` when the subject is not one or names
/// a partition that is not the machine's.
pub fn machine_of_request(subject: &str) -> Option<String> {
    let (p, token) = subject
        .strip_prefix("natter.machine.")?
        .strip_suffix(".req")?
        .split_once('.')?;
    let p: u32 = p.parse().ok()?;
    Some(token)
        .filter(|t| !t.contains('.'))
        .map(machine_from_token)
        .filter(|m| partition_of(m) == p)
}

/// The subject a put of `key` in the KV bucket `store` is published on (what
/// `kv::Store::put` publishes to), for a writer that pipelines its puts instead of waiting for
/// each acknowledgement; `None` for a bucket reached through a JetStream domain prefix, which
/// such a writer does not handle (it then puts through the store).
pub fn kv_put(store: &async_nats::jetstream::kv::Store, key: &str) -> Option<String> {
    if store.use_jetstream_prefix {
        return None;
    }
    let prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
    Some(format!("{prefix}{key}"))
}

/// The key of partition `p`'s lease in the partitions bucket (value: the owning node's id).
pub fn partition_lease_key(p: u32) -> String {
    format!("p.{p}")
}

/// The partition a lease key names.
pub fn partition_of_lease_key(key: &str) -> Option<u32> {
    key.strip_prefix("p.")?
        .parse()
        .ok()
        .filter(|p| *p < PARTITIONS)
}

/// The key of a node's membership heartbeat in the partitions bucket (node ids have no dots).
pub fn node_member_key(node: &str) -> String {
    format!("node.{node}")
}

/// The node id a membership key names.
pub fn node_of_member_key(key: &str) -> Option<&str> {
    key.strip_prefix("node.")
}

/// The key of an incoming chat in the incoming-chats bucket: `<operator>.<session>`
/// (usernames and session IDs have no dots), so an operator's are `<operator>.*`.
pub fn incoming_key(operator: &str, session: &str) -> String {
    format!("{operator}.{session}")
}

/// The operator and session an [`incoming_key`] names.
pub fn parse_incoming_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.').filter(|(_, s)| !s.contains('.'))
}

/// The key of the chat in progress between two operators in the machine-sessions bucket (which
/// holds one chat in progress per machine, and per pair of operators): `ops=<a>=<b>`, the two
/// usernames in order. It has no dot, so it is never a machine ID.
pub fn operator_pair_key(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("ops={first}={second}")
}

/// The key of the chat in progress with one user (OS session `user_session`) of a machine
/// with several, in the machine-sessions bucket: `<machine>/<hex of the session id>` (a session
/// id may hold characters a KV key may not, such as `#`; a machine ID never holds `/`).
pub fn machine_user_chat_key(machine: &str, user_session: &str) -> String {
    format!("{machine}/{}", hex::encode(user_session.as_bytes()))
}

/// The machine and user session a [`machine_user_chat_key`] names.
pub fn parse_machine_user_chat_key(key: &str) -> Option<(&str, String)> {
    let (machine, session) = key.split_once('/')?;
    let session = String::from_utf8(hex::decode(session).ok()?).ok()?;
    crate::protocol::valid_machine_id(machine).then_some((machine, session))
}

/// The key of an operator's presence, as one node's gateway sees it, in the presence bucket:
/// `<operator>.<node id>` (node ids have no dots).
pub fn presence_key(operator: &str, node: &str) -> String {
    format!("{operator}.{node}")
}

/// The operator and node a [`presence_key`] names.
pub fn parse_presence_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.').filter(|(_, n)| !n.contains('.'))
}

/// Revocations (payload: a machine ID): cut off that machine's connected agents. Published by a
/// node or the admin CLI, never by agents (they may publish only their check-ins).
pub const AGENT_REVOKE: &str = "natter.fleet.revoke";
/// Queue group of every node's revoker: one node carries out each revocation.
pub const REVOKE_QUEUE: &str = "natter-revoke";

/// Queue group of every node's auth callout service: one node answers each agent's connect.
pub const AUTH_CALLOUT_QUEUE: &str = "natter-auth-callout";

/// Queue group of the session supervisors subscribed to one partition's commands: if two nodes
/// briefly both hold a partition (a hand-over), each command still reaches one of them.
pub const SESSIONS_QUEUE: &str = "natter-sessions";
/// Queue group of the fleet supervisors subscribed to one partition's machine requests.
pub const FLEET_QUEUE: &str = "natter-fleet";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_chat_key_is_a_kv_key_and_round_trips() {
        let key = machine_user_chat_key("pc1.sales.acme", "rdp-tcp#3");
        assert_eq!(key, "pc1.sales.acme/7264702d7463702333");
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
        );
        assert_eq!(
            parse_machine_user_chat_key(&key),
            Some(("pc1.sales.acme", "rdp-tcp#3".to_string()))
        );
        assert_eq!(parse_machine_user_chat_key("pc1.sales.acme"), None);
        assert_eq!(parse_machine_user_chat_key("ops=a=b"), None);
    }

    #[test]
    fn machine_ids_round_trip_through_one_token() {
        let s = agent_checkin("pc1.east.sales.acme");
        assert_eq!(s, "natter.agent.pc1:east:sales:acme.checkin");
        assert_eq!(
            machine_of_checkin(&s).as_deref(),
            Some("pc1.east.sales.acme")
        );
        assert_eq!(machine_of_checkin("natter.agent.a.b.checkin"), None);
    }

    #[test]
    fn simulated_agents_have_a_subject_family_of_their_own() {
        let s = simulated_checkin("sim1.sales.acme");
        assert_eq!(s, "natter.simagent.sim1:sales:acme.checkin");
        assert_eq!(
            machine_of_simulated_checkin(&s).as_deref(),
            Some("sim1.sales.acme")
        );
        assert_eq!(machine_of_checkin(&s), None);
        assert_eq!(
            machine_of_simulated_checkin(&agent_checkin("sim1.sales.acme")),
            None
        );
        assert_eq!(
            simulated_command("sim1.sales.acme"),
            "natter.simagent.sim1:sales:acme.cmd"
        );
    }

    #[test]
    fn start_requests_parse_back() {
        let s = agent_start_request("pc1.sales.acme");
        assert_eq!(s, "natter.agent.pc1:sales:acme.start");
        assert_eq!(
            machine_of_start_request(&s).as_deref(),
            Some("pc1.sales.acme")
        );
        assert_eq!(machine_of_checkin(&s), None);
        let sim = simulated_start_request("sim1.acme");
        assert_eq!(
            machine_of_simulated_start_request(&sim).as_deref(),
            Some("sim1.acme")
        );
        assert_eq!(machine_of_start_request(&sim), None);
        assert_eq!(agent_inbox_prefix("pc1.acme"), "natter.inbox.pc1:acme");
    }

    #[test]
    fn session_ids_parse_back() {
        let s = session_command("01JDX");
        assert_eq!(
            s,
            format!("natter.session.{}.01JDX.cmd", partition_of("01JDX"))
        );
        assert_eq!(session_of_command(&s), Some("01JDX"));
        assert_eq!(session_of_command("natter.session.a.b.cmd"), None);
        assert_eq!(session_of_command("natter.session.01JDX.cmd"), None);
        // The wrong partition for the session: refused, it would reach the wrong owner.
        let wrong = (partition_of("01JDX") + 1) % PARTITIONS;
        assert_eq!(
            session_of_command(&format!("natter.session.{wrong}.01JDX.cmd")),
            None
        );
        assert_eq!(session_of_events(&session_events("01JDX")), Some("01JDX"));
        assert_eq!(session_of_live(&session_live("01JDX")), Some("01JDX"));
        assert_eq!(session_of_live("natter.live.a.b"), None);
        assert_eq!(session_of_signal(&session_signal("01JDX")), Some("01JDX"));
        assert_eq!(session_of_signal("natter.signal.a.b"), None);
    }

    #[test]
    fn machine_requests_parse_back() {
        let s = machine_request("pc1.sales.acme");
        let p = partition_of("pc1.sales.acme");
        assert_eq!(s, format!("natter.machine.{p}.pc1:sales:acme.req"));
        assert_eq!(machine_of_request(&s).as_deref(), Some("pc1.sales.acme"));
        let wrong = format!("natter.machine.{}.pc1:sales:acme.req", (p + 1) % PARTITIONS);
        assert_eq!(machine_of_request(&wrong), None);
        assert_eq!(
            machine_of_request("natter.machine.pc1:sales:acme.req"),
            None
        );
    }

    #[test]
    fn partitions_are_stable_fnv1a() {
        // Fixed forever: FNV-1a 32-bit of the key's bytes, mod 32.
        assert_eq!(partition_of(""), 0x811c_9dc5 % 32);
        assert_eq!(partition_of("a"), 0xe40c_292c % 32);
        assert_eq!(partition_of("foobar"), 0xbf9c_f968 % 32);
        assert_eq!(
            partition_of("pc1.sales.acme"),
            partition_of("pc1.sales.acme")
        );
        assert!((0..1000).all(|i| partition_of(&format!("s{i}")) < PARTITIONS));
        assert_eq!(partition_lease_key(7), "p.7");
        assert_eq!(partition_of_lease_key("p.7"), Some(7));
        assert_eq!(partition_of_lease_key("p.32"), None);
        assert_eq!(node_of_member_key(&node_member_key("n-1")), Some("n-1"));
    }
}
