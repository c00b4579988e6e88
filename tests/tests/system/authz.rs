//! The authorization matrix (issue 9): every role × every HTTP route and event stream of
//! docs/api.md (here), and every NATS identity × every subject an agent can name ([`nats`]).
//! Each row of a table is one request, each column one role. A refusal leaks nothing: its body
//! is exactly `{error, message}` and names no member, message, user, machine or session the
//! request did not name itself; outside an operator's scope a session or machine does not exist
//! (404).

mod nats;

use std::time::Duration;

use futures::StreamExt;
use natter_system_tests::*;
use serde_json::{Value, json};

const PC1: &str = "pc1.sales.acme";
const PC2: &str = "pc2.sales.acme";
const SRV1: &str = "srv1.dc.globex";
/// A message in session A that only its members may read.
const SECRET: &str = "the-secret-of-session-a";
/// A message in session B.
const SECRET_B: &str = "the-secret-of-session-b";
/// A well-formed session ID that names no session.
const UNKNOWN: &str = "01JD0000000000000000000000";
/// A request's expected status, or "not asked" for a cell that means nothing (a cross-site GET:
/// it changes nothing, and without CORS headers, asserted on every answer, that site cannot read
/// it).
const NA: u16 = 0;

/// The columns of the HTTP tables.
///
/// - `admin`: alice, an admin, who opened sessions A (with pc1) and B (with pc2);
/// - `scoped`: bob, scoped to `sales.acme`, who joined A;
/// - `nonmember`: dave, scoped to `sales.acme`, member of nothing;
/// - `otherorg`: carl, scoped to the `globex` organisation;
/// - `anonymous`: no cookie; `forged`: a made-up token; `loggedout`: the token of a login that
///   logged out;
/// - `mu`, `othermu`: the machine users of A and of B;
/// - `crosssite`: alice's and A's machine user's cookies on a request from another site.
///
/// Every role but `anonymous` and `crosssite` sends its one token as both cookies.
const ROLES: [&str; 10] = [
    "admin",
    "scoped",
    "nonmember",
    "otherorg",
    "anonymous",
    "forged",
    "loggedout",
    "mu",
    "othermu",
    "crosssite",
];

/// One role as the gateway sees it: the cookies its requests carry and where they come from.
struct Role {
    name: &'static str,
    cookie: Option<String>,
    origin: String,
}

/// One request and what each role (in [`ROLES`] order) must get; `{A}`, `{B}` and `{U}` in the
/// path stand for session A, session B and [`UNKNOWN`].
struct Row {
    method: &'static str,
    path: &'static str,
    body: Value,
    expect: [u16; 10],
    /// What a role that is let in sees (`shows`) and must not see (`hides`).
    sees: Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)>,
}

fn row(method: &'static str, path: &'static str, expect: [u16; 10]) -> Row {
    Row {
        method,
        path,
        body: json!({}),
        expect,
        sees: Vec::new(),
    }
}

impl Row {
    fn body(mut self, body: Value) -> Row {
        self.body = body;
        self
    }

    fn sees(mut self, role: &'static str, shows: &[&'static str], hides: &[&'static str]) -> Row {
        self.sees.push((role, shows.to_vec(), hides.to_vec()));
        self
    }
}

/// Operators' cells: admin, scoped, nonmember, otherorg, then 401 for everyone without an
/// operator login; `crosssite` as given.
fn op(allowed: [u16; 4], crosssite: u16) -> [u16; 10] {
    let [a, s, n, o] = allowed;
    [a, s, n, o, 401, 401, 401, 401, 401, crosssite]
}

/// Machine-user cells: only `mu` (or `othermu`) gets `ok`.
fn mu(mu: u16, othermu: u16, crosssite: u16) -> [u16; 10] {
    [401, 401, 401, 401, 401, 401, 401, mu, othermu, crosssite]
}

/// The same answer for every role.
fn all(status: u16, crosssite: u16) -> [u16; 10] {
    let mut cells = [status; 10];
    cells[9] = crosssite;
    cells
}

