//! The Natter broker node.
//!
//! Layout:
//! - [`config`]: `natter.toml` + `NATTER__…` environment overrides, validated.
//! - [`embedded`]: the nats-server child process (embedded default; also used by tests).
//! - [`Node`]: one node: NATS connection, stores, its partition leases, the session supervisor
//!   and fleet actors, and the gateway serving HTTP on a listener. [`run`] is the seam every test and `main` use.
//!
//! NATS is the only fabric between the parts: the gateway reaches the actors through NATS
//! subjects even though both live in this process.

pub mod config;
pub mod embedded;
pub mod logging;

use std::sync::Arc;
use std::time::Duration;

use natter_actors::auth_callout::{Callout, CalloutError};
use natter_actors::enrollment::Enrollment;
use natter_actors::fleet::{
    EnrolledMachines, FleetArgs, FleetConfig, FleetMsg, FleetStats, FleetSupervisor,
};
use natter_actors::partitions::Partitions;
use natter_actors::revoke::Revoker;
use natter_actors::session::{SessionContext, SessionSupervisor, SupervisorMsg};
use natter_actors::store::{StoreConfig, Stores};
use natter_gateway::metrics::{NodeProbe, NodeReadings};
use natter_gateway::{Gateway, GatewayConfig};
use ractor::{Actor, ActorRef, SpawnErr};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("no NATS URL configured (nats.url)")]
    NoNatsUrl,
    #[error(transparent)]
    Store(#[from] natter_actors::store::StoreError),
    #[error("following the partition leases: {0}")]
    Partitions(#[source] async_nats::jetstream::kv::WatchError),
    #[error("starting the session supervisor: {0}")]
    Sessions(#[source] SpawnErr),
    #[error("starting the fleet supervisor: {0}")]
    Fleet(#[source] SpawnErr),
    #[error("opening the enrollment store: {0}")]
    Enrollment(#[from] natter_actors::enrollment::EnrollError),
    #[error("starting the auth callout: {0}")]
    Callout(#[from] CalloutError),
    #[error("starting the revoker: {0}")]
    Revoke(#[from] natter_actors::revoke::RevokeError),
    #[error("starting the start service: {0}")]
    StartService(#[source] async_nats::SubscribeError),
}

/// How long a starting node retries creating its stream and buckets.
const JETSTREAM_SETTLE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds or [`JETSTREAM_SETTLE`] has passed. A NATS cluster that has
/// just (re)started answers JetStream requests with timeouts until it has elected its meta
/// leader, and nodes started together with it would otherwise exit at once.
async fn while_jetstream_settles<T, E, F, Fut>(what: &str, mut attempt: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + JETSTREAM_SETTLE;
    let mut pause = Duration::from_millis(250);
    loop {
        match Box::pin(attempt()).await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, "opening {what} failed; JetStream may be electing leaders, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The store settings a configuration implies.
pub fn store_config(config: &Config) -> StoreConfig {
    StoreConfig {
        retention: config.chat.retention,
        duplicate_window: config.chat.duplicate_window,
        session_ttl: config.chat.session_ttl,
        login_ttl: config.http.login_ttl,
        replicas: config.nats.replicas,
        link_ttl: config.chat.link_ttl,
    }
}

/// Options every node connection shares: TLS with the configured CA, if any.
fn connect_options(config: &Config) -> async_nats::ConnectOptions {
    let opts = async_nats::ConnectOptions::new();
    match &config.nats.tls_ca {
        Some(ca) => opts.require_tls(true).add_root_certificates(ca.clone()),
        None => opts,
    }
}

/// Connects to the configured NATS server as the broker.
pub async fn connect(config: &Config) -> Result<async_nats::Client, NodeError> {
    if config.nats.url.is_empty() {
        return Err(NodeError::NoNatsUrl);
    }
    let mut opts = connect_options(config).name("natter-node");
    let password = config.nats_password();
    if !config.nats.user.is_empty() {
        opts = opts.user_and_password(config.nats.user.clone(), password);
    }
    opts.connect(config.nats.servers())
        .await
        .map_err(|source| NodeError::Connect {
            url: config.nats.url.clone(),
            source,
        })
}

/// The system-account user a node cuts off revoked agents with (`nats.conf`).
pub const SYSTEM_USER: &str = "natter-system";

/// Connects as the system-account user, if its password is configured.
async fn connect_system(config: &Config) -> Result<Option<async_nats::Client>, NodeError> {
    let password = config.system_password();
    if password.is_empty() {
        tracing::warn!(
            "no nats.system_password: a suspended agent is cut off only at its next connect"
        );
        return Ok(None);
    }
    connect_options(config)
        .name("natter-node system")
        .user_and_password(SYSTEM_USER.into(), password)
        .connect(config.nats.servers())
        .await
        .map(Some)
        .map_err(|source| NodeError::Connect {
            url: config.nats.url.clone(),
            source,
        })
}

/// Starts the auth callout (agents log in through it) and the revoker; either is `None` when
/// its key or password is not configured.
async fn start_agent_auth(
    config: &Config,
    client: &async_nats::Client,
    stores: &Stores,
    enrollment: &Enrollment,
) -> Result<Vec<tokio::task::JoinHandle<()>>, NodeError> {
    let mut tasks = Vec::new();
    let callout_seed = config.callout_seed();
    if callout_seed.is_empty() {
        tracing::warn!("no auth callout seed (nats.callout_seed): agents cannot connect");
    } else {
        let service = Callout::new(&callout_seed, enrollment.clone(), stores.machines.clone())?;
        tasks.push(service.start(client.clone()).await?);
    }
    if let Some(system) = connect_system(config).await? {
        let revoker = Revoker {
            broker: client.clone(),
            system,
        };
        tasks.push(revoker.start().await?);
    }
    Ok(tasks)
}

/// How long each shutdown step may take beyond its own timeouts.
const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

/// How long a starting node waits for every partition to have an owner (itself alone: all 32
/// within its first ticks) before it reports ready anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A running node.
pub struct Node {
    shutdown: CancellationToken,
    drain_timeout: Duration,
    /// The auth callout, the revoker and the start service.
    agent_auth: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    supervisor: ActorRef<SupervisorMsg>,
    fleet: ActorRef<FleetMsg>,
    client: async_nats::Client,
    /// The partitions this node owns (leases in KV).
    pub partitions: Partitions,
    pub fleet_stats: Arc<FleetStats>,
    /// The gateway's limits and their refusal counters.
    pub gateway_limits: Arc<natter_gateway::limits::Limits>,
    pub stores: Stores,
    pub enrollment: Enrollment,
    /// This node's id (`node.id`), in its logs and metrics.
    pub node_id: String,
}

impl Node {
    /// Connects, sets up the stores, starts the actors and serves HTTP on `listener`.
    /// Returns once the node is ready.
    pub async fn start(listener: TcpListener, config: &Config) -> Result<Node, NodeError> {
        let client = connect(config).await?;
        let stores = Box::pin(while_jetstream_settles("the stores", || {
            Stores::ensure(client.clone(), store_config(config))
        }))
        .await?;
        let partitions = Box::pin(Partitions::start(
            &config.node.id,
            stores.partitions.clone(),
        ))
        .await
        .map_err(NodeError::Partitions)?;
        let supervisor = start_sessions(&stores, &partitions, config).await?;
        // Boxed: these futures are large, and Node::start runs inside tests' futures on a
        // thread's default stack.
        let enrollment = Box::pin(while_jetstream_settles("the enrollment store", || {
            Enrollment::ensure_replicated(client.clone(), config.nats.replicas)
        }))
        .await?;
        let fleet_stats = Arc::new(FleetStats::default());
        let enrolled = EnrolledMachines::follow(enrollment.agent_keys().clone());
        let fleet = start_fleet(
            &client,
            &stores,
            &partitions,
            fleet_stats.clone(),
            enrolled,
            config,
        )
        .await?;
        let mut agent_auth =
            Box::pin(start_agent_auth(config, &client, &stores, &enrollment)).await?;
        let start_service = natter_actors::start::StartService {
            stores: stores.clone(),
            agent_keys: enrollment.agent_keys().clone(),
            public_url: config.http.public_url.clone(),
            link_ttl: config.chat.link_ttl,
        };
        agent_auth.push(
            start_service
                .start(client.clone())
                .await
                .map_err(NodeError::StartService)?,
        );
        // A lone node takes every partition within its first ticks; a joining one finds them
        // held by the others (it takes its share over the next seconds).
        if !partitions.settle(SETTLE_TIMEOUT).await {
            tracing::warn!("some partitions have no live owner yet");
        }
        // The actors' subscriptions must be known to the server before we report ready.
        let _ = client.flush().await;
        let shutdown = CancellationToken::new();
        let gateway = Box::pin(start_gateway(config, shutdown.clone())).await?;
        let probe = node_probe(&client, &partitions, &supervisor, &fleet, &fleet_stats);
        gateway.metrics().set_node_probe(probe);
        let gateway_limits = gateway.limits().clone();
        let server = tokio::spawn(natter_gateway::serve(listener, gateway));
        Ok(Node {
            shutdown,
            drain_timeout: config.http.drain_timeout,
            agent_auth,
            server,
            supervisor,
            fleet,
            client,
            partitions,
            fleet_stats,
            gateway_limits,
            stores,
            enrollment,
            node_id: config.node.id.clone(),
        })
    }

    /// Hands every partition over (other nodes take them at once), stops accepting, drains
    /// connections, stops the actors and flushes NATS.
    ///
    /// Every step has a deadline: with NATS gone, actors and flushes would wait forever.
    pub async fn shutdown(self) {
        if tokio::time::timeout(SHUTDOWN_STEP, self.partitions.release_all())
            .await
            .is_err()
        {
            tracing::warn!("could not hand the partitions over in time; they lapse by themselves");
        }
        self.shutdown.cancel();
        // The gateway ends its streams itself within `http.drain_timeout`.
        let mut server = self.server;
        if tokio::time::timeout(self.drain_timeout + SHUTDOWN_STEP, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("the HTTP server did not drain in time; cutting it off");
            server.abort();
        }
        if let Err(e) = self
            .supervisor
            .stop_and_wait(None, Some(SHUTDOWN_STEP))
            .await
        {
            tracing::warn!(error = %e, "session actors did not stop in time");
        }
        if let Err(e) = self.fleet.stop_and_wait(None, Some(SHUTDOWN_STEP)).await {
            tracing::warn!(error = %e, "agent actors did not stop in time");
        }
        for task in self.agent_auth {
            task.abort();
        }
        if tokio::time::timeout(SHUTDOWN_STEP, self.client.flush())
            .await
            .is_err()
        {
            tracing::warn!("NATS did not take the last writes in time");
        }
    }
}

impl Node {
    /// How many agent actors run now (machines with something going on; the others are records).
    pub fn agent_actors(&self) -> usize {
        self.fleet.get_children().len()
    }

    /// Dies as a crashed node would (tests): stops renewing its leases without releasing them,
    /// stops its actors and HTTP server and closes its actors' NATS connection. Other nodes take
    /// its partitions once the leases lapse.
    pub async fn kill_for_test(self) {
        self.partitions.abandon();
        self.shutdown.cancel();
        self.server.abort();
        for task in self.agent_auth {
            task.abort();
        }
        self.supervisor.kill();
        self.fleet.kill();
        let _ = self.client.drain().await;
    }
}

async fn start_sessions(
    stores: &Stores,
    partitions: &Partitions,
    config: &Config,
) -> Result<ActorRef<SupervisorMsg>, NodeError> {
    let ctx = Arc::new(SessionContext {
        stores: stores.clone(),
        partitions: partitions.clone(),
        public_url: config.http.public_url.clone(),
        max_message_bytes: config.chat.max_message_bytes,
        idle_timeout: config.chat.idle_actor_timeout,
        agent_timeout: config.chat.agent_timeout,
        link_ttl: config.chat.link_ttl,
    });
    let (supervisor, _) = Actor::spawn(None, SessionSupervisor, ctx)
        .await
        .map_err(NodeError::Sessions)?;
    Ok(supervisor)
}

async fn start_fleet(
    client: &async_nats::Client,
    stores: &Stores,
    partitions: &Partitions,
    stats: Arc<FleetStats>,
    enrolled: EnrolledMachines,
    config: &Config,
) -> Result<ActorRef<FleetMsg>, NodeError> {
    let args = FleetArgs {
        client: client.clone(),
        partitions: partitions.clone(),
        machines: stores.machines.clone(),
        stats,
        config: FleetConfig {
            offline_after: config.fleet.offline_after,
            refresh: config.fleet.refresh,
            sweep: config.fleet.sweep,
            rest_after: config.fleet.rest_after,
        },
        enrolled,
    };
    let (fleet, _) = Actor::spawn(None, FleetSupervisor, args)
        .await
        .map_err(NodeError::Fleet)?;
    Ok(fleet)
}

/// The gateway, on a NATS connection of its own: one async-nats connection is served by one
/// task, and under load the actors' and the gateway's traffic then use both cores.
async fn start_gateway(config: &Config, shutdown: CancellationToken) -> Result<Gateway, NodeError> {
    let client = connect(config).await?;
    let stores = while_jetstream_settles("the gateway's stores", || {
        Stores::ensure(client.clone(), store_config(config))
    })
    .await?;
    let gateway_config = GatewayConfig {
        request_timeout: config.http.request_timeout,
        login_ttl: config.http.login_ttl,
        secure_cookies: config.http.secure_cookies,
        drain_timeout: config.http.drain_timeout,
        public_origin: natter_gateway::origin::PublicOrigin::parse(&config.http.public_url),
        limits: config.limits.clone(),
        node_id: config.node.id.clone(),
        metrics_token: config.metrics.token.clone(),
        history_cache_bytes: (config.http.history_cache_mib as usize) << 20,
    };
    Ok(Gateway::start(stores, gateway_config, shutdown).await?)
}

/// What the gateway's metrics and readiness read from the rest of the node: the actors running
/// here, the check-in counters and the actors' NATS connection.
fn node_probe(
    client: &async_nats::Client,
    partitions: &Partitions,
    sessions: &ActorRef<SupervisorMsg>,
    fleet: &ActorRef<FleetMsg>,
    stats: &Arc<FleetStats>,
) -> NodeProbe {
    let (client, partitions, sessions, fleet, stats) = (
        client.clone(),
        partitions.clone(),
        sessions.clone(),
        fleet.clone(),
        stats.clone(),
    );
    let read =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    Box::new(move || NodeReadings {
        session_actors: sessions.get_children().len(),
        agent_actors: fleet.get_children().len(),
        checkins_accepted: read(&stats.accepted),
        checkins_rejected: read(&stats.rejected),
        checkins_ignored: read(&stats.ignored),
        machine_writes: read(&stats.writes),
        actors_connected: client.connection_state() == async_nats::connection::State::Connected,
        partitions_owned: partitions.count(),
        partitions_all_held: partitions.all_held(),
    })
}

/// Runs a node on `listener` until `shutdown` completes, then shuts it down cleanly.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = Node::start(listener, config).await?;
    tracing::info!(url = %config.http.public_url, "natter is ready");
    shutdown.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
