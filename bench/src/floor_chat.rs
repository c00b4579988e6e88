//! The floor of the chat path (`natter-bench floor-chat`): a bare hyper server doing only what
//! every chat message costs whatever the design — read the HTTP send, append the event to a
//! JetStream file stream (de-duplicated by its id, fenced on the session's last sequence, one
//! append at a time per session, as a session actor does) and answer with its sequence; the
//! stream republishes it on core NATS and the server writes it, as one SSE frame made once, to
//! each reader's connection. No login, no membership, no actor; two NATS connections (appends,
//! live events), as a node has (actors, gateway), since one connection's I/O runs on one core.
//! The throughput phase drives it with the same senders and readers as the node, so the node's
//! figure can be read as a share of what this machine allows for the same work.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::modes::stdin_closed;
use crate::procs::{BoxError, raise_nofile};

const STREAM: &str = "BENCH_FLOOR";
const EVENTS: &str = "benchfloor.ev";
const LIVE: &str = "benchfloor.live";

type Body = BoxBody<Bytes, Infallible>;

struct Floor {
    js: jetstream::Context,
    /// Each session's last sequence (the fencing token), one append at a time per session.
    last_seq: Mutex<HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
    /// Each session's reader connections.
    readers: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>,
}

/// `natter-bench floor-chat --nats-url URL` (password in the broker's variable): prints
/// `READY <addr>` and serves until stdin closes.
pub async fn floor_chat(nats_url: String, password: String) -> Result<(), BoxError> {
    raise_nofile();
    let connect = || {
        async_nats::ConnectOptions::new()
            .user_and_password("natter-broker".into(), password.clone())
            .connect(nats_url.as_str())
    };
    let (appends, live_events) = (connect().await?, connect().await?);
    let js = jetstream::new(appends);
    // As the events stream: file storage, a duplicate window, every event republished.
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{EVENTS}.*")],
        storage: stream::StorageType::File,
        duplicate_window: std::time::Duration::from_secs(120),
        republish: Some(stream::Republish {
            source: format!("{EVENTS}.*"),
            destination: format!("{LIVE}.{{{{wildcard(1)}}}}"),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await?;
    let floor = Arc::new(Floor {
        js,
        last_seq: Mutex::new(HashMap::new()),
        readers: Mutex::new(HashMap::new()),
    });
    let mut live = live_events.subscribe(format!("{LIVE}.*")).await?;
    let pump = {
        let floor = floor.clone();
        tokio::spawn(async move {
            while let Some(msg) = live.next().await {
                let Some(session) = msg.subject.as_str().strip_prefix(&format!("{LIVE}.")) else {
                    continue;
                };
                let seq = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Sequence"))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                let mut frame = BytesMut::with_capacity(msg.payload.len() + 24);
                frame.extend_from_slice(b"id:");
                frame.extend_from_slice(seq.as_bytes());
                frame.extend_from_slice(b"\ndata:");
                frame.extend_from_slice(&msg.payload);
                frame.extend_from_slice(b"\n\n");
                let frame = frame.freeze();
                if let Some(conns) = floor.readers.lock().get_mut(session) {
                    conns.retain(|c| c.send(frame.clone()).is_ok());
                }
            }
        })
    };
    let listener = crate::procs::listen_loopback()?;
    println!("READY {}", listener.local_addr()?);
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let floor = floor.clone();
            let service = hyper::service::service_fn(move |req| serve(floor.clone(), req));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stdin_closed() => {}
    }
    pump.abort();
    Ok(())
}

async fn serve(floor: Arc<Floor>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').collect();
    Ok(match (req.method(), parts.as_slice()) {
        (&Method::POST, ["", "api", "sessions", session, "messages"]) => {
            let session = session.to_string();
            match req.into_body().collect().await {
                Ok(body) => send(&floor, session, body.to_bytes()).await,
                Err(e) => answer(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        (&Method::GET, ["", "api", "events"]) => {
            let query = req.uri().query().unwrap_or("");
            let session = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("sessions="))
                .and_then(|s| s.split(':').next())
                .unwrap_or("")
                .to_string();
            events(&floor, session)
        }
        _ => answer(StatusCode::NOT_FOUND, "no such route".into()),
    })
}

/// Appends the message as a chat event and answers with its sequence.
async fn send(floor: &Floor, session: String, body: Bytes) -> Response<Body> {
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return answer(StatusCode::BAD_REQUEST, "not JSON".into());
    };
    let (Some(id), Some(text)) = (req["id"].as_str(), req["text"].as_str()) else {
        return answer(StatusCode::BAD_REQUEST, "id and text".into());
    };
    let event = serde_json::json!({
        "session": session,
        "at": natter_actors::now_ms(),
        "type": "message",
        "from": {"kind": "operator", "id": "bench-a", "name": "Bench bench-a"},
        "text": text,
        "client_id": id,
    });
    let payload: Bytes = serde_json::to_vec(&event).unwrap_or_default().into();
    let fence = floor
        .last_seq
        .lock()
        .entry(session.clone())
        .or_default()
        .clone();
    let mut last = fence.lock().await;
    let publish = PublishMessage::build()
        .payload(payload)
        .message_id(format!("{session}.{id}"))
        .expected_last_subject_sequence(*last);
    let ack = match floor
        .js
        .send_publish(format!("{EVENTS}.{session}"), publish)
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match ack {
        Ok(ack) => {
            if !ack.duplicate {
                *last = ack.sequence;
            }
            answer(
                StatusCode::CREATED,
                format!(
                    "{{\"seq\":{},\"duplicate\":{}}}",
                    ack.sequence, ack.duplicate
                ),
            )
        }
        Err(e) => answer(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The session's event stream: `hello`, then every live event.
fn events(floor: &Floor, session: String) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(Bytes::from_static(
        b"retry:1000\n\nevent:hello\ndata:{}\n\n",
    ));
    floor.readers.lock().entry(session).or_default().push(tx);
    let frames = tokio_stream_of(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn tokio_stream_of(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn answer(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