/// Reads, requests and streams that change nothing, then the changes, the ends and the logout.
#[rustfmt::skip]
fn http_rows() -> Vec<Row> {
    let machines = |r: Row| {
        r.sees("admin", &[PC1, PC2, SRV1], &[])
            .sees("scoped", &[PC1, PC2], &[SRV1, "frank"])
            .sees("nonmember", &[PC1, PC2], &[SRV1, "frank"])
            .sees("otherorg", &[SRV1], &[PC1, PC2, "carol", "erin"])
    };
    let page = |path| row("GET", path, all(200, NA)).sees("anonymous", &[], &[SECRET, "carol"]);
    let message = json!({"id": "authz-1", "text": "hello"});
    let bad_token = json!({"token": "not-the-token"});
    vec![
        page("/"),
        page("/chat/{A}"),
        page("/m/{A}"),
        row("GET", "/static/index.js", all(200, NA)),
        row("GET", "/healthz", all(200, NA)),
        row("GET", "/readyz", all(200, NA)),
        row("GET", "/api/me", op([200; 4], NA)).sees("scoped", &["sales.acme"], &[]),
        machines(row("GET", "/api/machines", op([200; 4], NA))),
        // A filter narrows within the scope, never widens it.
        row("GET", "/api/machines?filter=acme", op([200; 4], NA)).sees("otherorg", &[], &[PC1, PC2]),
        row("GET", "/api/machines?filter=*globex", op([200; 4], NA)).sees("scoped", &[], &[SRV1]),
        row("GET", "/api/machines/pc1.sales.acme", op([200, 200, 200, 404], NA)).sees("scoped", &["carol"], &[]),
        row("GET", "/api/machines/srv1.dc.globex", op([200, 404, 404, 200], NA)).sees("otherorg", &["frank"], &[]),
        row("GET", "/api/machines/pc7.sales.acme", op([404; 4], NA)),
        row("GET", "/api/sessions/{A}", op([200, 200, 403, 404], NA)).sees("scoped", &[PC1, "carol"], &[]),
        row("GET", "/api/sessions/{U}", op([404; 4], NA)),
        machines(row("GET", "/api/machines/events", op([200; 4], NA))),
        machines(row("GET", "/api/machines/events?filter=*", op([200; 4], NA))),
        row("GET", "/api/events?sessions={A}", op([200, 200, 403, 404], NA))
            .sees("admin", &[SECRET], &[SECRET_B])
            .sees("scoped", &[SECRET], &[SECRET_B]),
        row("GET", "/api/events?sessions={A},{B}", op([200, 403, 403, 404], NA)).sees("admin", &[SECRET, SECRET_B], &[]),
        row("GET", "/api/events?sessions={U}", op([404; 4], NA)),
        row("GET", "/m/{A}/api/session", mu(200, 401, NA)).sees("mu", &[PC1], &[PC2]),
        row("GET", "/m/{U}/api/session", mu(401, 401, NA)),
        row("GET", "/m/{A}/api/events", mu(200, 401, NA)).sees("mu", &[SECRET], &[SECRET_B]),
        // The machine user's stream carries its own session only, whatever the query says.
        row("GET", "/m/{A}/api/events?sessions={B}", mu(200, 401, NA)).sees("mu", &[SECRET], &[SECRET_B]),
        row("GET", "/m/{B}/api/events", mu(401, 200, NA)).sees("othermu", &[SECRET_B], &[SECRET]),
        row("GET", "/m/{U}/api/events", mu(401, 401, NA)),
        row("POST", "/api/login", all(401, 403)).body(json!({"username": "alice", "password": "wrong"})),
        row("POST", "/m/{A}/api/login", all(401, 403)).body(bad_token.clone()),
        row("POST", "/m/{U}/api/login", all(401, 403)).body(bad_token),
        row("POST", "/api/sessions/{A}/messages", op([201, 201, 403, 404], 403)).body(message.clone()),
        row("POST", "/m/{A}/api/messages", mu(201, 401, 403)).body(message),
        // Typing and seen: members only, as for sending (an invited operator is not one yet).
        row("POST", "/api/sessions/{A}/typing", op([204, 204, 403, 404], 403)),
        row("POST", "/api/sessions/{A}/seen", op([204, 204, 403, 404], 403)).body(json!({"seq": 1})),
        row("POST", "/api/sessions/{U}/seen", op([404; 4], 403)).body(json!({"seq": 1})),
        row("POST", "/m/{A}/api/typing", mu(204, 401, 403)),
        row("POST", "/m/{A}/api/seen", mu(204, 401, 403)).body(json!({"seq": 1})),
        row("GET", "/api/sessions/{A}/seen", op([200, 200, 403, 404], NA)),
        row("GET", "/m/{A}/api/seen", mu(200, 401, NA)),
        // Asking for a chat with a machine outside the scope (an in-scope one would join A).
        row("POST", "/api/chats", op([NA, NA, NA, 404], 403)).body(json!({"machine": PC1})),
        row("POST", "/api/chats", op([201, 404, 404, 200], 403)).body(json!({"machine": SRV1})),
        // Transcripts, recent events and hand-off: members only; open chats: each operator's own list.
        row("GET", "/api/sessions/{A}/transcript", op([200, 200, 403, 404], NA)).sees("scoped", &[SECRET], &[SECRET_B]),
        row("GET", "/api/sessions/{B}/transcript?format=json", op([200, 403, 403, 404], NA)).sees("admin", &[SECRET_B], &[SECRET]),
        row("GET", "/api/sessions/{U}/transcript", op([404; 4], NA)),
        row("GET", "/api/sessions/{A}/events?last=5", op([200, 200, 403, 404], NA)).sees("scoped", &[SECRET], &[SECRET_B]),
        row("GET", "/api/sessions/{B}/events", op([200, 403, 403, 404], NA)).sees("admin", &[SECRET_B], &[SECRET]),
        row("GET", "/api/sessions/{U}/events", op([404; 4], NA)),
        row("GET", "/api/sessions/{A}/handoff", op([200, 200, 403, 404], NA)),
        row("POST", "/api/sessions/{A}/handoff", op([404, 404, 403, 404], 403)).body(json!({"operator": "nobody"})),
        row("PUT", "/api/me/chats/{A}", op([204, 204, 403, 404], 403)),
        row("GET", "/api/me/chats", op([200; 4], NA)).sees("scoped", &[PC1], &[PC2]),
        row("DELETE", "/api/me/chats/{A}", op([204; 4], 403)),
        row("POST", "/api/sessions/{A}/join", op([200, 200, 200, 404], 403)),
        row("POST", "/api/sessions/{B}/end", op([200, 403, 403, 404], 403)),
        row("POST", "/m/{A}/api/end", mu(200, 401, 403)),
        // Machine roles: admins only. The start page: only a start login (none here).
        page("/start/"),
        row("GET", "/api/roles", op([200, 403, 403, 403], NA)),
        row("POST", "/api/roles", op([201, 403, 403, 403], 403)).body(json!({"name": "authz"})),
        row("PUT", "/api/roles/authz", op([200, 403, 403, 403], 403)).body(json!({"may_start_chat": true})),
        row("PUT", "/api/machines/pc1.sales.acme/role", op([200, 403, 403, 403], 403)).body(json!({"role": "authz"})),
        row("DELETE", "/api/roles/authz", op([204, 403, 403, 403], 403)),
        row("GET", "/start/api/operators", all(401, NA)),
        row("POST", "/start/api/login", all(401, 403)).body(json!({"token": format!("nst_{}", "0".repeat(64))})),
        row("POST", "/start/api/chats", all(401, 403)).body(json!({"operator": "op-0000000000000000"})),
        row("POST", "/api/logout", all(204, 403)),
    ]
}

