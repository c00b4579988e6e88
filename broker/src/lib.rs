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

use natter_actors::fleet::{FleetArgs, FleetConfig, FleetMsg, FleetStats, FleetSupervisor};
use natter_actors::session::SessionContext;
use natter_actors::sessions::{SessionSupervisor, SupervisorMsg};
use natter_actors::store::{StoreConfig, Stores};
use natter_gateway::{Gateway, GatewayConfig};
use ractor::{Actor, ActorRef};
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
    #[error("starting an actor: {0}")]
    Actor(String),
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
    /// The gateway's limits and their refusal counters.
    pub gateway_limits: Arc<natter_gateway::limits::Limits>,
    pub stores: Stores,
}

impl Node {
    /// Connects, sets up the stores, starts the actors and serves HTTP on `listener`.
    /// Returns once the node is ready.
    pub async fn start(listener: TcpListener, config: &Config) -> Result<Node, NodeError> {
        let client = connect(config).await?;
        let stores = Stores::ensure(client.clone(), store_config(config)).await?;
        let ctx = Arc::new(SessionContext {
            stores: stores.clone(),
            public_url: config.http.public_url.clone(),
            max_message_bytes: config.chat.max_message_bytes,
            idle_timeout: config.chat.idle_actor_timeout,
            agent_timeout: config.chat.agent_timeout,
        });
        let (supervisor, _) = Actor::spawn(None, SessionSupervisor, ctx)
            .await
            .map_err(|e| NodeError::Actor(e.to_string()))?;
        let fleet_stats = Arc::new(FleetStats::default());
        let (fleet, _) = Actor::spawn(
            None,
            FleetSupervisor,
            FleetArgs {
                client: client.clone(),
                machines: stores.machines.clone(),
                stats: fleet_stats.clone(),
                config: FleetConfig {
                    offline_after: config.fleet.offline_after,
                    refresh: config.fleet.refresh,
                    sweep: config.fleet.sweep,
                },
            },
        )
        .await
        .map_err(|e| NodeError::Actor(e.to_string()))?;
        let callout_seed = config.callout_seed();
        let callout = if callout_seed.is_empty() {
            tracing::warn!("no auth callout seed (nats.callout_seed): agents cannot connect");
            None
        } else {
            let service =
                natter_actors::auth_callout::Callout::new(&callout_seed, &config.agent_password())
                    .map_err(|e| NodeError::Actor(e.to_string()))?;
            Some(
                service
                    .start(client.clone())
                    .await
                    .map_err(|e| NodeError::Actor(e.to_string()))?,
            )
        };
        // The actors' subscriptions must be known to the server before we report ready.
        let _ = client.flush().await;
        let shutdown = CancellationToken::new();
        // The gateway gets a NATS connection of its own: one async-nats connection is served by
        // one task, and under load the actors' and the gateway's traffic then use both cores.
        let gateway_stores = Stores::ensure(connect(config).await?, store_config(config)).await?;
        let gateway = Gateway::start(
            gateway_stores,
            GatewayConfig {
                request_timeout: config.http.request_timeout,
                login_ttl: config.http.login_ttl,
                secure_cookies: config.http.secure_cookies,
                drain_timeout: config.http.drain_timeout,
                public_origin: natter_gateway::origin::PublicOrigin::parse(&config.http.public_url),
                limits: config.limits.clone(),
            },
            shutdown.clone(),
        )
        .await?;
        let gateway_limits = gateway.limits().clone();
        let server = tokio::spawn(natter_gateway::serve(listener, gateway));
        Ok(Node {
            shutdown,
            callout,
            server,
            supervisor,
            fleet,
            client,
            fleet_stats,
            gateway_limits,
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
