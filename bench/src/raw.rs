//! The physical limit: raw NATS on the same server, in the same run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::procs::BoxError;
use crate::report::{Lat, new_hist};

pub struct RawResults {
    pub core_rtt: Lat,
    pub js_ack: Lat,
    pub js_pipelined_per_s: f64,
}

/// A 200-byte payload.
fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 200])
}

pub async fn run(
    url: &str,
    user: &str,
    password: &str,
    quick: bool,
) -> Result<RawResults, BoxError> {
    let connect = || {
        async_nats::ConnectOptions::new()
            .user_and_password(user.into(), password.into())
            .connect(url)
    };
    let requester = connect().await?;
    let responder = connect().await?;
    let (rounds, pipelined) = if quick {
        (2_000, 50_000)
    } else {
        (10_000, 200_000)
    };
    let core = core_rtt(&requester, &responder, rounds).await?;

    // JetStream publish with ack, one at a time, on a file stream of its own (like the events).
    let js = jetstream::new(requester.clone());
    js.create_stream(stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating the raw stream: {e}"))?;
    let ack = js_ack(&js, rounds / 2).await?;
    let rate = js_pipelined(&js, pipelined).await?;
    js.delete_stream("BENCH_RAW").await?;
    Ok(RawResults {
        core_rtt: Lat::from(&core),
        js_ack: Lat::from(&ack),
        js_pipelined_per_s: rate,
    })
}

/// Requests not measured at the start of a latency series (warm-up).
const WARM_UP: usize = 500;

/// Core request/reply: a responder on its own connection echoes the payload; `rounds` round
/// trips are measured.
async fn core_rtt(
    requester: &async_nats::Client,
    responder: &async_nats::Client,
    rounds: usize,
) -> Result<Histogram<u64>, BoxError> {
    let mut sub = responder.subscribe("bench.rr").await?;
    let echo = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = responder.publish(reply, m.payload).await;
                }
            }
        }
    });
    responder.flush().await?;
    // Wait until the server routes to the echo (auth-callout set-ups may lag a moment).
    for _ in 0..100 {
        if requester.request("bench.rr", payload()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = payload();
    let mut core = new_hist();
    for i in 0..rounds + WARM_UP {
        let t = Instant::now();
        requester
            .request("bench.rr", body.clone())
            .await
            .map_err(|e| format!("core request/reply: {e}"))?;
        if i >= WARM_UP {
            record(&mut core, t.elapsed());
        }
    }
    echo.abort();
    Ok(core)
}

/// `rounds` JetStream publishes, each awaiting its ack before the next.
async fn js_ack(js: &jetstream::Context, rounds: usize) -> Result<Histogram<u64>, BoxError> {
    let body = payload();
    let mut ack = new_hist();
    for i in 0..rounds + WARM_UP {
        let t = Instant::now();
        js.publish(format!("bench.raw.{}", i % 100), body.clone())
            .await?
            .await?;
        if i >= WARM_UP {
            record(&mut ack, t.elapsed());
        }
    }
    Ok(ack)
}

/// `count` JetStream publishes keeping a window of acks outstanding; returns messages/s.
async fn js_pipelined(js: &jetstream::Context, count: usize) -> Result<f64, BoxError> {
    let body = payload();
    let window = 4096;
    let mut outstanding = VecDeque::with_capacity(window);
    let t = Instant::now();
    for i in 0..count {
        if outstanding.len() >= window {
            let f: jetstream::context::PublishAckFuture =
                outstanding.pop_front().expect("non-empty");
            f.await?;
        }
        outstanding.push_back(
            js.publish(format!("bench.raw.p{}", i % 100), body.clone())
                .await?,
        );
    }
    while let Some(f) = outstanding.pop_front() {
        f.await?;
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_nanos() as u64).max(1));
}
