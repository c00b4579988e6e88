//! A simulated fleet: N agents running the real agent code ([`crate::run_on_family`]), sharing a
//! few NATS connections, with users logging on and off, going idle, and the odd machine waiting
//! for its first audit or with remote control disabled. It logs in as the `natter-simulator`
//! NATS user and uses the simulator's own subject family (`natter.simagent.<machine>.…`), which
//! reaches no real machine: the fleet counts its check-ins only for machines no real agent
//! enrolled, and sends commands there only for those.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{AgentConfig, AgentError, AgentHandle, Opener, Presence, PrintOpener, SubjectFamily};

/// How to simulate.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub nats_url: String,
    /// CA (PEM) to trust for TLS, as [`AgentConfig::nats_ca`].
    pub nats_ca: Option<std::path::PathBuf>,
    pub nats_user: String,
    pub nats_password: String,
    pub agents: usize,
    pub interval: Duration,
    /// Agents per NATS connection.
    pub per_connection: usize,
}

const ORGS: [&str; 3] = ["acme", "globex", "initech"];
const GROUPS: [&str; 4] = ["sales", "support", "dc", "east.sales"];
const USERS: [&str; 8] = ["ana", "ben", "cleo", "dev", "eli", "fay", "gus", "hana"];

/// The machine ID of simulated agent `i`.
pub fn machine_id(i: usize) -> String {
    format!(
        "sim{i:06}.{}.{}",
        GROUPS[i % GROUPS.len()],
        ORGS[(i / GROUPS.len()) % ORGS.len()]
    )
}

fn random_presence(i: usize) -> Presence {
    let roll = rand::random::<u32>() % 100;
    let user = Some(USERS[i % USERS.len()].to_string());
    match roll {
        0..=29 => Presence::user(None),
        30..=39 => Presence {
            idle_secs: 600 + u64::from(roll) * 10,
            ..Presence::user(user.as_deref())
        },
        40..=41 => Presence {
            audit_done: false,
            ..Presence::user(None)
        },
        42..=43 => Presence {
            remote_control: false,
            ..Presence::user(user.as_deref())
        },
        _ => Presence::user(user.as_deref()),
    }
}

/// Runs the fleet until `shutdown`.
pub async fn simulate(sim: Simulation, shutdown: CancellationToken) -> Result<(), AgentError> {
    let opener: Arc<dyn Opener> = Arc::new(PrintOpener);
    let per_connection = sim.per_connection.max(1);
    let mut handles = Vec::with_capacity(sim.agents);
    let mut tasks = tokio::task::JoinSet::new();
    let mut client = None;
    for i in 0..sim.agents {
        let config = AgentConfig {
            nats_url: sim.nats_url.clone(),
            nats_ca: sim.nats_ca.clone(),
            nats_user: sim.nats_user.clone(),
            nats_password: sim.nats_password.clone(),
            nkey_seed: None,
            machine: machine_id(i),
            interval: sim.interval,
            os: "simulated".into(),
            ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        };
        if i % per_connection == 0 {
            // Retried until it succeeds, like a real agent's; a stop request ends the wait.
            match crate::connect(&config, &format!("natter-simulator {i}"), &shutdown).await? {
                Some(c) => client = Some(c),
                None => break,
            }
        }
        let handle = AgentHandle::new(random_presence(i));
        handles.push(handle.clone());
        let client = client.clone().expect("a connection exists");
        let (opener, shutdown) = (opener.clone(), shutdown.clone());
        tasks.spawn(async move {
            // Spread the first check-ins over one interval, as a real fleet's are.
            let delay = sim.interval.mul_f64(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            let family = SubjectFamily::Simulated;
            let run = crate::run_on_family(client, config, handle, opener, shutdown, family);
            if let Err(e) = run.await {
                tracing::warn!(error = %e, "simulated agent stopped");
            }
        });
    }
    tracing::info!(agents = sim.agents, "simulated fleet running");
    // People come and go: each second, ~1/30 of the machines change who is logged on.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let changes = (handles.len() / 30).max(1);
                for _ in 0..changes {
                    let i = rand::random::<u64>() as usize % handles.len().max(1);
                    if let Some(h) = handles.get(i) {
                        h.set_presence(random_presence(i));
                    }
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn simulated_ids_are_machine_ids_across_orgs_and_groups() {
        let ids: Vec<String> = (0..24).map(super::machine_id).collect();
        assert!(
            ids.iter()
                .all(|m| natter_actors::protocol::valid_machine_id(m))
        );
        assert!(ids.iter().any(|m| m.ends_with(".east.sales.globex")));
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            24
        );
    }
}
