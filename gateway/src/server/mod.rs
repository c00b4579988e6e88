//! The accept loop: connection caps at accept, a connection's first request read here (an
//! event stream is then written here too, [`event_stream`]), hyper's HTTP/1 for everything else
//! with a header timeout, each request tagged with its client address, and a bounded drain on
//! shutdown.

mod event_stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{ClientAddr, ConnectionSlot, Limits, count};
use crate::{Gateway, api};
use event_stream::{FirstRequest, Prefixed};

type Routes = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Serves HTTP on `listener` until `shutdown` is cancelled, then drains open connections
/// (SSE streams end themselves on shutdown) for at most the drain timeout.
///
/// Connections are served by hyper's HTTP/1 connection builder on our own accept loop: it costs
/// less memory per idle SSE connection than warp's HTTP/1+2 server, and it is where connections
/// are capped.
pub async fn serve(listener: TcpListener, gateway: Gateway) {
    let shutdown = gateway.shutdown_token().clone();
    let drain = gateway.config().drain_timeout;
    let limits = gateway.limits().clone();
    let routes = api::routes(gateway);
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Over a cap: dropping the stream closes it before a byte is read.
        let Some(slot) = limits.admit_connection(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            routes: routes.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
            drain,
            _slot: slot,
        };
        tracker.spawn(connection.serve(stream, peer));
    }
    tracker.close();
    let _ = tokio::time::timeout(drain + Duration::from_secs(1), tracker.wait()).await;
    tracing::info!(limits = ?limits.stats(), "gateway stopped");
}

/// warp's response body: its type has no public name, so it is named through
/// `warp::reply::Response`.
type WarpBody = <warp::reply::Response as ResponseBody>::Body;

trait ResponseBody {
    type Body;
}

impl<B> ResponseBody for hyper::Response<B> {
    type Body = B;
}

/// Answers one request through `routes`, tagged with its client's address, with its event
/// stream as the body when the handler handed one over ([`crate::sse::response`]), otherwise
/// warp's body as it is. hyper's connections and the event-stream writer both answer here.
async fn answer<B>(
    routes: Routes,
    client: ClientAddr,
    mut request: hyper::Request<B>,
) -> hyper::Response<http_body_util::Either<WarpBody, crate::sse::SseBody>>
where
    B: hyper::body::Body + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    request.extensions_mut().insert(client);
    let Ok(response) = TowerToHyperService::new(warp::service(routes))
        .call(request)
        .await;
    let (mut parts, body) = response.into_parts();
    match parts
        .extensions
        .remove::<crate::sse::SseHandoff>()
        .and_then(|h| h.take())
    {
        Some(sse) => hyper::Response::from_parts(parts, http_body_util::Either::Right(sse)),
        None => hyper::Response::from_parts(parts, http_body_util::Either::Left(body)),
    }
}

/// One accepted connection and what it holds while open.
struct Connection {
    routes: Routes,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
    drain: Duration,
    _slot: ConnectionSlot,
}

impl Connection {
    async fn serve(self, mut stream: TcpStream, peer: SocketAddr) {
        let client = ClientAddr(peer.ip());
        let header_timeout = self.limits.config.header_timeout;
        let first = tokio::select! {
            first = event_stream::read_first(&mut stream, header_timeout) => first,
            _ = self.shutdown.cancelled() => return,
        };
        match first {
            FirstRequest::EventStream(request) => {
                let routes = self.routes.clone();
                let events = event_stream::serve(stream, request, routes, client);
                // An event stream ends itself on shutdown; a client that reads nothing more
                // gets the drain timeout.
                tokio::select! {
                    _ = events => {}
                    _ = async {
                        self.shutdown.cancelled().await;
                        tokio::time::sleep(self.drain).await;
                    } => {}
                }
            }
            FirstRequest::Other(read) => {
                self.serve_http(Prefixed::new(read, stream), client).await;
            }
            FirstRequest::TimedOut => count(&self.limits.counters.connection_timeouts),
            FirstRequest::Gone => {}
        }
    }

    /// Serves the connection's requests with hyper, from its first (already read, in `io`).
    async fn serve_http(&self, io: Prefixed, client: ClientAddr) {
        let routes = self.routes.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let answer = answer(routes.clone(), client, req);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        // The header timeout runs from the moment hyper waits for a request head: it bounds a
        // half-sent request and an idle keep-alive alike, never a response (an SSE stream) in
        // progress. Without a timer hyper ignores it.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.config.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(self.drain, conn).await.unwrap_or(Ok(()))
            }
        };
        if let Err(e) = result
            && e.is_timeout()
        {
            count(&self.limits.counters.connection_timeouts);
        }
    }
}
