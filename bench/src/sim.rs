//! `natter-bench simulate`: one of several simulator processes of the `cost-agents` phase.
//!
//! The same as `natter-agent --simulate` (the agent crate's protocol code, `run_on_family` on
//! the simulator's subjects, 1000 agents per NATS connection, first check-ins spread over one
//! interval, ~1/30 of the machines changing presence every second), except that it simulates
//! agents `first .. first + count`, so several processes make one fleet of distinct machines
//! (`natter-agent --simulate N` always simulates agents 0 .. N).

use std::sync::Arc;
use std::time::Duration;

use natter::embedded::ServerSecrets;
use natter_agent::{AgentConfig, AgentHandle, Opener, Presence, PrintOpener, SubjectFamily};
use tokio_util::sync::CancellationToken;

use crate::procs::BoxError;

/// What `natter-bench simulate` is told to do.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[arg(long)]
    pub nats_url: String,
    /// The first agent's index (machine `sim<index>.…`, as `natter-agent --simulate` names them).
    #[arg(long)]
    pub first: usize,
    /// How many agents.
    #[arg(long)]
    pub count: usize,
    /// Check-in interval, seconds.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
}

/// Agents per NATS connection, as `natter-agent --simulate`.
const PER_CONNECTION: usize = 1000;

/// Runs the agents until stdin closes; prints `READY` once every connection is made.
pub async fn simulate(args: SimArgs) -> Result<(), BoxError> {
    let password = std::env::var(ServerSecrets::SIMULATOR_PASSWORD_VAR)?;
    let interval = Duration::from_secs(args.interval);
    let shutdown = CancellationToken::new();
    let opener: Arc<dyn Opener> = Arc::new(PrintOpener);
    let mut rng = Rng::seeded(args.first as u64);
    let mut handles = Vec::with_capacity(args.count);
    let mut tasks = tokio::task::JoinSet::new();
    let mut client = None;
    for k in 0..args.count {
        let i = args.first + k;
        let config = AgentConfig {
            nats_url: args.nats_url.clone(),
            nats_ca: None,
            nats_user: "natter-simulator".into(),
            nats_password: password.clone(),
            nkey_seed: None,
            machine: natter_agent::simulate::machine_id(i),
            interval,
            os: "simulated".into(),
            ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        };
        if k % PER_CONNECTION == 0 {
            match natter_agent::connect(&config, &format!("natter-simulator {i}"), &shutdown)
                .await?
            {
                Some(c) => client = Some(c),
                None => break,
            }
        }
        let handle = AgentHandle::new(rng.presence(i));
        handles.push(handle.clone());
        let client = client.clone().ok_or("no connection")?;
        let (opener, shutdown) = (opener.clone(), shutdown.clone());
        let delay = interval.mul_f64(rng.unit());
        tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            let run = natter_agent::run_on_family(
                client,
                config,
                handle,
                opener,
                shutdown,
                SubjectFamily::Simulated,
            );
            if let Err(e) = run.await {
                eprintln!("simulated agent stopped: {e}");
            }
        });
    }
    println!("READY");
    let stdin = crate::modes::stdin_closed();
    tokio::pin!(stdin);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for _ in 0..(handles.len() / 30).max(1) {
                    let k = rng.below(handles.len().max(1));
                    if let Some(h) = handles.get(k) {
                        h.set_presence(rng.presence(args.first + k));
                    }
                }
            }
            _ = &mut stdin => break,
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// A small xorshift generator: the mix of presences needs no better (and the bench has no
/// `rand` of its own).
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((t ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The simulator's mix (`natter_agent::simulate`): 30% nobody logged on, 10% idle, 2%
    /// waiting for the first audit, 2% remote control disabled, the rest a user at work.
    fn presence(&mut self, i: usize) -> Presence {
        const USERS: [&str; 8] = ["ana", "ben", "cleo", "dev", "eli", "fay", "gus", "hana"];
        let roll = self.below(100) as u64;
        let user = Some(USERS[i % USERS.len()]);
        match roll {
            0..=29 => Presence::user(None),
            30..=39 => Presence {
                idle_secs: 600 + roll * 10,
                ..Presence::user(user)
            },
            40..=41 => Presence {
                audit_done: false,
                ..Presence::user(None)
            },
            42..=43 => Presence {
                remote_control: false,
                ..Presence::user(user)
            },
            _ => Presence::user(user),
        }
    }
}
