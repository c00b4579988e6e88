//! F10/F11: check-in states (every transition, timers included), live status on the machines
//! stream, scopes and the Machine ID / Group ID filter, malformed check-ins.

use std::time::Duration;

use natter_agent::Presence;
use natter_system_tests::*;
use serde_json::{Value, json};

/// Reads the machines stream until `machine` shows `status`; returns that view.
async fn wait_status(sse: &mut Sse, machine: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = sse
            .next(left)
            .await
            .unwrap_or_else(|| panic!("{machine} never became {status}"));
        let views: Vec<Value> = match e.event.as_str() {
            "machines" => e.data.as_array().cloned().unwrap_or_default(),
            "machine" => vec![e.data.clone()],
            _ => continue,
        };
        if let Some(v) = views
            .into_iter()
            .find(|v| v["id"] == machine && v["status"] == status)
        {
            return v;
        }
    }
}

/// The machine IDs in a list of machine views.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

async fn admin_request(nats: &TestNats, machine: &str, request: Value) -> Value {
    let client = nats.broker_client().await;
    let answer = client
        .request(
            natter_actors::subjects::machine_request(machine),
            serde_json::to_vec(&request).unwrap().into(),
        )
        .await
        .expect("the fleet answers");
    serde_json::from_slice(&answer.payload).unwrap()
}

/// The check-in interval of the agent in the state walk.
const WALK_INTERVAL: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_in_state_and_transition_reaches_the_browser_live() {
    walk_every_state(None).await;
}

/// The same walk with agent actors going back to records as soon as they are idle: every check-in,
/// deadline and request finds the machine as a record first, and must come out the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_and_transition_also_reaches_the_browser_when_actors_rest_at_once() {
    walk_every_state(Some(Duration::from_millis(1))).await;
}

async fn walk_every_state(rest_after: Option<Duration>) {
    let mut system = Scenario::new()
        .config(move |c| {
            c.fleet.offline_after = 2;
            c.fleet.sweep = Duration::from_millis(50);
            if let Some(rest_after) = rest_after {
                c.fleet.rest_after = rest_after;
            }
        })
        .operator("alice")
        .start()
        .await;
    let alice = system.operator("alice");
    let m = "pc1.sales.acme";

    // Provisioned, never checked in.
    let provisioned = admin_request(&system.nats, m, json!({"op": "provision"})).await;
    assert_eq!(
        provisioned["Ok"]["status"], "never_checked_in",
        "{provisioned}"
    );
    let mut sse = alice.events("/api/machines/events", None).await;
    assert_eq!(sse.status, StatusCode::OK, "{}", sse.error_body);
    wait_status(&mut sse, m, "never_checked_in").await;

    presence_states_reach_the_browser(&mut system, &mut sse, m).await;
    no_check_in_means_offline_and_no_chat(&mut system, &alice, &mut sse, m).await;
    suspended_machines_ignore_check_ins_until_resumed(&system, &alice, &mut sse, m).await;
    quick_view_has_the_details(&alice, m).await;
    system.shutdown().await;
}

/// Online, first audit pending, then each presence state in turn.
async fn presence_states_reach_the_browser(system: &mut Fixture, sse: &mut Sse, m: &str) {
    system
        .add_machine_with(
            m,
            Presence {
                audit_done: false,
                ..Presence::user(None)
            },
            WALK_INTERVAL,
        )
        .await;
    wait_status(sse, m, "waiting_first_audit").await;
    let agent = system.agent(m);
    agent.check_in(Presence::user(None));
    wait_status(sse, m, "online").await;
    agent.check_in(Presence::user(Some("carol")));
    let v = wait_status(sse, m, "user").await;
    assert_eq!(v["user"], "carol");
    agent.check_in(Presence {
        idle_secs: 601,
        ..Presence::user(Some("carol"))
    });
    wait_status(sse, m, "idle").await;
    agent.check_in(Presence {
        remote_control: false,
        ..Presence::user(Some("carol"))
    });
    wait_status(sse, m, "remote_disabled").await;
}

