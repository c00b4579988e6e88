//! An HTTP client that behaves like one browser profile on the gateway's origin.

use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};
use serde_json::{Value, json};

use crate::{Sse, StatusCode, WAIT, eventually};

/// An HTTP client that behaves like a browser on the gateway's origin: a cookie jar, the
/// `Origin` header and the CSRF header on POSTs.
#[derive(Clone)]
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
    /// The cookie jar, readable so a test can replay a login's cookie by hand.
    jar: Arc<Jar>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser::from_source(base, None)
    }

    /// A browser whose connections come from `source` (a loopback address such as 127.0.0.2),
    /// so that the gateway sees another client address.
    pub fn from_source(base: &str, source: impl Into<Option<std::net::IpAddr>>) -> Browser {
        let jar = Arc::new(Jar::default());
        Browser {
            client: reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .timeout(Duration::from_secs(20))
                // Drop idle connections before a test's short server idle timeout (1 s) can
                // close one just as it is reused (a POST on it would fail, not be retried).
                .pool_idle_timeout(Duration::from_millis(500))
                .local_address(source.into())
                .build()
                .expect("http client"),
            base: base.into(),
            jar,
        }
    }

    /// The same browser (client and cookies) talking to another base URL, e.g. a restarted
    /// node on another port (cookies do not depend on ports).
    pub fn at(&self, base: &str) -> Browser {
        Browser {
            client: self.client.clone(),
            base: base.to_string(),
            jar: self.jar.clone(),
        }
    }

    /// The value of the cookie `name` this browser would send to `path`, if it has one.
    pub fn cookie(&self, path: &str, name: &str) -> Option<String> {
        let url = self.url(path).parse().expect("a URL");
        let header = self.jar.cookies(&url)?;
        let prefix = format!("{name}=");
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|c| c.strip_prefix(&prefix).map(str::to_string))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A POST carrying the headers the web UI sends (CSRF marker and own origin).
    fn post_request(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("x-natter", "1")
            .header("origin", &self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .post_request(path)
            .json(body)
            .send()
            .await
            .expect("POST");
        read(r).await
    }

    /// A PUT of a JSON body, as the web UI sends it (CSRF marker and own origin).
    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .put(self.url(path))
            .header("x-natter", "1")
            .header("origin", &self.base)
            .json(body)
            .send()
            .await
            .expect("PUT");
        read(r).await
    }

    /// A POST with a raw body and content type (for bad-input tests), with CSRF headers.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let r = self
            .post_request(path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        read(r).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        read(r).await
    }

    /// Polls `GET path` until `done` holds for its body; panics after [`WAIT`].
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) {
        let done = &done;
        eventually(WAIT, || async move { done(&self.get(path).await.1) }).await;
    }

    /// Asks for a chat with `machine` as an operator (`POST /api/chats`); returns the answer.
    pub async fn chat_with(&self, machine: &str) -> (StatusCode, Value) {
        self.post("/api/chats", &json!({"machine": machine})).await
    }

    /// Starts a new chat with `machine` as an operator, asserting it was created (201); returns
    /// the session id.
    pub async fn new_chat(&self, machine: &str) -> String {
        let (status, answer) = self.chat_with(machine).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        session_id(&answer)
    }

    /// Sends a chat message as an operator; returns the answer.
    pub async fn send(&self, session: &str, client_id: &str, text: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/sessions/{session}/messages"),
            &json!({"id": client_id, "text": text}),
        )
        .await
    }

    /// Sends a chat message as the machine user; returns the answer.
    pub async fn send_as_machine_user(
        &self,
        session: &str,
        client_id: &str,
        text: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/m/{session}/api/messages"),
            &json!({"id": client_id, "text": text}),
        )
        .await
    }

    /// Opens an operator's event stream of one session from its start.
    pub async fn session_events(&self, session: &str) -> Sse {
        self.events(&format!("/api/events?sessions={session}"), None)
            .await
    }

    /// Opens an SSE stream at `path`, optionally resuming from `last_event_id`.
    pub async fn events(&self, path: &str, last_event_id: Option<u64>) -> Sse {
        let mut req = self
            .client
            .get(self.url(path))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        Sse::open(req.send().await.expect("open SSE")).await
    }
}

async fn read(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The session id in a `POST /api/chats` answer.
pub fn session_id(answer: &Value) -> String {
    answer["session"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {answer}"))
        .to_string()
}
