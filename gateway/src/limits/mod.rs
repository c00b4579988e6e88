//! Limits on every door: login attempts, password hashes at once, connections (in all and per
//! client address), event streams per login. Each refusal is counted ([`LimitStats`]).
//!
//! The client address is the TCP peer's: behind a reverse proxy every client has the proxy's
//! address, so the per-address limits then apply to the proxy as a whole (raise them there).

mod login;
mod slots;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::error::{ApiError, ErrorKind};
pub use login::{HashPermits, HashingBusy, LoginThrottle};
pub use slots::{Slot, Slots};

/// The limits' settings (`[limits]` in natter.toml). A count of 0 means no limit.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Password login attempts per minute from one client address (also the burst).
    pub logins_per_address: u32,
    /// Password login attempts per minute for one username, from any address.
    pub logins_per_username: u32,
    /// Password hashes running at once; 0 = twice the cores.
    pub concurrent_hashes: usize,
    /// How long a login waits for a free hash before it is answered 503.
    pub hash_wait: Duration,
    /// Time to send a request's headers; also how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Open connections in all. The default holds the 19k idle event streams a node is sized
    /// for and stays below a 20k open-files limit, so the cap refuses cleanly
    /// before `accept` runs out of file descriptors.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub connections_per_address: usize,
    /// Open event streams (session and machine streams together) per operator login.
    pub streams_per_operator_login: usize,
    /// Open event streams per machine-user login.
    pub streams_per_machine_user_login: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            logins_per_address: 20,
            logins_per_username: 10,
            concurrent_hashes: 0,
            hash_wait: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 19_500,
            connections_per_address: 256,
            streams_per_operator_login: 8,
            streams_per_machine_user_login: 4,
        }
    }
}

/// How often the login limiters forget addresses and names whose quota is full again.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Refusals and timeouts so far, one counter per kind, plus the hashing gauge.
#[derive(Default, Debug)]
pub struct LimitCounters {
    pub logins_throttled: AtomicU64,
    pub hashing_busy: AtomicU64,
    pub hashes_running: AtomicU64,
    pub hashes_peak: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_refused_per_address: AtomicU64,
    pub connection_timeouts: AtomicU64,
    pub body_timeouts: AtomicU64,
    pub streams_refused: AtomicU64,
    pub hosts_refused: AtomicU64,
}

/// A snapshot of [`LimitCounters`] (logged at shutdown; read by tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LimitStats {
    /// Logins answered 429 (per-address or per-username quota).
    pub logins_throttled: u64,
    /// Logins answered 503 because no hash could start in time.
    pub hashing_busy: u64,
    /// Hashes running now.
    pub hashes_running: u64,
    /// Most hashes that ever ran at once.
    pub hashes_peak: u64,
    /// Connections closed at accept: the total cap was reached.
    pub connections_refused: u64,
    /// Connections closed at accept: their address's cap was reached.
    pub connections_refused_per_address: u64,
    /// Connections closed because headers did not arrive in time (or a keep-alive idled out).
    pub connection_timeouts: u64,
    /// Requests answered 408 because the body did not arrive in time.
    pub body_timeouts: u64,
    /// Event streams answered 429: the login had its cap open.
    pub streams_refused: u64,
    /// Requests answered 400 because their Host is not `public_url`'s.
    pub hosts_refused: u64,
}

impl LimitCounters {
    pub fn snapshot(&self) -> LimitStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LimitStats {
            logins_throttled: get(&self.logins_throttled),
            hashing_busy: get(&self.hashing_busy),
            hashes_running: get(&self.hashes_running),
            hashes_peak: get(&self.hashes_peak),
            connections_refused: get(&self.connections_refused),
            connections_refused_per_address: get(&self.connections_refused_per_address),
            connection_timeouts: get(&self.connection_timeouts),
            body_timeouts: get(&self.body_timeouts),
            streams_refused: get(&self.streams_refused),
            hosts_refused: get(&self.hosts_refused),
        }
    }
}

impl From<HashingBusy> for ApiError {
    fn from(_: HashingBusy) -> Self {
        ApiError::unavailable("too many logins at once; try again in a moment")
            .retry_after(Duration::from_secs(1))
    }
}

/// Counts one more of `counter`.
pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The key a client address is limited by: an IPv6 client usually holds a whole /64, so that is
/// one client.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
        v4 => v4,
    }
}