/// No check-in for 2 intervals: offline, by the fleet's timer alone; then back with a user.
async fn no_check_in_means_offline_and_no_chat(
    system: &mut Fixture,
    alice: &Browser,
    sse: &mut Sse,
    m: &str,
) {
    system.stop_agent(m).await;
    wait_status(sse, m, "offline").await;
    let (status, body) = alice.chat_with(m).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an offline machine cannot chat: {body}"
    );

    // Back online with a user.
    system
        .add_machine_with(m, Presence::user(Some("carol")), WALK_INTERVAL)
        .await;
    wait_status(sse, m, "user").await;
}

/// Suspended: check-ins change nothing and nobody can chat; resumed: the next one counts.
async fn suspended_machines_ignore_check_ins_until_resumed(
    system: &Fixture,
    alice: &Browser,
    sse: &mut Sse,
    m: &str,
) {
    let agent = system.agent(m);
    let suspended =
        admin_request(&system.nats, m, json!({"op": "suspend", "suspended": true})).await;
    assert_eq!(suspended["Ok"]["status"], "suspended", "{suspended}");
    wait_status(sse, m, "suspended").await;
    agent.check_in(Presence::user(Some("somebody-else")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = alice.get(&format!("/api/machines/{m}")).await;
    assert_eq!(view["status"], "suspended");
    assert_eq!(
        view["user"], "carol",
        "a suspended agent's check-ins change nothing"
    );
    assert!(
        system
            .node
            .node
            .fleet_stats
            .ignored
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let (status, body) = alice.chat_with(m).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Resumed: the next check-in counts again.
    admin_request(
        &system.nats,
        m,
        json!({"op": "suspend", "suspended": false}),
    )
    .await;
    agent.handle.checkin_now();
    // (Resuming re-derives "user" from the last counted check-in first; then the new one lands.)
    while wait_status(sse, m, "user").await["user"] != "somebody-else" {}
}

/// Quick View has the details.
async fn quick_view_has_the_details(alice: &Browser, m: &str) {
    let (status, view) = alice.get(&format!("/api/machines/{m}")).await;
    assert_eq!(status, StatusCode::OK);
    for key in [
        "id",
        "status",
        "last_checkin",
        "user",
        "idle_secs",
        "os",
        "agent_version",
        "ip",
    ] {
        assert!(!view[key].is_null(), "Quick View lacks {key}: {view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_only_their_scope_everywhere() {
    let system = Scenario::new()
        .machine("pc1.sales.acme", "someone")
        .machine("pc2.east.sales.acme", "someone")
        .machine("pc3.support.acme", "someone")
        .machine("pc4.presales.acme", "someone")
        .machine("srv1.dc.globex", "someone")
        .operator("alice")
        .scoped_operator("bob", &["sales.acme"])
        .start()
        .await;
    let (alice, bob) = (system.operator("alice"), system.operator("bob"));
    let (_, me) = bob.get("/api/me").await;
    assert_eq!(me["scopes"], json!(["sales.acme"]));

    let (_, all) = alice.get("/api/machines").await;
    assert_eq!(ids(&all).len(), 5);
    let (_, mine) = bob.get("/api/machines").await;
    assert_eq!(ids(&mine), ["pc1.sales.acme", "pc2.east.sales.acme"]);

    // Filters narrow within the scope, never widen it.
    let (_, f) = alice.get("/api/machines?filter=*.sales.*").await;
    assert_eq!(ids(&f), ["pc1.sales.acme", "pc2.east.sales.acme"]);
    let (_, f) = alice.get("/api/machines?filter=acme").await;
    assert_eq!(ids(&f).len(), 4);
    let (_, f) = alice.get("/api/machines?filter=pc1.*").await;
    assert_eq!(ids(&f), ["pc1.sales.acme"]);
    let (_, f) = bob.get("/api/machines?filter=*globex").await;
    assert_eq!(ids(&f), Vec::<String>::new());
    let (status, _) = bob.get("/api/machines?filter=%3Cscript%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Outside the scope a machine does not exist: details, chats, direct session URLs.
    let (status, body) = bob.get("/api/machines/srv1.dc.globex").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        !body.to_string().contains("someone"),
        "leaks nothing: {body}"
    );
    let (status, _) = bob.chat_with("pc3.support.acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let foreign = alice.new_chat("srv1.dc.globex").await;
    let (status, _) = bob.get(&format!("/api/sessions/{foreign}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = bob
        .post(&format!("/api/sessions/{foreign}/join"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let sse = bob.session_events(&foreign).await;
    assert_eq!(sse.status, StatusCode::NOT_FOUND);
    // In scope, the Join link works.
    let ours = alice.new_chat("pc2.east.sales.acme").await;
    let (status, _) = bob
        .post(&format!("/api/sessions/{ours}/join"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // The live stream never mentions a machine outside the scope, even when it changes.
    let mut stream = bob.events("/api/machines/events", None).await;
    let first = stream.next(WAIT).await.expect("snapshot");
    assert_eq!(first.event, "machines");
    assert_eq!(ids(&first.data), ["pc1.sales.acme", "pc2.east.sales.acme"]);
    system
        .agent("srv1.dc.globex")
        .check_in(Presence::user(None));
    system
        .agent("pc1.sales.acme")
        .check_in(Presence::user(None));
    let mut seen = Vec::new();
    while let Some(e) = stream.next(Duration::from_millis(700)).await {
        // (The page's other events: the operators to chat with, incoming chats.)
        if e.event == "machine" {
            seen.push(e.data["id"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(seen.contains(&"pc1.sales.acme".to_string()), "{seen:?}");
    assert!(
        seen.iter().all(|id| id.ends_with(".sales.acme")),
        "{seen:?}"
    );
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_check_ins_are_counted_and_dropped_and_the_fleet_keeps_working() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let client = system.nats.agent_client("pc1.sales.acme").await;
    let subject = natter_actors::subjects::agent_checkin("pc1.sales.acme");
    let bad: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{}".to_vec(),
        br#"{"v":2,"machine":"pc1.sales.acme","agent_version":"x","os":"x","ip":"x","user":null,"interval_secs":30}"#.to_vec(),
        // A check-in naming another machine than its subject.
        br#"{"v":1,"machine":"pc9.sales.acme","agent_version":"x","os":"x","ip":"x","user":"eve","interval_secs":30}"#.to_vec(),
        vec![0xff, 0xfe, 0x00],
    ];
    for body in &bad {
        client
            .publish(subject.clone(), body.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let stats = system.node.node.fleet_stats.clone();
    eventually(WAIT, || {
        let stats = stats.clone();
        async move { stats.rejected.load(std::sync::atomic::Ordering::Relaxed) >= 5 }
    })
    .await;
    let alice = system.operator("alice");
    let (status, _) = alice.get("/api/machines/pc9.sales.acme").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a forged body registers nothing"
    );
    system
        .assert_check_ins_still_count("pc1.sales.acme", "alice")
        .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_status_survives_a_node_restart_and_goes_offline_on_time() {
    let mut system = Scenario::new()
        .config(|c| {
            c.fleet.offline_after = 1;
            c.fleet.sweep = Duration::from_millis(50);
        })
        .machine_with(
            "pc1.sales.acme",
            Presence::user(Some("carol")),
            Duration::from_millis(800),
        )
        .operator("alice")
        .start()
        .await;
    system.stop_agent("pc1.sales.acme").await;
    // A new node knows the machine from KV and still notices it went quiet.
    let system = system.restart_node().await;
    system
        .operator("alice")
        .wait_for("/api/machines/pc1.sales.acme", |v| v["status"] == "offline")
        .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_refuses_an_agent_that_acts_as_another_agent() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let mallory = system.nats.agent_client("pc1.sales.acme").await;
    let mut errors = Vec::new();
    // A forged check-in for pc2, and an attempt to read pc2's commands.
    let forged = serde_json::to_vec(&json!({
        "v": 1, "machine": "pc2.sales.acme", "agent_version": "x", "os": "x", "ip": "x",
        "user": "eve", "interval_secs": 30
    }))
    .unwrap();
    mallory
        .publish(
            natter_actors::subjects::agent_checkin("pc2.sales.acme"),
            forged.into(),
        )
        .await
        .unwrap();
    match mallory
        .subscribe(natter_actors::subjects::agent_command("pc2.sales.acme"))
        .await
    {
        Ok(mut sub) => {
            use futures::StreamExt;
            // The server refuses the subscription: it never delivers anything.
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {
                errors.push(format!("read another agent's command: {m:?}"));
            }
        }
        Err(e) => errors.push(format!("(refused at once: {e})")),
    }
    mallory.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = system
        .operator("alice")
        .get("/api/machines/pc2.sales.acme")
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the forged check-in registered pc2"
    );
    assert!(errors.iter().all(|e| e.starts_with('(')), "{errors:?}");
    // A wrong secret, or a user name that is not a machine ID, does not connect at all.
    for (user, pass) in [
        ("pc2.sales.acme", "wrong"),
        ("natter-agent", system.nats.simulator_password.as_str()),
    ] {
        let refused = async_nats::ConnectOptions::new()
            .user_and_password(user.into(), pass.into())
            .connect(system.nats.url())
            .await;
        assert!(refused.is_err(), "{user} connected");
    }
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_lists_every_known_machine() {
    let mut system = Scenario::new().operator("alice").start().await;
    admin_request(
        &system.nats,
        "newpc.east.sales.acme",
        json!({"op": "provision"}),
    )
    .await;
    system.add_machine("srv1.dc.globex", "frank").await;
    admin_request(
        &system.nats,
        "srv1.dc.globex",
        json!({"op": "suspend", "suspended": true}),
    )
    .await;
    system.stop_agent("srv1.dc.globex").await;
    let system = system.restart_node().await;
    let (_, list) = system.operator("alice").get("/api/machines").await;
    assert_eq!(
        ids(&list),
        ["newpc.east.sales.acme", "srv1.dc.globex"],
        "{list}"
    );
    system.shutdown().await;
}

/// Machine `i` of the paging tests: `m000.paging.acme` … (zero-padded: ID order is number order).
fn paged(i: usize) -> String {
    format!("m{i:03}.paging.acme")
}

/// The next `machines`, `machine` or `total` event of a Chat page stream (others skipped).
async fn next_list_event(sse: &mut Sse) -> SseEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = sse.next(left).await.expect("a machine list event");
        if matches!(e.event.as_str(), "machines" | "machine" | "total") {
            return e;
        }
    }
}

/// Suspends machine `m` and waits until the gateway's list shows it so (its change has been
/// handed to every stream by then).
async fn suspend_listed(system: &Fixture, alice: &Browser, m: &str) {
    admin_request(&system.nats, m, json!({"op": "suspend", "suspended": true})).await;
    alice
        .wait_for(&format!("/api/machines?filter={m}"), |v| {
            v[0]["status"] == "suspended"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_machine_stream_shows_its_page_with_the_count_and_only_its_machines_changes() {
    let system = Scenario::new().operator("alice").start().await;
    let alice = system.operator("alice");
    let client = system.nats.broker_client().await;
    let provision = serde_json::to_vec(&json!({"op": "provision"})).unwrap();
    futures::future::join_all((0..250).map(|i| {
        let subject = natter_actors::subjects::machine_request(&paged(i));
        client.request(subject, provision.clone().into())
    }))
    .await;
    alice
        .wait_for("/api/machines?filter=paging.acme&limit=1", |v| {
            v["total"] == 250
        })
        .await;

    // The plain list pages the same way.
    let (status, page) = alice
        .get("/api/machines?filter=paging.acme&offset=240&limit=20")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (&page["total"], &page["offset"], &page["limit"]),
        (&json!(250), &json!(240), &json!(20))
    );
    let want: Vec<String> = (240..250).map(paged).collect();
    assert_eq!(ids(&page["machines"]), want);

    // The second page of 100: machines 100 … 199 of 250.
    let mut sse = alice
        .events(
            "/api/machines/events?filter=paging.acme&offset=100&limit=100",
            None,
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK, "{}", sse.error_body);
    let first = next_list_event(&mut sse).await;
    assert_eq!(first.event, "machines");
    assert_eq!(first.data["total"], 250, "{}", first.data["total"]);
    assert_eq!(
        (&first.data["offset"], &first.data["limit"]),
        (&json!(100), &json!(100))
    );
    let want: Vec<String> = (100..200).map(paged).collect();
    assert_eq!(ids(&first.data["machines"]), want);

    // A machine on the page: its change comes live.
    suspend_listed(&system, &alice, &paged(150)).await;
    let e = next_list_event(&mut sse).await;
    assert_eq!(
        (e.event.as_str(), &e.data["id"]),
        ("machine", &json!(paged(150)))
    );
    assert_eq!(e.data["status"], "suspended");

    // Machines before and after the page change: nothing is sent. The next event is the change
    // of a machine on the page made after them.
    suspend_listed(&system, &alice, &paged(10)).await;
    suspend_listed(&system, &alice, &paged(220)).await;
    suspend_listed(&system, &alice, &paged(151)).await;
    let e = next_list_event(&mut sse).await;
    assert_eq!(
        (e.event.as_str(), &e.data["id"]),
        ("machine", &json!(paged(151))),
        "{e:?}"
    );

    // A new machine before the page moves its rows: the page again, with the count.
    admin_request(
        &system.nats,
        "m050a.paging.acme",
        json!({"op": "provision"}),
    )
    .await;
    let e = next_list_event(&mut sse).await;
    assert_eq!(e.event, "machines", "{e:?}");
    assert_eq!(e.data["total"], 251);
    let want: Vec<String> = (99..199).map(paged).collect();
    assert_eq!(ids(&e.data["machines"]), want);

    // A new machine after the page: only the count.
    admin_request(&system.nats, "m999.paging.acme", json!({"op": "provision"})).await;
    let e = next_list_event(&mut sse).await;
    assert_eq!(
        (e.event.as_str(), &e.data),
        ("total", &json!({"total": 252}))
    );

    // A page past the end is empty, with the count (the page steps back).
    let (_, past) = alice
        .get("/api/machines?filter=paging.acme&offset=300&limit=100")
        .await;
    assert_eq!(past["machines"], json!([]));
    assert_eq!(past["total"], 252);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paging_parameters_are_refused_with_a_clear_message() {
    let system = Scenario::new().operator("alice").start().await;
    let alice = system.operator("alice");
    for (query, says) in [
        ("limit=0", "limit: a number from 1 to 2000"),
        ("limit=2001", "limit: a number from 1 to 2000"),
        ("limit=ten", "limit: a number from 1 to 2000"),
        ("offset=-1", "offset: a number from 0"),
        ("offset=1.5&limit=10", "offset: a number from 0"),
    ] {
        for path in ["/api/machines", "/api/machines/events"] {
            let (status, body) = alice.get(&format!("{path}?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}?{query}: {body}");
            assert_eq!(body["error"], "bad_request", "{body}");
            assert_eq!(body["message"], says, "{path}?{query}");
        }
    }
    // Without paging parameters: the whole list, as before.
    let (status, all) = alice.get("/api/machines").await;
    assert_eq!(status, StatusCode::OK);
    assert!(all.is_array(), "{all}");
    system.shutdown().await;
}

/// A machine whose agent keeps checking in with nothing new is a record, not an actor: its
/// actor goes away, its check-ins still count, a machine request sees the latest check-in time
/// (newer than what KV holds), and a change starts an actor that writes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_machine_rests_as_a_record_and_its_changes_are_written_without_an_actor() {
    let system = Scenario::new()
        .config(|c| c.fleet.rest_after = Duration::from_millis(200))
        .machine_with(
            "pc1.sales.acme",
            Presence::user(Some("carol")),
            Duration::from_millis(300),
        )
        .operator("alice")
        .start()
        .await;
    let m = "pc1.sales.acme";
    let alice = system.operator("alice");
    alice
        .wait_for(&format!("/api/machines/{m}"), |v| v["status"] == "user")
        .await;
    let node = &system.node.node;
    let stats = node.fleet_stats.clone();
    let accepted = || stats.accepted.load(std::sync::atomic::Ordering::Relaxed);
    let writes = || stats.writes.load(std::sync::atomic::Ordering::Relaxed);
    // Resting: no agent actor, while check-ins keep being counted without writes.
    eventually(WAIT, || {
        let idle = node.agent_actors() == 0;
        async move { idle }
    })
    .await;
    let (accepted_then, writes_then) = (accepted(), writes());
    eventually(WAIT, || {
        let more = accepted() >= accepted_then + 3;
        async move { more }
    })
    .await;
    assert_eq!(writes(), writes_then, "quiet check-ins write nothing");
    // KV has the check-in time of the last write.
    let js = async_nats::jetstream::new(system.nats.broker_client().await);
    let bucket = natter_actors::store::MACHINES_BUCKET;
    let kv = js.get_key_value(bucket).await.expect("the machines bucket");
    let stored: Value = serde_json::from_slice(&kv.get(m).await.unwrap().unwrap()).unwrap();
    let viewed = admin_request(&system.nats, m, json!({"op": "view"})).await;
    assert!(
        viewed["Ok"]["last_checkin"].as_u64() > stored["last_checkin"].as_u64(),
        "the view has the latest check-in, not the last written one: {viewed} vs {stored}"
    );
    assert_eq!(viewed["Ok"]["status"], "user", "{viewed}");
    // The view woke an actor; it rests again.
    eventually(WAIT, || {
        let idle = node.agent_actors() == 0;
        async move { idle }
    })
    .await;
    // A change: written at once by the supervisor (no actor wakes for it: one would stay at
    // least `rest_after`) and seen by the browser.
    system.agent(m).check_in(Presence::user(None));
    let kv = &kv;
    eventually(WAIT, || async move {
        let stored = kv.get(m).await.unwrap().unwrap();
        serde_json::from_slice::<Value>(&stored).unwrap()["status"] == "online"
    })
    .await;
    assert_eq!(node.agent_actors(), 0, "a check-in's change needs no actor");
    // Counted when the server's ack comes back, which can be after the value is readable.
    eventually(WAIT, || {
        let counted = writes() > writes_then;
        async move { counted }
    })
    .await;
    alice
        .wait_for(&format!("/api/machines/{m}"), |v| {
            v["status"] == "online" && v["user"].is_null()
        })
        .await;
    // A request right after a change is taken sees it: the actor it wakes starts from the new
    // record, even when KV has not acknowledged it yet.
    let accepted_then = accepted();
    system.agent(m).check_in(Presence::user(Some("dave")));
    eventually(WAIT, || {
        // (+2: a periodic check-in sent just before the change may come first)
        let taken = accepted() >= accepted_then + 2;
        async move { taken }
    })
    .await;
    let viewed = admin_request(&system.nats, m, json!({"op": "view"})).await;
    assert_eq!(viewed["Ok"]["user"], "dave", "{viewed}");
    assert_eq!(viewed["Ok"]["status"], "user", "{viewed}");
    system.shutdown().await;
}