/// The browsers of the matrix's roles, and the sessions they act on.
struct World {
    base: String,
    client: reqwest::Client,
    roles: Vec<Role>,
    a: String,
    b: String,
}

async fn world(s: &Fixture) -> World {
    let (a, mu_a) = s.open_chat_between("alice", PC1).await;
    let (b, mu_b) = s.open_chat_between("alice", PC2).await;
    let (alice, bob) = (s.operator("alice"), s.operator("bob"));
    let (status, _) = bob
        .post(&format!("/api/sessions/{a}/join"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = alice.send(&a, "secret-1", SECRET).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = alice.send(&b, "secret-2", SECRET_B).await;
    assert_eq!(status, StatusCode::CREATED);
    let olga = s.node.operator("olga").await;
    let olga_cookie = op_cookie(&olga);
    let (status, _) = olga.post("/api/logout", &json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Every login's token goes in both cookies: an operator's must not pass as a machine
    // user's, nor the other way round.
    let both = |t: &str| format!("natter_op={t}; natter_mu={t}");
    let mu_token = |b: &Browser, session: &str| {
        b.cookie(&format!("/m/{session}/"), "natter_mu")
            .expect("a machine-user cookie")
    };
    let cookies = [
        Some(both(&op_cookie(&alice))),
        Some(both(&op_cookie(&bob))),
        Some(both(&op_cookie(&s.operator("dave")))),
        Some(both(&op_cookie(&s.operator("carl")))),
        None,
        Some(both(&"ab".repeat(32))),
        Some(both(&olga_cookie)),
        Some(both(&mu_token(&mu_a, &a))),
        Some(both(&mu_token(&mu_b, &b))),
        Some(format!(
            "natter_op={}; natter_mu={}",
            op_cookie(&alice),
            mu_token(&mu_a, &a)
        )),
    ];
    let roles = ROLES
        .iter()
        .zip(cookies)
        .map(|(&name, cookie)| Role {
            name,
            cookie,
            origin: if name == "crosssite" {
                "http://evil.example".into()
            } else {
                s.node.base.clone()
            },
        })
        .collect();
    World {
        base: s.node.base.clone(),
        // No cookie store: every request carries exactly its role's cookies.
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client"),
        roles,
        a,
        b,
    }
}

fn op_cookie(b: &Browser) -> String {
    b.cookie("/", "natter_op").expect("an operator cookie")
}

impl World {
    fn path(&self, template: &str) -> String {
        template
            .replace("{A}", &self.a)
            .replace("{B}", &self.b)
            .replace("{U}", UNKNOWN)
    }

    /// What nobody who is refused may learn.
    fn secrets(&self) -> Vec<String> {
        let names = [
            SECRET,
            SECRET_B,
            "carol",
            "erin",
            "frank",
            "alice (operator)",
            PC1,
            PC2,
            SRV1,
        ];
        let mut secrets: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        secrets.extend([self.a.clone(), self.b.clone()]);
        secrets
    }

    /// Asks every cell of `row`: the refusals first, then the requests that change something,
    /// so that no change decides another role's cell.
    async fn check_row(&self, row: &Row) {
        let mut cells: Vec<(usize, u16)> = row
            .expect
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, status)| status != NA)
            .collect();
        cells.sort_by_key(|&(_, status)| status < 300);
        for (column, expected) in cells {
            self.check_cell(row, &self.roles[column], expected).await;
        }
    }

    async fn check_cell(&self, row: &Row, role: &Role, expected: u16) {
        let path = self.path(row.path);
        let cell = format!("{} {} {path} as {}", row.method, row.path, role.name);
        let mut request = match row.method {
            "GET" => self.client.get(format!("{}{path}", self.base)),
            method => self
                .client
                .request(
                    method.parse().expect("a method"),
                    format!("{}{path}", self.base),
                )
                .header("x-natter", "1")
                .header("origin", &role.origin)
                .json(&row.body),
        };
        if let Some(cookie) = &role.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.expect("a request");
        let status = response.status().as_u16();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{cell}: a CORS header lets other sites read the answer"
        );
        let (shows, hides) = row
            .sees
            .iter()
            .find(|(name, _, _)| *name == role.name)
            .map(|(_, s, h)| (s.clone(), h.clone()))
            .unwrap_or_default();
        let streaming = status == 200 && path.contains("events");
        let body = if streaming {
            read_stream(response, &shows).await
        } else {
            response.text().await.unwrap_or_default()
        };
        assert_eq!(status, expected, "{cell}: {body}");
        for s in &shows {
            assert!(body.contains(s), "{cell} does not show {s}: {body}");
        }
        for h in &hides {
            assert!(!body.contains(h), "{cell} shows {h}: {body}");
        }
        if status >= 400 {
            let asked = format!("{path} {}", row.body);
            self.assert_refusal_leaks_nothing(&cell, status, &body, &asked);
        }
    }

    fn assert_refusal_leaks_nothing(&self, cell: &str, status: u16, body: &str, asked: &str) {
        let error: Value = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("{cell}: the refusal is not JSON: {body}"));
        let keys: Vec<&String> = error
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["error", "message"], "{cell}: {body}");
        let kind = match status {
            400 => "bad_request",
            401 => "unauthenticated",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            _ => "?",
        };
        assert_eq!(error["error"], kind, "{cell}: {body}");
        for secret in self.secrets() {
            if !asked.contains(&secret) {
                assert!(!body.contains(&secret), "{cell} leaks {secret}: {body}");
            }
        }
    }
}

