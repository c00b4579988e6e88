//! The doors of password logins: attempts per client address and per username (keyed GCRA rate
//! limiters), and how many password hashes run at once.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::LimitCounters;

/// Usernames are keyed by at most this many bytes: a limiter key must not grow with the body.
const USERNAME_KEY_BYTES: usize = 64;

/// Login attempts per client address and per username.
pub struct LoginThrottle {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_username: Option<DefaultKeyedRateLimiter<String>>,
}

/// `n` attempts per minute, `n` at once; `None` for 0 (no limit).
fn per_minute(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_minute)
}

impl LoginThrottle {
    pub fn new(per_address: u32, per_username: u32) -> Self {
        LoginThrottle {
            per_address: per_minute(per_address).map(RateLimiter::keyed),
            per_username: per_minute(per_username).map(RateLimiter::keyed),
        }
    }

    /// Counts one attempt from `client` for `username`: `Err(wait)` if either is over its quota.
    /// The username is counted only when the address was let through, so one address cannot
    /// lock others out of an account faster than its own quota allows.
    pub fn check(&self, client: Option<IpAddr>, username: &str) -> Result<(), Duration> {
        let wait = |not_until: governor::NotUntil<_>| {
            not_until.wait_time_from(DefaultClock::default().now())
        };
        if let (Some(limiter), Some(client)) = (&self.per_address, client) {
            limiter.check_key(&client).map_err(wait)?;
        }
        if let Some(limiter) = &self.per_username {
            limiter.check_key(&username_key(username)).map_err(wait)?;
        }
        Ok(())
    }

    /// Forgets keys whose quota is full again; keeps memory bounded by recent attempts.
    pub fn prune(&self) {
        if let Some(l) = &self.per_address {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_username {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Trimmed, lower-case, at most [`USERNAME_KEY_BYTES`].
fn username_key(username: &str) -> String {
    let mut key = username.trim().to_lowercase();
    if key.len() > USERNAME_KEY_BYTES {
        let mut end = USERNAME_KEY_BYTES;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// A cap on password hashes running at once: argon2 takes ≈ 19 MiB and a core per hash, and
/// `spawn_blocking` would otherwise run hundreds side by side.
pub struct HashPermits {
    semaphore: Arc<Semaphore>,
    wait: Duration,
    counters: Arc<LimitCounters>,
}

/// A hash could not start in time: every permit stayed busy.
#[derive(Debug)]
pub struct HashingBusy;

impl HashPermits {
    /// `max` hashes at once (0 = twice the cores); a request waits at most `wait` for one.
    pub fn new(max: usize, wait: Duration, counters: Arc<LimitCounters>) -> Self {
        let max = if max == 0 {
            2 * std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            max
        };
        HashPermits {
            semaphore: Arc::new(Semaphore::new(max)),
            wait,
            counters,
        }
    }

    /// Runs `work` on a blocking thread once a permit is free. The permit goes with the work, so
    /// a client that hangs up does not free it before the hash is done.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashingBusy> {
        let permit = tokio::time::timeout(self.wait, self.semaphore.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        let Some(permit) = permit else {
            self.counters.hashing_busy.fetch_add(1, Ordering::Relaxed);
            return Err(HashingBusy);
        };
        let counters = self.counters.clone();
        let running = counters.hashes_running.fetch_add(1, Ordering::Relaxed) + 1;
        counters.hashes_peak.fetch_max(running, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let out = work();
            counters.hashes_running.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            out
        })
        .await
        .map_err(|_| HashingBusy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_quota_waits_and_others_do_not() {
        let throttle = LoginThrottle::new(3, 100);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        for i in 0..3 {
            assert!(throttle.check(a, &format!("user{i}")).is_ok());
        }
        let wait = throttle.check(a, "user9").expect_err("over the quota");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            throttle
                .check(Some(IpAddr::from([10, 0, 0, 2])), "user9")
                .is_ok()
        );
    }

    #[test]
    fn a_username_over_its_quota_waits_from_any_address() {
        let throttle = LoginThrottle::new(0, 2);
        for last in 1..=2 {
            assert!(
                throttle
                    .check(Some(IpAddr::from([10, 0, 0, last])), "Alice")
                    .is_ok()
            );
        }
        assert!(
            throttle
                .check(Some(IpAddr::from([10, 0, 0, 3])), " alice ")
                .is_err()
        );
        assert!(throttle.check(None, "bob").is_ok());
    }

    #[test]
    fn long_usernames_are_keyed_by_their_start() {
        let long = "é".repeat(100);
        let key = username_key(&long);
        assert!(key.len() <= USERNAME_KEY_BYTES && long.starts_with(&key));
    }

    #[tokio::test]
    async fn no_more_hashes_than_permits_run_at_once() {
        let counters = Arc::new(LimitCounters::default());
        let permits = Arc::new(HashPermits::new(
            2,
            Duration::from_secs(30),
            counters.clone(),
        ));
        let runs = (0..8).map(|_| {
            let permits = permits.clone();
            tokio::spawn(async move {
                permits
                    .run(|| std::thread::sleep(Duration::from_millis(20)))
                    .await
            })
        });
        for run in futures::future::join_all(runs).await {
            assert!(run.unwrap().is_ok());
        }
        assert_eq!(counters.hashes_peak.load(Ordering::Relaxed), 2);
        assert_eq!(counters.hashes_running.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_hash_that_cannot_start_in_time_is_refused_and_counted() {
        let counters = Arc::new(LimitCounters::default());
        let permits = Arc::new(HashPermits::new(
            1,
            Duration::from_millis(10),
            counters.clone(),
        ));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let busy = {
            let permits = permits.clone();
            tokio::spawn(async move { permits.run(move || hold.recv()).await })
        };
        while counters.hashes_running.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(permits.run(|| ()).await.is_err());
        assert_eq!(counters.hashing_busy.load(Ordering::Relaxed), 1);
        release.send(()).unwrap();
        assert!(busy.await.unwrap().is_ok());
    }
}
