//! Managed machines: the 8 check-in states, machine records, organisations and groups, scopes,
//! and the Machine ID / Group ID filter.
//!
//! A machine ID is `machine.group…org`: the first segment names the machine, the rest is its
//! group ID (`east.sales.acme`), whose last segment is the organisation (`acme`). Groups nest:
//! `east.sales.acme` is a subgroup of `sales.acme`.

use serde::{Deserialize, Serialize};

/// The check-in status of a machine's agent (F10).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MachineStatus {
    /// Provisioned, no check-in yet.
    NeverCheckedIn,
    /// Online, but the first audit has not completed.
    WaitingFirstAudit,
    /// Online, nobody logged on.
    Online,
    /// Online, a user logged on.
    User,
    /// A user logged on but idle for 10 minutes or more.
    Idle,
    /// No check-in for `offline_after` intervals.
    Offline,
    /// Online, but remote control is disabled.
    RemoteDisabled,
    /// Suspended by an admin: check-ins change nothing, no chat.
    Suspended,
}

impl MachineStatus {
    pub const ALL: [MachineStatus; 8] = [
        MachineStatus::NeverCheckedIn,
        MachineStatus::WaitingFirstAudit,
        MachineStatus::Online,
        MachineStatus::User,
        MachineStatus::Idle,
        MachineStatus::Offline,
        MachineStatus::RemoteDisabled,
        MachineStatus::Suspended,
    ];

    /// Whether an operator may start a chat with the machine in this state (a user must also be
    /// logged on).
    pub fn can_chat(self) -> bool {
        matches!(self, MachineStatus::User | MachineStatus::Idle)
    }

    /// The seed's wording, for people.
    pub fn describe(self) -> &'static str {
        match self {
            MachineStatus::NeverCheckedIn => "Agent has never checked in",
            MachineStatus::WaitingFirstAudit => "Online but waiting for first audit to complete",
            MachineStatus::Online => "Agent online",
            MachineStatus::User => "Agent online and user currently logged on",
            MachineStatus::Idle => {
                "Agent online and user currently logged on, but user not active for 10 minutes"
            }
            MachineStatus::Offline => "Agent is currently offline",
            MachineStatus::RemoteDisabled => "Agent is online but remote control has been disabled",
            MachineStatus::Suspended => "The agent has been suspended",
        }
    }
}

/// A user counts as idle after this many seconds without input.
pub const IDLE_AFTER_SECS: u64 = 600;

/// The range an agent's check-in interval is clamped to. Below it the machine would only go
/// offline sooner; above it a machine that stopped checking in would look online for hours.
pub const INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

/// A machine as its agent actor keeps it (in the machines KV bucket, written only by that
/// actor).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MachineRecord {
    pub id: String,
    pub status: MachineStatus,
    /// Milliseconds since the epoch; `None` before the first check-in.
    pub last_checkin: Option<u64>,
    /// The logged-on user (of several: the most active one).
    pub user: Option<String>,
    pub idle_secs: u64,
    /// Every logged-on user session, as the agent listed them; empty when the agent reports
    /// only `user` (one user, as agents did before).
    #[serde(default)]
    pub users: Vec<MachineUser>,
    pub os: String,
    pub agent_version: String,
    pub ip: String,
    pub interval_secs: u64,
    pub audit_done: bool,
    pub remote_control: bool,
    pub suspended: bool,
}

impl MachineRecord {
    /// A provisioned machine that has not checked in.
    pub fn provisioned(id: &str) -> MachineRecord {
        MachineRecord {
            id: id.into(),
            status: MachineStatus::NeverCheckedIn,
            last_checkin: None,
            user: None,
            idle_secs: 0,
            users: Vec::new(),
            os: String::new(),
            agent_version: String::new(),
            ip: String::new(),
            interval_secs: 30,
            audit_done: false,
            remote_control: true,
            suspended: false,
        }
    }