/// An open event stream's text until it shows everything in `shows` (and a moment more, so that
/// what it must not show has had its chance); the stream is then closed.
async fn read_stream(response: reqwest::Response, shows: &[&str]) -> String {
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if settle.is_none() && shows.iter().all(|s| text.contains(s)) && text.contains("data:") {
            settle = Some(now + Duration::from_millis(300));
        }
        let until = settle.unwrap_or(deadline);
        if now >= until {
            return text;
        }
        match tokio::time::timeout(until - now, stream.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) | Err(_) => return text,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_share_of_every_route_and_stream() {
    let s = Scenario::new()
        .machine(PC1, "carol")
        .machine(PC2, "erin")
        .machine(SRV1, "frank")
        .operator("alice")
        .scoped_operator("bob", &["sales.acme"])
        .scoped_operator("dave", &["sales.acme"])
        .scoped_operator("carl", &["globex"])
        .start()
        .await;
    let world = world(&s).await;
    for row in http_rows() {
        world.check_row(&row).await;
    }
    // The logout ended the operators' logins: their cookies are refused everywhere now.
    for role in &world.roles[..4] {
        let r = row("GET", "/api/me", op([401; 4], NA));
        world.check_cell(&r, role, 401).await;
    }
    s.shutdown().await;
}

/// A machine user reads operators' display names and per-session aliases, never their login
/// IDs: not in the session view, not on the event stream (replayed or live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_user_never_reads_an_operators_login_id() {
    let s = Scenario::new().machine(PC1, "carol").start().await;
    let operator = |username: &'static str, name: &'static str| {
        let node = &s.node;
        async move {
            let password = operator_password(username);
            node.add_operator(username, name, &password).await;
            let b = Browser::new(&node.base);
            let (status, body) = b
                .post(
                    "/api/login",
                    &json!({"username": username, "password": password}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            b
        }
    };
    let alice = operator("alice", "Alice Admin").await;
    let bob = operator("bob", "Bob B.").await;
    let a = alice.new_chat(PC1).await;
    let url = s.agent(PC1).wait_for_chat_url().await;
    let token = url.split_once("#t=").expect("a token").1;
    let mu = Browser::new(&s.node.base);
    let (status, login_view) = mu
        .post(&format!("/m/{a}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{login_view}");
    alice.send(&a, "a1", "first words").await;
    let (status, _) = bob
        .post(&format!("/api/sessions/{a}/join"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut stream = mu.events(&format!("/m/{a}/api/events"), None).await;
    let replayed = stream.read_messages(1).await;
    bob.send(&a, "b1", "second words").await;
    let live = stream.read_messages(1).await;
    let (status, view) = mu.get(&format!("/m/{a}/api/session")).await;
    assert_eq!(status, StatusCode::OK);

    let seen: Vec<String> = [login_view.clone(), view.clone()]
        .into_iter()
        .chain(replayed.iter().chain(&live).map(|e| e.data.clone()))
        .map(|v| v.to_string())
        .collect();
    for text in &seen {
        assert!(
            !text.contains("alice") && !text.contains("\"bob\""),
            "{text}"
        );
    }
    // Names stay; each operator has one alias in the view and on the stream, and two operators
    // two aliases.
    let member = |name: &str| {
        view["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {view}"))["id"]
            .as_str()
            .expect("an id")
            .to_string()
    };
    let (alice_alias, bob_alias) = (member("Alice Admin"), member("Bob B."));
    assert!(alice_alias.starts_with("op-"), "{alice_alias}");
    assert_ne!(alice_alias, bob_alias);
    let from = |events: &[SseEvent], text: &str| {
        events
            .iter()
            .find(|e| e.data["text"] == text)
            .expect(text)
            .data["from"]["id"]
            .clone()
    };
    assert_eq!(from(&replayed, "first words"), alice_alias.as_str());
    assert_eq!(from(&live, "second words"), bob_alias.as_str());
    // Operators still read each other's login IDs.
    let (_, alice_view) = alice.get(&format!("/api/sessions/{a}")).await;
    assert!(alice_view.to_string().contains("\"alice\""), "{alice_view}");
    s.shutdown().await;
}
