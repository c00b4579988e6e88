//! The NATS side of the matrix: what an enrolled agent and the simulator (its own subject family,
//! never a real machine's) may publish and subscribe to (nats-server answers a violation with `-ERR 'Permissions Violation …'`, which
//! async-nats reports as a server error event, and a refused subscription delivers nothing), and
//! who cannot connect at all.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use natter_actors::subjects;
use natter_system_tests::*;
use serde_json::json;

use super::{PC1, PC2};

/// A machine no real agent enrolled: only the simulator speaks for it.
const SIM: &str = "sim1.sales.acme";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    Allowed,
    Refused,
}
use Outcome::{Allowed, Refused};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Action {
    Publish,
    Subscribe,
}
use Action::{Publish, Subscribe};

/// One subject and what each identity gets: `[enrolled agent of pc1, simulator]`.
struct Row {
    action: Action,
    subject: String,
    payload: Vec<u8>,
    expect: [Outcome; 2],
}

/// Every subject an agent can name, for a running session `a`.
#[rustfmt::skip]
fn rows(a: &str) -> Vec<Row> {
    let r = |action, subject: &str, payload: Vec<u8>, expect| Row {
        action, subject: subject.to_string(), payload, expect,
    };
    let none = Vec::new;
    vec![
        // Its own subjects (a check-in that shows: the user becomes "mallory").
        r(Publish, &subjects::agent_checkin(PC1), checkin(PC1, "mallory"), [Allowed, Refused]),
        r(Subscribe, &subjects::agent_command(PC1), none(), [Allowed, Refused]),
        // Another machine's.
        r(Publish, &subjects::agent_checkin(PC2), checkin(PC2, "spoofed"), [Refused, Refused]),
        r(Subscribe, &subjects::agent_command(PC2), none(), [Refused, Refused]),
        r(Subscribe, "natter.agent.*.cmd", none(), [Refused, Refused]),
        r(Subscribe, "natter.agent.>", none(), [Refused, Refused]),
        // Asking for the start page: its own machine's, with the answers in its own inbox.
        r(Publish, &subjects::agent_start_request(PC1), b"{\"v\":1}".to_vec(), [Allowed, Refused]),
        r(Subscribe, &format!("{}.>", subjects::agent_inbox_prefix(PC1)), none(), [Allowed, Refused]),
        r(Publish, &subjects::agent_start_request(PC2), b"{\"v\":1}".to_vec(), [Refused, Refused]),
        r(Subscribe, &format!("{}.>", subjects::agent_inbox_prefix(PC2)), none(), [Refused, Refused]),
        r(Subscribe, "natter.inbox.>", none(), [Refused, Refused]),
        r(Publish, &subjects::simulated_start_request(SIM), b"{\"v\":1}".to_vec(), [Refused, Allowed]),
        r(Subscribe, &format!("{}.>", subjects::SIMULATOR_INBOX_PREFIX), none(), [Refused, Allowed]),
        // The simulator's family: a simulated machine's check-in shows; one naming an enrolled
        // machine passes NATS but the fleet ignores it, and commands to an enrolled machine
        // never come this way.
        r(Publish, &subjects::simulated_checkin(PC2), checkin(PC2, "spoofed"), [Refused, Allowed]),
        r(Publish, &subjects::simulated_checkin(SIM), checkin(SIM, "simuser"), [Refused, Allowed]),
        r(Subscribe, &subjects::simulated_command(SIM), none(), [Refused, Allowed]),
        r(Subscribe, &subjects::simulated_command(PC2), none(), [Refused, Allowed]),
        r(Subscribe, "natter.simagent.>", none(), [Refused, Refused]),
        // Sessions, their events, machine requests.
        r(Publish, &subjects::session_command(a), b"{}".to_vec(), [Refused, Refused]),
        r(Subscribe, "natter.session.*.cmd", none(), [Refused, Refused]),
        r(Publish, &subjects::session_events(a), b"{}".to_vec(), [Refused, Refused]),
        r(Subscribe, "natter.events.>", none(), [Refused, Refused]),
        r(Publish, &subjects::session_signal(a), b"{}".to_vec(), [Refused, Refused]),
        r(Subscribe, "natter.signal.>", none(), [Refused, Refused]),
        r(Publish, &subjects::machine_request(PC2), b"{}".to_vec(), [Refused, Refused]),
        r(Subscribe, "natter.machine.*.req", none(), [Refused, Refused]),
        // JetStream, KV, the system account, other clients' replies, everything.
        r(Publish, "$JS.API.INFO", none(), [Refused, Refused]),
        r(Publish, "$JS.API.STREAM.MSG.GET.NATTER_EVENTS", b"{\"seq\":1}".to_vec(), [Refused, Refused]),
        r(Subscribe, "$JS.API.>", none(), [Refused, Refused]),
        r(Publish, "$KV.natter_sessions.x", b"{}".to_vec(), [Refused, Refused]),
        r(Subscribe, "$KV.>", none(), [Refused, Refused]),
        r(Publish, "$SYS.REQ.SERVER.PING.CONNZ", none(), [Refused, Refused]),
        r(Subscribe, "$SYS.>", none(), [Refused, Refused]),
        r(Publish, "_INBOX.forged", none(), [Refused, Refused]),
        r(Subscribe, "_INBOX.>", none(), [Refused, Refused]),
        r(Subscribe, ">", none(), [Refused, Refused]),
    ]
}

