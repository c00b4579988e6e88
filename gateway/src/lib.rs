//! Natter's gateway: the HTTP API, the Server-Sent-Events streams and the web UI.
//!
//! Layout:
//! - [`api`]: the routes (operators under `/api`, machine users under `/m/<session>/api`, pages),
//!   their filters (login, CSRF, JSON bodies, errors), handlers and JSON shapes.
//! - [`auth`]: logins (cookies backed by a KV bucket).
//! - [`sse`]: the event streams: several sessions on one connection with exact resume, and the
//!   machine list.
//! - [`hub`]: the fan-out of live events: one subscription per followed session, to every
//!   connection that follows it.
//! - [`machines`]: the fleet as the gateway sees it (KV watchers), for lists and live status.
//! - [`presence`]: which operators are on the Chat page, across nodes; [`incoming`]: the chats
//!   waiting for an operator's answer.
//! - [`ui`]: the static web UI compiled into the binary.
//! - [`limits`]: limits on every door (logins, hashing, connections, streams) and their counters;
//!   [`origin`]: the Host and Origin checks against `public_url`; `server`: the accept loop.
//! - [`metrics`]: `GET /metrics` (Prometheus); [`readiness`]: what `GET /readyz` checks.
//! - [`error`]: the API's error type.
//!
//! This is the only crate that knows HTTP. It is stateless apart from open connections and caches
//! that are checked against the stores (logins, [`history`]), and it
//! reaches session actors only through NATS request/reply ([`Gateway::command`]) — never through
//! an actor reference, even when the actors run in the same process — so any node's gateway can
//! serve any browser.

pub mod api;
pub mod auth;
pub mod error;
pub mod history;
pub mod hub;
pub mod incoming;
pub mod limits;
pub mod machines;
pub mod metrics;
pub mod origin;
pub mod presence;
pub mod readiness;
pub mod redact;
mod server;
pub mod signals;
pub mod sse;
pub mod ui;

pub use server::serve;

use std::sync::Arc;
use std::time::Duration;

use natter_actors::machines::Scope;
use natter_actors::protocol::{
    Ack, ParticipantKind, SessionCommand, SessionError, SessionErrorKind, SessionReply,
    SessionRequest,
};
use natter_actors::store::Stores;
use natter_actors::subjects;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::limits::{Limits, LimitsConfig};
use crate::metrics::Metrics;
use crate::origin::PublicOrigin;

/// The gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// How long to wait in all for a session owner's answer (attempts of 1 s, sent again).
    pub request_timeout: Duration,
    /// How long a login lasts (also the KV bucket's max age).
    pub login_ttl: Duration,
    /// Mark cookies `Secure` (when served over HTTPS by a proxy); they are also when
    /// `public_origin` is https.
    pub secure_cookies: bool,
    /// How long open connections get to finish on shutdown.
    pub drain_timeout: Duration,
    /// Where browsers reach us (`http.public_url`): when set, every request must name it in
    /// `Host` and state-changing ones in `Origin`.
    pub public_origin: Option<PublicOrigin>,
    pub limits: LimitsConfig,
    /// This node's id (`node.id`): the `node` label of every metric.
    pub node_id: String,
    /// The bearer token `/metrics` asks for (`metrics.token`); `None`: loopback clients only.
    pub metrics_token: Option<String>,
    /// Bytes of recently read chat histories kept ([`history`], `http.history_cache_mib`).
    pub history_cache_bytes: usize,
}

impl GatewayConfig {
    /// Whether login cookies carry `Secure`.
    pub fn cookies_secure(&self) -> bool {
        self.secure_cookies
            || self
                .public_origin
                .as_ref()
                .is_some_and(PublicOrigin::is_https)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            request_timeout: Duration::from_secs(5),
            login_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            drain_timeout: Duration::from_secs(5),
            public_origin: None,
            limits: LimitsConfig::default(),
            node_id: "natter".into(),
            metrics_token: None,
            history_cache_bytes: 64 << 20,
        }
    }
}