    /// The record with what its machine said held to the check-in bounds: a record stored
    /// before check-ins were checked may hold anything (text cleaned and cut, numbers clamped,
    /// an IP that is none dropped).
    pub fn bounded(mut self) -> MachineRecord {
        use crate::fleet::checkin::{
            MAX_AGENT_VERSION_CHARS, MAX_IDLE_SECS, MAX_OS_CHARS, MAX_USER_CHARS,
        };
        use crate::untrusted::clean_text;
        self.user = self.user.map(|u| clean_text(&u, MAX_USER_CHARS));
        self.users.truncate(crate::fleet::checkin::MAX_USERS);
        for u in &mut self.users {
            u.name = clean_text(&u.name, MAX_USER_CHARS);
            u.session = clean_text(&u.session, crate::fleet::checkin::MAX_SESSION_CHARS);
            u.idle_secs = u.idle_secs.min(MAX_IDLE_SECS);
        }
        self.os = clean_text(&self.os, MAX_OS_CHARS);
        self.agent_version = clean_text(&self.agent_version, MAX_AGENT_VERSION_CHARS);
        if self.ip.parse::<std::net::IpAddr>().is_err() {
            self.ip.clear();
        }
        self.interval_secs = self
            .interval_secs
            .clamp(*INTERVAL_SECS.start(), *INTERVAL_SECS.end());
        self.idle_secs = self.idle_secs.min(MAX_IDLE_SECS);
        self
    }

    /// The status these facts imply at `now` (ms), with the agent offline after
    /// `offline_after` missed intervals.
    pub fn derive_status(&self, now: u64, offline_after: u32) -> MachineStatus {
        if self.suspended {
            return MachineStatus::Suspended;
        }
        let Some(last) = self.last_checkin else {
            return MachineStatus::NeverCheckedIn;
        };
        if now.saturating_sub(last) > self.allowed_silence_ms(offline_after) {
            return MachineStatus::Offline;
        }
        if !self.audit_done {
            return MachineStatus::WaitingFirstAudit;
        }
        if !self.remote_control {
            return MachineStatus::RemoteDisabled;
        }
        match &self.user {
            Some(_) if self.idle_secs >= IDLE_AFTER_SECS => MachineStatus::Idle,
            Some(_) => MachineStatus::User,
            None => MachineStatus::Online,
        }
    }

    /// When (ms) the agent turns offline if it does not check in again.
    pub fn offline_at(&self, offline_after: u32) -> Option<u64> {
        let last = self.last_checkin?;
        Some(last.saturating_add(self.allowed_silence_ms(offline_after)))
    }

    /// How long (ms) the agent may stay silent before it is offline. The interval comes from
    /// the machine (and a record written before check-ins were clamped may hold any number), so
    /// it is clamped here too: no interval makes a machine "online forever".
    fn allowed_silence_ms(&self, offline_after: u32) -> u64 {
        self.interval_secs
            .clamp(*INTERVAL_SECS.start(), *INTERVAL_SECS.end())
            .saturating_mul(1000)
            .saturating_mul(u64::from(offline_after.max(1)))
    }
}

/// One logged-on user session of a machine (a terminal server has several).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MachineUser {
    pub name: String,
    /// The OS's id of the user's session.
    pub session: String,
    pub idle_secs: u64,
}

impl MachineUser {
    /// Active: some input within the last 10 minutes.
    pub fn active(&self) -> bool {
        self.idle_secs < IDLE_AFTER_SECS
    }
}

/// A request to a machine's agent actor, on [`crate::subjects::machine_request`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MachineRequest {
    /// The machine's live record (Quick View).
    View,
    /// Register a machine that has not checked in yet ("never checked in").
    Provision,
    /// Suspend or resume the agent (admin).
    Suspend { suspended: bool },
    /// Session `session` could not reach the machine's agent when it asked at `since` (ms since
    /// the epoch): if the machine checked in since, the answer's `last_checkin` says so;
    /// otherwise its next check-in sends the session [`crate::protocol::SessionCommand::MachineBack`].
    Await { session: String, since: u64 },
}

