//! The floors of an idle SSE connection: a bare hyper server (the HTTP stack the gateway runs
//! on, with the same HTTP/1 settings) that answers every request with an event stream holding
//! one `hello` event and then a keep-alive comment every [`KEEP_ALIVE`]; and (`--warp`) the
//! same stream made by warp's SSE reply behind warp's service, as the gateway makes its
//! streams. What a gateway connection costs beyond these is Natter's own.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use warp::Filter;

use crate::modes::stdin_closed;
use crate::procs::{BoxError, raise_nofile};

/// As the gateway's.
const KEEP_ALIVE: Duration = natter_gateway::sse::KEEP_ALIVE;

/// `natter-bench floor-sse [--warp]`: prints `READY <addr>` and serves until stdin closes.
pub async fn floor_sse(warp: bool) -> Result<(), BoxError> {
    raise_nofile();
    let listener = crate::procs::listen_loopback()?;
    println!("READY {}", listener.local_addr()?);
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            if warp {
                let routes = warp::any().map(warp_stream);
                let service = TowerToHyperService::new(warp::service(routes));
                tokio::spawn(http1().serve_connection(TokioIo::new(stream), service));
            } else {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(stream_response())
                });
                tokio::spawn(http1().serve_connection(TokioIo::new(stream), service));
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stdin_closed() => {}
    }
    Ok(())
}

/// The gateway's HTTP/1 settings (`gateway/src/server.rs`).
fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    b
}

/// The stream as warp makes it: its SSE reply with keep-alive comments.
fn warp_stream() -> impl warp::Reply {
    let hello = warp::sse::Event::default().event("hello").data("{}");
    let events = futures::stream::once(async { Ok::<_, Infallible>(hello) })
        .chain(futures::stream::pending());
    warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(events))
}

type Body = StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn stream_response() -> hyper::Response<Body> {
    let hello = futures::stream::once(async {
        Ok(Frame::data(Bytes::from_static(
            b"retry:1000\n\nevent:hello\ndata:{}\n\n",
        )))
    });
    let keep_alive = futures::stream::unfold((), |()| async {
        tokio::time::sleep(KEEP_ALIVE).await;
        Some((Ok(Frame::data(Bytes::from_static(b":\n\n"))), ()))
    });
    let mut r = hyper::Response::new(StreamBody::new(hello.chain(keep_alive).boxed()));
    let headers = r.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}