/// The client address of a request (set by the server on every request it serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// A connection's slots, in all and for its address: held while it is open.
pub struct ConnectionSlot {
    _total: Slot<()>,
    _address: Slot<IpAddr>,
}

/// Every limit of one gateway with its state and counters.
pub struct Limits {
    pub config: LimitsConfig,
    pub counters: Arc<LimitCounters>,
    pub logins: LoginThrottle,
    pub hashes: HashPermits,
    connections: Slots<()>,
    connections_by_address: Slots<IpAddr>,
    streams: Slots<String>,
}

/// Which kind of login holds an event stream (each has its own cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOwner {
    Operator,
    MachineUser,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        let counters = Arc::new(LimitCounters::default());
        Limits {
            logins: LoginThrottle::new(config.logins_per_address, config.logins_per_username),
            hashes: HashPermits::new(config.concurrent_hashes, config.hash_wait, counters.clone()),
            counters,
            connections: Slots::default(),
            connections_by_address: Slots::default(),
            streams: Slots::default(),
            config,
        }
    }

    pub fn stats(&self) -> LimitStats {
        self.counters.snapshot()
    }

    /// Counts a password login attempt: 429 with `Retry-After` when over a quota.
    pub fn check_login(&self, client: Option<IpAddr>, username: &str) -> Result<(), ApiError> {
        self.logins
            .check(client.map(client_key), username)
            .map_err(|wait| {
                count(&self.counters.logins_throttled);
                ApiError::new(
                    ErrorKind::RateLimited,
                    "too many login attempts; wait and try again",
                )
                .retry_after(wait)
            })
    }

    /// A slot for a new connection from `ip`, or `None` (counted) when a cap is reached.
    pub fn admit_connection(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let Some(total) = self.connections.take(&(), self.config.max_connections) else {
            count(&self.counters.connections_refused);
            return None;
        };
        let key = client_key(ip);
        let Some(address) = self
            .connections_by_address
            .take(&key, self.config.connections_per_address)
        else {
            count(&self.counters.connections_refused_per_address);
            return None;
        };
        Some(ConnectionSlot {
            _total: total,
            _address: address,
        })
    }

    /// A slot for one more event stream of the login `login_key`, or 429 when it has its cap open.
    pub fn open_stream(
        &self,
        login_key: &str,
        owner: StreamOwner,
    ) -> Result<Slot<String>, ApiError> {
        let max = match owner {
            StreamOwner::Operator => self.config.streams_per_operator_login,
            StreamOwner::MachineUser => self.config.streams_per_machine_user_login,
        };
        self.streams
            .take(&login_key.to_string(), max)
            .ok_or_else(|| {
                count(&self.counters.streams_refused);
                ApiError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "this login has {max} event streams open already (the most allowed); \
                     close a window or tab of Natter"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all() {
        let limits = Limits::new(LimitsConfig {
            max_connections: 3,
            connections_per_address: 2,
            ..Default::default()
        });
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let a1 = limits.admit_connection(a).expect("a1");
        let _a2 = limits.admit_connection(a).expect("a2");
        assert!(limits.admit_connection(a).is_none());
        let _b1 = limits.admit_connection(b).expect("b1");
        assert!(limits.admit_connection(b).is_none(), "the total cap");
        drop(a1);
        assert!(limits.admit_connection(a).is_some());
        let stats = limits.stats();
        assert_eq!(
            (
                stats.connections_refused,
                stats.connections_refused_per_address
            ),
            (1, 1)
        );
    }

    #[test]
    fn each_login_kind_has_its_stream_cap() {
        let limits = Limits::new(LimitsConfig {
            streams_per_operator_login: 2,
            streams_per_machine_user_login: 1,
            ..Default::default()
        });
        let _m = limits.open_stream("mu", StreamOwner::MachineUser).unwrap();
        match limits.open_stream("mu", StreamOwner::MachineUser) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::RateLimited),
            Ok(_) => panic!("over the cap"),
        }
        let _o1 = limits.open_stream("op", StreamOwner::Operator).unwrap();
        let _o2 = limits.open_stream("op", StreamOwner::Operator).unwrap();
        assert!(limits.open_stream("op", StreamOwner::Operator).is_err());
        assert_eq!(limits.stats().streams_refused, 2);
    }
}
