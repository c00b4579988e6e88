//! Every NATS subject Natter uses, built in one place.
//!
//! Machine IDs contain dots (`pc1.sales.acme`) and dots separate subject tokens, so a machine ID
//! becomes one token with `:` in place of `.` ([`machine_token`]). Session IDs are ULIDs and are
//! tokens as they are.

/// Commands to a session actor (request/reply). One token: the session ID.
pub fn session_command(session: &str) -> String {
    format!("natter.session.{session}.cmd")
}

/// What the session supervisor subscribes to.
pub const SESSION_COMMANDS: &str = "natter.session.*.cmd";

/// The session ID in a [`session_command`] subject.
pub fn session_of_command(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("natter.session.")?
        .strip_suffix(".cmd")
        .filter(|s| !s.contains('.'))
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
/// CLI. Agents may not publish here.
pub fn machine_request(machine: &str) -> String {
    format!("natter.machine.{}.req", machine_token(machine))
}

/// What the fleet supervisor subscribes to for machine requests.
pub const ALL_MACHINE_REQUESTS: &str = "natter.machine.*.req";

/// The machine ID in a [`machine_request`] subject.
pub fn machine_of_request(subject: &str) -> Option<String> {
    subject
        .strip_prefix("natter.machine.")?
        .strip_suffix(".req")
        .filter(|t| !t.contains('.'))
        .map(machine_from_token)
}

/// Revocations (payload: a machine ID): cut off that machine's connected agents. Published by a
/// node or the admin CLI, never by agents (they may publish only their check-ins).
pub const AGENT_REVOKE: &str = "natter.fleet.revoke";
/// Queue group of every node's revoker: one node carries out each revocation.
pub const REVOKE_QUEUE: &str = "natter-revoke";

/// Queue group shared by every node's session supervisor: each command reaches one node.
pub const SESSIONS_QUEUE: &str = "natter-sessions";
/// Queue group shared by every node's fleet actor.
pub const FLEET_QUEUE: &str = "natter-fleet";

#[cfg(test)]
mod tests {
    use super::*;

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
    fn session_ids_parse_back() {
        let s = session_command("01JDX");
        assert_eq!(session_of_command(&s), Some("01JDX"));
        assert_eq!(session_of_command("natter.session.a.b.cmd"), None);
        assert_eq!(session_of_events(&session_events("01JDX")), Some("01JDX"));
    }
}