/// How long a login read from KV is trusted before it is read again.
pub const LOGIN_CACHE_TTL: Duration = Duration::from_secs(5);

/// Cookie hash → (when read, the live login).
type LoginCache = std::collections::HashMap<String, (std::time::Instant, auth::Login)>;

/// A gateway: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    stores: Stores,
    hub: Hub,
    directory: machines::Directory,
    presence: presence::Presence,
    incoming: incoming::IncomingChats,
    /// Cookie hash → (when read, the login): spares a KV read per request. Entries live
    /// [`LOGIN_CACHE_TTL`], so a logout or scope change elsewhere applies within that time.
    logins: parking_lot::Mutex<LoginCache>,
    /// Recently read chat histories (a window opened again reads no stream).
    history: history::HistoryCache,
    limits: Arc<Limits>,
    metrics: Metrics,
    config: GatewayConfig,
    shutdown: CancellationToken,
    /// Makes operators' aliases for machine users ([`redact`]).
    alias_key: redact::AliasKey,
    /// What typing and seen signals were forwarded, for throttling ([`signals`]).
    signals: signals::Throttle,
    /// Each member's latest seen signal, kept a short while ([`signals::SEEN_BUCKET`]).
    seen: async_nats::jetstream::kv::Store,
}

impl Gateway {
    /// Starts the gateway's event hub over `stores`.
    pub async fn start(
        stores: Stores,
        config: GatewayConfig,
        shutdown: CancellationToken,
    ) -> Result<Gateway, natter_actors::store::StoreError> {
        let metrics = Metrics::new(&config.node_id);
        let hub = Hub::start(stores.clone(), metrics.events_received(), shutdown.clone()).await?;
        let directory = machines::Directory::start(
            stores.machines.clone(),
            stores.machine_sessions.clone(),
            shutdown.clone(),
        )
        .await;
        let alias_key = redact::AliasKey::load(&stores).await?;
        let seen = signals::seen_bucket(&stores).await?;
        let presence = presence::Presence::start(
            stores.presence.clone(),
            stores.operator_options.clone(),
            config.node_id.clone(),
            shutdown.clone(),
        );
        let incoming = incoming::IncomingChats::start(stores.incoming.clone(), shutdown.clone());
        let limits = Arc::new(Limits::new(config.limits.clone()));
        tokio::spawn(prune_login_limiters(limits.clone(), shutdown.clone()));
        let gateway = Gateway {
            inner: Arc::new(Inner {
                stores,
                hub,
                directory,
                presence,
                incoming,
                logins: Default::default(),
                history: history::HistoryCache::new(
                    config.history_cache_bytes,
                    metrics.history_kept_bytes(),
                ),
                limits,
                metrics,
                config,
                shutdown: shutdown.clone(),
                alias_key,
                signals: Default::default(),
                seen,
            }),
        };
        tokio::spawn(metrics::measure_nats(gateway.clone(), shutdown));
        Ok(gateway)
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The key of operators' aliases for machine users.
    pub fn alias_key(&self) -> &redact::AliasKey {
        &self.inner.alias_key
    }

    /// The throttle of typing and seen signals.
    pub fn signals(&self) -> &signals::Throttle {
        &self.inner.signals
    }

    /// The bucket of each member's latest seen signal.
    pub fn seen_store(&self) -> &async_nats::jetstream::kv::Store {
        &self.inner.seen
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn directory(&self) -> &machines::Directory {
        &self.inner.directory
    }

    pub fn presence(&self) -> &presence::Presence {
        &self.inner.presence
    }

    pub fn incoming(&self) -> &incoming::IncomingChats {
        &self.inner.incoming
    }

    /// Recently read chat histories.
    pub fn history(&self) -> &history::HistoryCache {
        &self.inner.history
    }

    pub(crate) fn login_cache(&self) -> &parking_lot::Mutex<LoginCache> {
        &self.inner.logins
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.inner.limits
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Sends a command to a session's actor over NATS and waits for its answer. Every command is
    /// idempotent (sends carry a client id), so one timed-out attempt is retried.
    pub async fn command(&self, session: &str, cmd: &SessionCommand) -> Result<Ack, ApiError> {
        self.command_as(session, cmd, &Scope::All).await
    }

    /// [`Gateway::command`] on behalf of a caller who may see only `scope`.
    pub async fn command_as(
        &self,
        session: &str,
        cmd: &SessionCommand,
        scope: &Scope,
    ) -> Result<Ack, ApiError> {
        let request = SessionRequest {
            cmd: cmd.clone(),
            scope: scope.clone(),
            epoch: None,
        };
        self.request(session, &request).await
    }

    /// [`Gateway::command`] on behalf of a logged-in caller. A machine user's command carries
    /// its login's epoch, which the session actor checks again (a restart may land after the
    /// gateway's check); its session being gone is the same 401 as a stale login.
    pub async fn command_for(
        &self,
        session: &str,
        cmd: &SessionCommand,
        l: &auth::Login,
    ) -> Result<Ack, ApiError> {
        if l.who.kind != ParticipantKind::MachineUser {
            return self.command_as(session, cmd, &l.scope).await;
        }
        let request = SessionRequest {
            cmd: cmd.clone(),
            scope: Scope::All,
            epoch: Some(l.epoch),
        };
        self.request(session, &request)
            .await
            .map_err(|e| match e.kind() {
                error::ErrorKind::NotFound => ApiError::unauthenticated(),
                _ => e,
            })
    }

    /// The session as logged-in caller `l` may read it (scope and membership checked by its
    /// actor): one View round trip.
    pub async fn view_as(
        &self,
        session: &str,
        l: &auth::Login,
    ) -> Result<natter_actors::protocol::SessionView, ApiError> {
        let view = SessionCommand::View { by: l.who.clone() };
        self.command_for(session, &view, l)
            .await?
            .session
            .ok_or_else(|| ApiError::not_found("no such chat session"))
    }

    /// Sends one request to a session's actor. While the session's partition changes hands
    /// (nobody subscribed, or a former owner answers "unavailable") it is retried with a short
    /// back-off for up to [`natter_actors::partitions::RETRY_FOR`]; an attempt unanswered for
    /// [`natter_actors::partitions::ATTEMPT_TIMEOUT`] is sent again, within `request_timeout`.
    /// Every command is idempotent (sends carry a client id), so a retry lands once.
    async fn request(&self, session: &str, request: &SessionRequest) -> Result<Ack, ApiError> {
        let cmd = &request.cmd;
        let body: bytes::Bytes = serde_json::to_vec(request)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .into();
        let answer = natter_actors::partitions::request_owner::<SessionReply>(
            &self.inner.stores.client,
            subjects::session_command(session),
            body,
            self.inner.config.request_timeout,
            retry_session_answer,
        )
        .await;
        let (reply, retried_after_timeout) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%session, %error, "session did not answer");
                return Err(ApiError::unavailable(
                    "the chat service did not answer; try again",
                ));
            }
        };
        let mut ack = reply.map_err(|e: SessionError| ApiError::from(e))?;
        // Our own attempt that timed out landed after all (its node died after storing it, or
        // answered late): for the caller this request stored the message, once.
        if retried_after_timeout && ack.duplicate {
            ack.duplicate = false;
        }
        // A retried send that landed before is not a new message.
        if matches!(cmd, SessionCommand::Send { .. }) && !ack.duplicate {
            self.inner.metrics.message_in();
        }
        Ok(ack)
    }
}

/// Whether a session's answer is worth retrying: "unavailable" (it moved to another node, or
/// its storage hiccupped), which every command may safely retry.
fn retry_session_answer(reply: &SessionReply) -> bool {
    matches!(
        reply,
        Err(SessionError {
            kind: SessionErrorKind::Unavailable,
            ..
        })
    )
}

/// Keeps the login limiters' memory to the recent attempts, until shutdown.
async fn prune_login_limiters(limits: Arc<Limits>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(limits::PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => limits.logins.prune(),
            _ = shutdown.cancelled() => return,
        }
    }
}
