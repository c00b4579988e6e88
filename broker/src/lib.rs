//! The Natter broker node.
//!
//! Layout:
//! - [`config`]: `natter.toml` + `NATTER__…` environment overrides, validated.
//! - [`embedded`]: the nats-server child process (embedded default; also used by tests).
//! - [`Node`]: one node: NATS connection, stores, the session supervisor and fleet actors, and
//!   the gateway serving HTTP on a listener. [`run`] is the seam every test and `main` use.
//!
//! NATS is the only fabric between the parts: the gateway reaches the actors through NATS
//! subjects even though both live in this process.

pub mod config;
pub mod embedded;

use std::sync::Arc;

use natter_actors::auth_callout::{Callout, CalloutError};
use natter_actors::fleet::{FleetArgs, FleetConfig, FleetMsg, FleetStats, FleetSupervisor};
use natter_actors::session::{SessionContext, SessionSupervisor, SupervisorMsg};
use natter_actors::store::{StoreConfig, Stores};
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
    #[error("starting the session supervisor: {0}")]
    Sessions(#[source] SpawnErr),
    #[error("starting the fleet supervisor: {0}")]
    Fleet(#[source] SpawnErr),
    #[error("starting the auth callout: {0}")]
    Callout(#[from] CalloutError),
}

/// The store settings a configuration implies.
pub fn store_config(config: &Config) -> StoreConfig {
    StoreConfig {
        retention: config.chat.retention,
        duplicate_window: config.chat.duplicate_window,
        session_ttl: config.chat.session_ttl,
        login_ttl: config.http.login_ttl,
    }
}

/// Connects to the configured NATS server as the broker.
pub async fn connect(config: &Config) -> Result<async_nats::Client, NodeError> {
    if config.nats.url.is_empty() {
        return Err(NodeError::NoNatsUrl);
    }
    let mut opts = async_nats::ConnectOptions::new().name("natter-node");
    let password = config.nats_password();
    if !config.nats.user.is_empty() {
        opts = opts.user_and_password(config.nats.user.clone(), password);
    }
    opts.connect(&config.nats.url)
        .await
        .map_err(|source| NodeError::Connect {
            url: config.nats.url.clone(),
            source,
        })
}

/// A running node.
pub struct Node {
    shutdown: CancellationToken,
    callout: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    supervisor: ActorRef<SupervisorMsg>,
    fleet: ActorRef<FleetMsg>,
    client: async_nats::Client,
    pub fleet_stats: Arc<FleetStats>,
    pub stores: Stores,
}

impl Node {
    /// Connects, sets up the stores, starts the actors and serves HTTP on `listener`.
    /// Returns once the node is ready.
    pub async fn start(listener: TcpListener, config: &Config) -> Result<Node, NodeError> {
        let client = connect(config).await?;
        let stores = Stores::ensure(client.clone(), store_config(config)).await?;
        let supervisor = start_sessions(&stores, config).await?;
        let fleet_stats = Arc::new(FleetStats::default());
        let fleet = start_fleet(&client, &stores, fleet_stats.clone(), config).await?;
        let callout = start_callout(&client, config).await?;
        // The actors' subscriptions must be known to the server before we report ready.
        let _ = client.flush().await;
        let shutdown = CancellationToken::new();
        let gateway = start_gateway(config, shutdown.clone()).await?;
        let server = tokio::spawn(natter_gateway::serve(listener, gateway));
        Ok(Node {
            shutdown,
            callout,
            server,
            supervisor,
            fleet,
            client,
            fleet_stats,
            stores,
        })
    }

    /// Stops accepting, drains connections, stops the actors and flushes NATS.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        let _ = self.supervisor.stop_and_wait(None, None).await;
        let _ = self.fleet.stop_and_wait(None, None).await;
        if let Some(c) = self.callout {
            c.abort();
        }
        let _ = self.client.flush().await;
    }
}

async fn start_sessions(
    stores: &Stores,
    config: &Config,
) -> Result<ActorRef<SupervisorMsg>, NodeError> {
    let ctx = Arc::new(SessionContext {
        stores: stores.clone(),
        public_url: config.http.public_url.clone(),
        max_message_bytes: config.chat.max_message_bytes,
        idle_timeout: config.chat.idle_actor_timeout,
        agent_timeout: config.chat.agent_timeout,
    });
    let (supervisor, _) = Actor::spawn(None, SessionSupervisor, ctx)
        .await
        .map_err(NodeError::Sessions)?;
    Ok(supervisor)
}

async fn start_fleet(
    client: &async_nats::Client,
    stores: &Stores,
    stats: Arc<FleetStats>,
    config: &Config,
) -> Result<ActorRef<FleetMsg>, NodeError> {
    let args = FleetArgs {
        client: client.clone(),
        machines: stores.machines.clone(),
        stats,
        config: FleetConfig {
            offline_after: config.fleet.offline_after,
            refresh: config.fleet.refresh,
            sweep: config.fleet.sweep,
        },
    };
    let (fleet, _) = Actor::spawn(None, FleetSupervisor, args)
        .await
        .map_err(NodeError::Fleet)?;
    Ok(fleet)
}

/// Starts answering nats-server's auth callout for agents, if a seed is configured.
async fn start_callout(
    client: &async_nats::Client,
    config: &Config,
) -> Result<Option<tokio::task::JoinHandle<()>>, NodeError> {
    let seed = config.callout_seed();
    if seed.is_empty() {
        tracing::warn!("no auth callout seed (nats.callout_seed): agents cannot connect");
        return Ok(None);
    }
    let service = Callout::new(&seed, &config.agent_password())?;
    Ok(Some(service.start(client.clone()).await?))
}

/// The gateway, on a NATS connection of its own: one async-nats connection is served by one
/// task, and under load the actors' and the gateway's traffic then use both cores.
async fn start_gateway(config: &Config, shutdown: CancellationToken) -> Result<Gateway, NodeError> {
    let stores = Stores::ensure(connect(config).await?, store_config(config)).await?;
    let gateway_config = GatewayConfig {
        request_timeout: config.http.request_timeout,
        login_ttl: config.http.login_ttl,
        secure_cookies: config.http.secure_cookies,
        drain_timeout: config.http.drain_timeout,
    };
    Ok(Gateway::start(stores, gateway_config, shutdown).await?)
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