/// The answer to a [`MachineRequest`]: the record, or why not.
pub type MachineReply = Result<MachineRecord, String>;

/// The group ID of a machine ID (`pc1.east.sales.acme` → `east.sales.acme`).
pub fn group_of(machine: &str) -> &str {
    machine.split_once('.').map_or("", |(_, g)| g)
}

/// The organisation of a machine ID (its last segment).
pub fn org_of(machine: &str) -> &str {
    machine.rsplit('.').next().unwrap_or("")
}

/// What an operator may see: everything (admins) or some organisations and groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    All,
    /// Organisations (`acme`) and groups (`sales.acme`, including its subgroups).
    Only(Vec<String>),
}

impl Scope {
    /// Whether the machine lies in this scope.
    pub fn covers(&self, machine: &str) -> bool {
        self.covers_group(group_of(machine))
    }

    /// Whether every machine of `group` (and of its subgroups) lies in this scope.
    pub fn covers_group(&self, group: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(grants) => grants.iter().any(|g| {
                !g.is_empty()
                    && (group == g
                        || (group.len() > g.len()
                            && group.ends_with(g.as_str())
                            && group.as_bytes()[group.len() - g.len() - 1] == b'.'))
            }),
        }
    }
}

/// Checks a scope grant: an organisation or group ID (`sales.acme`).
pub fn valid_scope(grant: &str) -> bool {
    !grant.is_empty()
        && grant.len() <= 253
        && grant.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The Machine ID / Group ID filter: `*` matches any run of characters (dots included); a
/// pattern without `*` matches the machine ID itself or any machine ID ending in `.<pattern>`
/// (a group and its subgroups). Case-insensitive; an empty pattern matches everything.
pub fn filter_matches(pattern: &str, machine: &str) -> bool {
    use std::borrow::Cow;
    // Lower-cased only when needed: a list scans every machine with the same (checked,
    // lower-case) pattern, and machine IDs are lower-case.
    fn lower(s: &str) -> Cow<'_, str> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    }
    let pattern = lower(pattern.trim());
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let machine = lower(machine);
    if !pattern.contains('*') {
        let (m, p) = (machine.as_bytes(), pattern.as_bytes());
        return m == p || (m.len() > p.len() && m.ends_with(p) && m[m.len() - p.len() - 1] == b'.');
    }
    glob(pattern.as_bytes(), machine.as_bytes())
}

/// `*`-only glob, iterative with backtracking to the last star (linear in practice).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: u64, f: impl FnOnce(&mut MachineRecord)) -> MachineStatus {
        let mut r = MachineRecord::provisioned("pc1.sales.acme");
        r.last_checkin = Some(1_000_000);
        r.audit_done = true;
        r.interval_secs = 30;
        f(&mut r);
        r.derive_status(now, 3)
    }

    #[test]
    fn every_state_is_reachable() {
        let t = 1_000_000;
        assert_eq!(
            MachineRecord::provisioned("a.b").derive_status(t, 3),
            MachineStatus::NeverCheckedIn
        );
        assert_eq!(
            at(t, |r| r.audit_done = false),
            MachineStatus::WaitingFirstAudit
        );
        assert_eq!(at(t, |_| {}), MachineStatus::Online);
        assert_eq!(at(t, |r| r.user = Some("u".into())), MachineStatus::User);
        assert_eq!(
            at(t, |r| {
                r.user = Some("u".into());
                r.idle_secs = 600
            }),
            MachineStatus::Idle
        );
        assert_eq!(
            at(t + 90_000, |_| {}),
            MachineStatus::Online,
            "3 intervals allowed"
        );
        assert_eq!(at(t + 90_001, |_| {}), MachineStatus::Offline);
        assert_eq!(
            at(t, |r| r.remote_control = false),
            MachineStatus::RemoteDisabled
        );
        assert_eq!(
            at(t + 3 * 3_600_000, |r| r.interval_secs = u64::MAX),
            MachineStatus::Online,
            "an interval counts as at most an hour"
        );
        assert_eq!(
            at(t + 3 * 3_600_000 + 1, |r| r.interval_secs = u64::MAX),
            MachineStatus::Offline,
            "no interval makes a machine online forever"
        );
        assert_eq!(
            at(t + 10_000_000, |r| r.suspended = true),
            MachineStatus::Suspended,
            "suspension beats everything"
        );
    }

    #[test]
    fn a_record_from_before_the_checks_is_bounded() {
        let mut r = MachineRecord::provisioned("pc1.acme");
        r.user = Some(format!("\u{202e}{}", "M".repeat(100_000)));
        r.os = "linux\n".into();
        r.ip = "x".into();
        r.interval_secs = u64::MAX;
        r.idle_secs = u64::MAX;
        let b = r.bounded();
        assert_eq!(b.user, Some("M".repeat(64)));
        assert_eq!((b.os.as_str(), b.ip.as_str()), ("linux ", ""));
        assert_eq!((b.interval_secs, b.idle_secs), (3600, 366 * 24 * 3600));
        let good = MachineRecord::provisioned("pc1.acme");
        assert_eq!(good.clone().bounded(), good, "a good record stays as it is");
    }

    #[test]
    fn groups_orgs_and_scopes() {
        assert_eq!(group_of("pc1.east.sales.acme"), "east.sales.acme");
        assert_eq!(org_of("pc1.east.sales.acme"), "acme");
        let sales = Scope::Only(vec!["sales.acme".into()]);
        assert!(sales.covers("pc1.sales.acme"));
        assert!(
            sales.covers("pc1.east.sales.acme"),
            "a group grants its subgroups"
        );
        assert!(!sales.covers("pc1.support.acme"));
        assert!(
            !sales.covers("pc1.presales.acme"),
            "not a suffix match on text"
        );
        assert!(!sales.covers("pc1.sales.globex"));
        let acme = Scope::Only(vec!["acme".into()]);
        assert!(acme.covers("pc1.east.sales.acme"));
        assert!(!acme.covers("srv.dc.globex"));
        assert!(Scope::All.covers("anything.at.all"));
        assert!(!Scope::Only(vec![]).covers("pc1.sales.acme"));
        assert!(valid_scope("sales.acme") && !valid_scope("Sales") && !valid_scope("a..b"));
    }

    #[test]
    fn the_filter_takes_wildcards_and_groups() {
        assert!(filter_matches("*.sales.*", "pc1.sales.acme"));
        assert!(filter_matches("*.sales.*", "pc1.east.sales.acme"));
        assert!(!filter_matches("*.sales.*", "pc1.support.acme"));
        assert!(filter_matches("pc1.*", "pc1.sales.acme"));
        assert!(filter_matches("*.acme", "pc1.sales.acme"));
        assert!(!filter_matches("*.acme", "srv1.dc.globex"));
        assert!(filter_matches("sales.acme", "pc1.east.sales.acme"));
        assert!(!filter_matches("sales.acme", "pc1.presales.acme"));
        assert!(!filter_matches("cme", "pc1.sales.acme"));
        assert!(filter_matches("sales.acme", "PC1.SALES.ACME"));
        assert!(!filter_matches("pc1.sales.acme.x", "pc1.sales.acme"));
        assert!(filter_matches("PC1.Sales.Acme", "pc1.sales.acme"));
        assert!(filter_matches("", "x.y"));
        assert!(filter_matches("p*1*acme", "pc1.sales.acme"));
        assert!(!filter_matches("p*2*acme", "pc1.sales.acme"));
    }
}