fn checkin(machine: &str, user: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "machine": machine, "agent_version": "x", "os": "linux", "ip": "10.0.0.9",
        "user": user, "idle_secs": 0, "interval_secs": 30
    }))
    .expect("json")
}

/// A NATS client whose server errors (permission violations) are kept for the test to read.
struct Watched {
    name: &'static str,
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    async fn connect(
        name: &'static str,
        options: async_nats::ConnectOptions,
        nats: &TestNats,
    ) -> Watched {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let kept = errors.clone();
        let client = options
            .event_callback(move |event| {
                let kept = kept.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let mut kept = kept.lock().expect("errors");
                        kept.push(e.to_string().to_lowercase());
                    }
                }
            })
            .connect(nats.url())
            .await
            .expect("connect");
        Watched {
            name,
            client,
            errors,
        }
    }

    /// Publishes or subscribes; a subscription is returned to check what it delivers.
    async fn attempt(&self, row: &Row) -> Option<async_nats::Subscriber> {
        match row.action {
            Publish => {
                let payload = row.payload.clone().into();
                let queued = self.client.publish(row.subject.clone(), payload).await;
                queued.expect("a publish is queued");
                None
            }
            Subscribe => self.client.subscribe(row.subject.clone()).await.ok(),
        }
    }

    /// What the server made of `row`, by its permission violations.
    fn outcome(&self, row: &Row) -> Outcome {
        let action = match row.action {
            Publish => "publish",
            Subscribe => "subscription",
        };
        let violation = format!("permissions violation for {action} to \"{}\"", row.subject);
        let errors = self.errors.lock().expect("errors");
        if errors.iter().any(|e| e.contains(&violation.to_lowercase())) {
            Refused
        } else {
            Allowed
        }
    }
}

