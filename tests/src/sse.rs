//! An open SSE stream as a browser's EventSource sees it, and helpers to read chat messages.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::{StatusCode, WAIT};

type EventStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// An open SSE stream.
pub struct Sse {
    pub status: StatusCode,
    pub error_body: String,
    stream: Option<EventStream>,
}

/// One SSE event as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl SseEvent {
    pub fn seq(&self) -> u64 {
        self.data["seq"].as_u64().unwrap_or(0)
    }
}

/// Texts of the `message` events among `events`.
pub fn texts(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.data["type"] == "message")
        .map(|e| e.data["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

impl Sse {
    /// The stream of a response; a status other than 200 keeps the body for the test to read.
    pub(crate) async fn open(response: reqwest::Response) -> Sse {
        let status = response.status();
        if status != StatusCode::OK {
            return Sse {
                status,
                error_body: response.text().await.unwrap_or_default(),
                stream: None,
            };
        }
        use eventsource_stream::Eventsource;
        Sse {
            status,
            error_body: String::new(),
            stream: Some(Box::pin(response.bytes_stream().eventsource())),
        }
    }

    /// The next event (keep-alive comments are skipped), or `None` on timeout or end.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let stream = self.stream.as_mut()?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(e))) => Some(SseEvent {
                event: e.event,
                id: e.id,
                data: serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
            }),
            _ => None,
        }
    }

    /// The next chat event (skipping `hello` and other control events).
    pub async fn next_chat(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await?;
            if e.event == "message" {
                return Some(e);
            }
        }
    }

    /// The data of the next chat event of type `kind`, skipping others; panics after [`WAIT`].
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self
                .next_chat(left)
                .await
                .unwrap_or_else(|| panic!("no {kind} event within {WAIT:?}"));
            if e.data["type"] == kind {
                return e.data;
            }
        }
    }

    /// Reads chat events until `n` messages have arrived (other chat event types are kept too);
    /// panics if they do not within [`WAIT`].
    pub async fn read_messages(&mut self, n: usize) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::new();
        while texts(&out).len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_chat(left).await {
                Some(e) => out.push(e),
                None => panic!("only {:?} of {n} messages arrived", texts(&out)),
            }
        }
        out
    }

    /// Asserts no chat event arrives within `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        if let Some(e) = self.next_chat(wait).await {
            panic!("unexpected event: {e:?}");
        }
    }

    /// Closes the stream (the client goes away).
    pub fn close(&mut self) {
        self.stream = None;
    }
}
