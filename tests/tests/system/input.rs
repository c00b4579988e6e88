//! Outside input, checked everywhere: check-ins from machines (bounded fields, clamped numbers),
//! the agent's free-text detail, messages of two members who pick the same client id, and
//! ending a chat that has already ended.

use std::sync::atomic::Ordering;
use std::time::Duration;

use natter_actors::machines::MachineRecord;
use natter_agent::Presence;
use natter_system_tests::*;
use serde_json::{Value, json};

/// Waits until the node has dropped at least `n` check-ins.
async fn wait_rejected(system: &Fixture, n: u64) {
    let stats = system.node.node.fleet_stats.clone();
    eventually(WAIT, || {
        let stats = stats.clone();
        async move { stats.rejected.load(Ordering::Relaxed) >= n }
    })
    .await;
}

/// The machine's record as its agent actor stored it.
async fn stored_record(system: &Fixture, machine: &str) -> Option<MachineRecord> {
    let entry = system.node.node.stores.machines.get(machine).await.ok()??;
    serde_json::from_slice(&entry).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkin_with_a_huge_user_name_is_refused_and_never_becomes_a_display_name() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let huge = "M".repeat(100_000);
    system
        .agent("pc1.sales.acme")
        .check_in(Presence::user(Some(&huge)));
    wait_rejected(&system, 1).await;
    let alice = system.operator("alice");
    let (_, view) = alice.get("/api/machines/pc1.sales.acme").await;
    assert_eq!(
        view["user"], "carol",
        "the refused check-in changed nothing"
    );

    // The machine user of a chat is named from the last good check-in.
    let (session, _carol) = system.open_chat().await;
    let (_, view) = alice.get(&format!("/api/sessions/{session}")).await;
    let names: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "machine_user")
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol"], "{view}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_with_control_characters_a_bad_ip_or_an_array_shape_are_refused() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let client = system.nats.agent_client("pc1.sales.acme").await;
    let subject = natter_actors::subjects::agent_checkin("pc1.sales.acme");
    let checkin = |field: &str, value: Value| {
        let mut c = json!({
            "v": 1, "machine": "pc1.sales.acme", "agent_version": "1.0", "os": "linux",
            "ip": "10.0.0.7", "user": "mallory", "interval_secs": 30,
        });
        c[field] = value;
        serde_json::to_vec(&c).unwrap()
    };
    let accepted = || {
        system
            .node
            .node
            .fleet_stats
            .accepted
            .load(Ordering::Relaxed)
    };
    let accepted_before = accepted();
    for body in [
        checkin("user", json!("root\n\u{1b}[2J")),
        checkin("user", json!("\u{202e}lorollam")),
        checkin("ip", json!("10.0.0.7<script>")),
        checkin("os", json!("x".repeat(65))),
        checkin("agent_version", json!("1".repeat(33))),
        // serde would read a check-in from an array of its fields: only objects count.
        serde_json::to_vec(&json!([
            1,
            "pc1.sales.acme",
            "1.0",
            "linux",
            "10.0.0.7",
            "mallory",
            0,
            30,
            true,
            true
        ]))
        .unwrap(),
    ] {
        client.publish(subject.clone(), body.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    wait_rejected(&system, 6).await;
    let (_, view) = system
        .operator("alice")
        .get("/api/machines/pc1.sales.acme")
        .await;
    assert_eq!(view["user"], "carol", "{view}");
    assert_eq!(view["ip"], "127.0.0.1", "{view}");
    assert_eq!(
        accepted(),
        accepted_before,
        "none of them counted as a check-in"
    );
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_interval_is_clamped_to_an_hour_instead_of_online_forever() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    // A machine of its own (no running agent to overwrite what it said).
    let m = "pc2.sales.acme";
    let client = system.nats.agent_client(m).await;
    let body = json!({
        "v": 1, "machine": m, "agent_version": "1.0", "os": "linux", "ip": "10.0.0.8",
        "user": "eve", "interval_secs": u64::MAX, "idle_secs": u64::MAX,
    });
    let subject = natter_actors::subjects::agent_checkin(m);
    // Checked in again every second until it shows, as an agent does: a check-in that lands
    // while the node's lease is being renewed late (a loaded CI machine) is dropped by design.
    let payload = serde_json::to_vec(&body).unwrap();
    let repeat = {
        let (client, subject, payload) = (client.clone(), subject.clone(), payload.clone());
        tokio::spawn(async move {
            loop {
                let _ = client
                    .publish(subject.clone(), payload.clone().into())
                    .await;
                let _ = client.flush().await;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    };
    let alice = system.operator("alice");
    alice
        .wait_for(&format!("/api/machines/{m}"), |v| v["user"] == "eve")
        .await;
    repeat.abort();
    let record = stored_record(&system, m).await.expect("a record");
    assert_eq!(record.interval_secs, 3600, "clamped to an hour");
    assert_eq!(record.idle_secs, 366 * 24 * 3600, "clamped to a year");
    let last = record.last_checkin.expect("checked in");
    assert_eq!(
        record.offline_at(system.node.config.fleet.offline_after),
        Some(last + 3 * 3_600_000),
        "offline after 3 missed hours, not never"
    );
    system
        .assert_check_ins_still_count("pc1.sales.acme", "alice")
        .await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_detail_is_cut_and_stripped_of_control_characters() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let agent = system.agent("pc1.sales.acme");
    agent.fail_to_open(&"no browser\n\u{1b}[31m".repeat(10_000));
    let alice = system.operator("alice");
    let session = alice.new_chat("pc1.sales.acme").await;
    let mut events = alice.session_events(&session).await;
    let detail = loop {
        let e = events.next_chat(WAIT).await.expect("an agent event");
        if e.data["type"] == "agent" {
            assert_eq!(e.data["status"], "failed");
            break e.data["detail"].as_str().unwrap().to_string();
        }
    };
    assert_eq!(detail.chars().count(), 200, "{detail:?}");
    assert!(
        detail.starts_with("no browser [31mno browser"),
        "{detail:?}"
    );
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_with_the_same_client_id_both_land_and_retries_land_once() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, carol) = system.open_chat().await;
    let mut sees = alice.session_events(&session).await;
    let id = "0b9c6a4e-1f2d-4c3b-9a8e-7d6c5b4a3f2e";
    let (status, first) = alice.send(&session, id, "from alice").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = carol.send_as_machine_user(&session, id, "from carol").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["duplicate"], false, "{second}");
    assert_ne!(first["seq"], second["seq"]);
    // Each sender's retry is answered with its own first sequence and adds nothing.
    let (_, retry) = alice.send(&session, id, "from alice").await;
    assert_eq!(
        (&retry["seq"], &retry["duplicate"]),
        (&first["seq"], &json!(true))
    );
    let (_, retry) = carol.send_as_machine_user(&session, id, "from carol").await;
    assert_eq!(
        (&retry["seq"], &retry["duplicate"]),
        (&second["seq"], &json!(true))
    );

    let messages = sees.read_messages(2).await;
    assert_eq!(texts(&messages), ["from alice", "from carol"]);
    sees.expect_quiet(Duration::from_millis(500)).await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_an_ended_chat_is_409_for_both_sides_and_adds_nothing() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    let alice = system.operator("alice");
    let (session, carol) = system.open_chat().await;
    let mut sees = alice.session_events(&session).await;
    let (status, ended) = carol
        .post(&format!("/m/{session}/api/end"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert!(ended["seq"].as_u64().is_some(), "{ended}");
    let already = json!({"error": "conflict", "message": "the chat has already ended"});
    for (who, path) in [
        (&carol, format!("/m/{session}/api/end")),
        (&alice, format!("/api/sessions/{session}/end")),
    ] {
        let (status, body) = who.post(&path, &json!({})).await;
        assert_eq!((status, &body), (StatusCode::CONFLICT, &already), "{path}");
    }
    // One `ended` event, whoever asked how often.
    loop {
        let e = sees.next_chat(WAIT).await.expect("the ended event");
        if e.data["type"] == "ended" {
            break;
        }
    }
    sees.expect_quiet(Duration::from_millis(500)).await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stored_before_the_checks_is_bounded_when_a_node_starts() {
    let system = Scenario::alice_and_carol_on_pc1().start().await;
    // What a node without the checks stored for a machine that sent a 100 KB user name and an
    // endless interval.
    let m = "pc2.sales.acme";
    let mut old = MachineRecord::provisioned(m);
    old.user = Some("M".repeat(100_000));
    old.last_checkin = Some(natter_actors::now_ms());
    old.audit_done = true;
    old.interval_secs = u64::MAX;
    let machines = system.node.node.stores.machines.clone();
    machines
        .put(m, serde_json::to_vec(&old).unwrap().into())
        .await
        .unwrap();
    let system = system.restart_node().await;
    let alice = system.operator("alice");
    let bounded = "M".repeat(64);
    alice
        .wait_for(&format!("/api/machines/{m}"), |v| v["user"] == bounded)
        .await;
    let record = stored_record(&system, m).await.expect("a record");
    assert_eq!(record.user.as_deref(), Some(bounded.as_str()));
    assert_eq!(record.interval_secs, 3600);
    system.shutdown().await;
}