/// An open subscription, who holds it and whether it should deliver.
type Held = (&'static str, String, Outcome, async_nats::Subscriber);

/// Tries every row as every identity; asserts each outcome; returns the subscriptions.
async fn try_rows(rows: &[Row], identities: [&Watched; 2]) -> Vec<Held> {
    let mut held = Vec::new();
    for row in rows {
        for (who, expected) in identities.iter().zip(row.expect) {
            if let Some(sub) = who.attempt(row).await {
                held.push((who.name, row.subject.clone(), expected, sub));
            }
        }
    }
    for who in identities {
        who.client.flush().await.expect("flush");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for row in rows {
        for (who, expected) in identities.iter().zip(row.expect) {
            let cell = format!("{}: {:?} {}", who.name, row.action, row.subject);
            assert_eq!(who.outcome(row), expected, "{cell}");
        }
    }
    held
}

/// Refused subscriptions delivered nothing; returns (holder, subject) of what was delivered.
async fn delivered(held: Vec<Held>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (name, subject, expected, mut sub) in held {
        let got = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
        if let Ok(Some(m)) = got {
            assert_eq!(expected, Allowed, "{name} read {} via {subject}", m.subject);
            out.push((name, subject));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nats_identity_reaches_only_its_own_subjects() {
    let s = Scenario::new()
        .machine(PC1, "carol")
        .machine(PC2, "erin")
        .operator("alice")
        .start()
        .await;
    let alice = s.operator("alice");
    let (a, _carol) = s.open_chat().await;
    let agent = Watched::connect("agent", s.nats.agent_options(PC1).await, &s.nats).await;
    let simulator_login = async_nats::ConnectOptions::new()
        .user_and_password("natter-simulator".into(), s.nats.simulator_password.clone());
    let simulator = Watched::connect("simulator", simulator_login, &s.nats).await;
    let held = try_rows(&rows(&a), [&agent, &simulator]).await;

    // What was allowed works: the agent's and the simulated machine's check-ins count, the
    // simulator's for the enrolled pc2 does not; each reads the chat links it may; traffic on
    // every other subject reaches none of the refused subscriptions.
    alice
        .wait_for(&format!("/api/machines/{PC1}"), |v| v["user"] == "mallory")
        .await;
    alice
        .wait_for(&format!("/api/machines/{SIM}"), |v| v["user"] == "simuser")
        .await;
    // The fleet had the spoof of pc2 (the one check-in it refuses here), and pc2 is unchanged.
    let rejected = &s.node.node.fleet_stats.rejected;
    eventually(WAIT, || async { rejected.load(Ordering::Relaxed) == 1 }).await;
    let (_, pc2) = alice.get(&format!("/api/machines/{PC2}")).await;
    assert_eq!(pc2["user"], "erin", "{pc2}");
    let (status, _) = alice
        .post(&format!("/api/sessions/{a}/end"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let again = alice.new_chat(PC1).await;
    alice.new_chat(PC2).await;
    alice.new_chat(SIM).await;
    alice.send(&again, "after", "traffic on a session").await;
    // pc2's link goes to its real agent only.
    s.agent(PC2).wait_for_chat_url().await;
    let delivered = delivered(held).await;
    for wanted in [
        ("agent", subjects::agent_command(PC1)),
        ("simulator", subjects::simulated_command(SIM)),
    ] {
        assert!(delivered.contains(&wanted), "{wanted:?}: {delivered:?}");
    }
    let leaked = ("simulator", subjects::simulated_command(PC2));
    assert!(!delivered.contains(&leaked), "{delivered:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_connects_without_a_credential_of_their_own() {
    let s = Scenario::new()
        .machine(PC1, "carol")
        .machine(PC2, "erin")
        .start()
        .await;
    let token = s.nats.enroll_token("sales.acme", 5).await;
    let pc1_seed = s.nats.machine_seed(PC1);
    let refused: [(&str, &str, Option<&str>, &str); 9] = [
        (
            "pc9.sales.acme",
            "fleet-secret",
            None,
            "unenrolled, old shared secret",
        ),
        ("pc9.sales.acme", &token, None, "a valid token but no key"),
        (
            "natter-agent",
            "fleet-secret",
            None,
            "the old shared agent user",
        ),
        (
            "natter-simulator",
            "wrong",
            None,
            "the simulator, wrong password",
        ),
        (
            "natter-simulator",
            "",
            Some(&pc1_seed),
            "the simulator, an agent's key",
        ),
        ("natter-broker", "wrong", None, "the broker, wrong password"),
        (
            "natter-system",
            "wrong",
            None,
            "the system user, wrong password",
        ),
        (PC2, "", Some(&pc1_seed), "another enrolled machine's key"),
        (
            PC2,
            &token,
            Some(&pc1_seed),
            "another machine's key and a token",
        ),
    ];
    for (user, password, seed, what) in refused {
        let mut options =
            async_nats::ConnectOptions::new().user_and_password(user.into(), password.into());
        if let Some(seed) = seed {
            options = options.nkey(seed.into());
        }
        let connected = options.connect(s.nats.url()).await;
        assert!(connected.is_err(), "{what} ({user}) connected");
    }
    s.shutdown().await;
}
