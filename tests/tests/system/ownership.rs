//! Several nodes on one nats-server: every partition of sessions and machines has exactly one
//! owner, shares are fair, and a node that drains or dies hands its partitions to the others
//! while sends through the other nodes keep landing once and in order.

use std::time::{Duration, Instant};

use futures::future::join_all;
use natter_actors::subjects::{PARTITIONS, partition_of};
use natter_system_tests::{Browser, StatusCode, TestAgent, TestNats, TestNode, eventually, texts};
use serde_json::json;

/// Generous bound for ownership to settle (a joiner takes one partition per 300 ms tick).
const SETTLE: Duration = Duration::from_secs(20);

async fn start_nodes(nats: &TestNats, n: usize) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(TestNode::start(nats.node_config()).await);
    }
    nodes
}

fn owned_counts(nodes: &[TestNode]) -> Vec<usize> {
    nodes.iter().map(|n| n.node.partitions.count()).collect()
}

/// The node that owns `key`'s partition now.
fn owner_of<'a>(nodes: &'a [TestNode], key: &str) -> Option<&'a TestNode> {
    let p = partition_of(key);
    nodes.iter().find(|n| n.node.partitions.owns(p))
}

/// Waits until every partition is owned by exactly one of `nodes` and their shares are within
/// one of each other.
async fn wait_balanced(nodes: &[TestNode]) {
    eventually(SETTLE, || async {
        let counts = owned_counts(nodes);
        let (min, max) = (counts.iter().min(), counts.iter().max());
        counts.iter().sum::<usize>() == PARTITIONS as usize
            && max.zip(min).is_some_and(|(max, min)| max - min <= 1)
            && (0..PARTITIONS)
                .all(|p| nodes.iter().filter(|n| n.node.partitions.owns(p)).count() == 1)
    })
    .await;
}

/// Reads the leases bucket: each partition's key names one of `nodes`, and each node holds
/// exactly the partitions it believes it owns.
async fn assert_bucket_agrees(nats: &TestNats, nodes: &[TestNode]) {
    let js = async_nats::jetstream::new(nats.broker_client().await);
    let bucket = js
        .get_key_value(natter_actors::store::PARTITIONS_BUCKET)
        .await
        .expect("partitions bucket");
    for p in 0..PARTITIONS {
        let key = natter_actors::subjects::partition_lease_key(p);
        let holder = bucket.get(&key).await.expect("read lease").expect("lease");
        let holder = String::from_utf8(holder.to_vec()).expect("utf-8");
        let owner = nodes
            .iter()
            .find(|n| n.node.partitions.owns(p))
            .unwrap_or_else(|| panic!("partition {p} has no owner"));
        // The holder is `<node id>/<this start's ULID>`.
        assert!(
            holder.starts_with(&format!("{}/", owner.node.node_id)),
            "partition {p}: held by {holder}, owned by {}",
            owner.node.node_id
        );
    }
}

/// One chat: its session, the operator's browser and the machine user's.
struct Chat {
    session: String,
    operator: Browser,
    user: Browser,
}

/// Opens a chat from `operator` with `agent`'s machine; the machine user logs in at `user_base`.
async fn open_chat(operator: &Browser, agent: &TestAgent, user_base: &str) -> Chat {
    let session = operator.new_chat(&agent.machine).await;
    let url = agent.wait_for_chat_url().await;
    let token = url.split_once("#t=").expect("a chat link").1;
    let user = Browser::new(user_base);
    let (status, view) = user
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    Chat {
        session,
        operator: operator.clone(),
        user,
    }
}

/// Sends `n` messages in a chat, alternating operator and machine user and spreading them over
/// `bases` (gateways); each is answered 201 before the next. Returns the texts in send order.
async fn converse(chat: &Chat, tag: String, n: usize, bases: &[String]) -> Vec<String> {
    let mut sent = Vec::new();
    for k in 0..n {
        let base = &bases[k % bases.len()];
        let text = format!("{tag}-{k}");
        let id = format!("c{k}");
        let (status, answer) = if k % 2 == 0 {
            chat.operator.at(base).send(&chat.session, &id, &text).await
        } else {
            chat.user
                .at(base)
                .send_as_machine_user(&chat.session, &id, &text)
                .await
        };
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{text} through {base}: {answer}"
        );
        sent.push(text);
    }
    sent
}

/// Both participants' streams (opened at `base`) carry exactly `sent`, once each, in order.
async fn assert_delivered(chat: &Chat, base: &str, sent: &[String]) {
    for (who, browser) in [("operator", &chat.operator), ("machine user", &chat.user)] {
        let path = if who == "operator" {
            format!("/api/events?sessions={}", chat.session)
        } else {
            format!("/m/{}/api/events", chat.session)
        };
        let mut stream = browser.at(base).events(&path, None).await;
        assert_eq!(stream.status, StatusCode::OK, "{}", stream.error_body);
        let got = texts(&stream.read_messages(sent.len()).await);
        assert_eq!(got, sent, "{who} of {}", chat.session);
        stream.expect_quiet(Duration::from_millis(300)).await;
    }
}

/// Machine IDs `pc<i>.own.acme`, the first `n`.
fn machine_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("pc{i}.own.acme")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_three_nodes_share_the_partitions_and_every_send_lands_once() {
    let nats = TestNats::start().await;
    let mut nodes = start_nodes(&nats, 2).await;
    wait_balanced(&nodes).await;
    assert_bucket_agrees(&nats, &nodes).await;
    assert_eq!(owned_counts(&nodes), vec![16, 16]);
    // Operators see it: each node is ready and reports its share.
    for node in &nodes {
        let browser = Browser::new(&node.base);
        let (status, _) = browser.get("/readyz").await;
        assert_eq!(status, StatusCode::OK);
        let (status, metrics) = browser.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let line = format!(
            "natter_partitions_owned{{node=\"{}\"}} 16",
            node.node.node_id
        );
        let text = metrics.as_str().expect("metrics text");
        assert!(text.contains(&line), "no {line} in {text}");
    }

    nodes.push(TestNode::start(nats.node_config()).await);
    wait_balanced(&nodes).await;
    assert_bucket_agrees(&nats, &nodes).await;
    let mut counts = owned_counts(&nodes);
    counts.sort();
    assert_eq!(counts, vec![10, 11, 11]);

    // Six chats, each message through another node's gateway, all chats at once.
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let alice = nodes[0].operator("alice").await;
    let mut agents = Vec::new();
    for machine in machine_ids(6) {
        agents.push(TestAgent::start(&nats, &nodes[0], &machine, Some("carol")).await);
    }
    let mut chats = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        chats.push(open_chat(&alice, agent, &bases[i % bases.len()]).await);
    }
    let sent = join_all(
        chats
            .iter()
            .enumerate()
            .map(|(i, chat)| converse(chat, format!("chat{i}"), 12, &bases)),
    )
    .await;
    for (i, (chat, sent)) in chats.iter().zip(&sent).enumerate() {
        assert_delivered(chat, &bases[(i + 1) % bases.len()], sent).await;
    }
    for agent in agents {
        agent.stop().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_its_partitions_over_and_sends_keep_landing() {
    let nats = TestNats::start().await;
    let mut nodes = start_nodes(&nats, 2).await;
    wait_balanced(&nodes).await;
    let stay = nodes[0].base.clone();
    let alice = nodes[0].operator("alice").await;
    let mut agents = Vec::new();
    for machine in machine_ids(4) {
        agents.push(TestAgent::start(&nats, &nodes[0], &machine, Some("carol")).await);
    }
    let mut chats = Vec::new();
    for agent in &agents {
        chats.push(open_chat(&alice, agent, &stay).await);
    }

    // Sends run through the staying node while the other drains.
    let leaving = nodes.pop().expect("two nodes");
    let sending = join_all(chats.iter().enumerate().map(|(i, chat)| {
        let bases = vec![stay.clone()];
        async move { converse(chat, format!("chat{i}"), 16, &bases).await }
    }));
    let draining = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        leaving.shutdown().await;
        started
    };
    let (sent, drain_started) = tokio::join!(sending, draining);
    eventually(SETTLE, || async {
        nodes[0].node.partitions.count() == PARTITIONS as usize
    })
    .await;
    println!(
        "after the drain began, the staying node owned all {PARTITIONS} partitions within {:?}",
        drain_started.elapsed()
    );
    assert_bucket_agrees(&nats, &nodes).await;
    for (chat, sent) in chats.iter().zip(&sent) {
        assert_delivered(chat, &stay, sent).await;
    }
    // New chats and sends land on the one node left.
    let more = converse(&chats[0], "after".into(), 4, std::slice::from_ref(&stay)).await;
    assert_eq!(more.len(), 4);
    for agent in agents {
        agent.stop().await;
    }
    nodes.pop().expect("one node").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_partitions_are_taken_over_and_its_sessions_and_machines_answer_elsewhere() {
    let nats = TestNats::start().await;
    let mut nodes = start_nodes(&nats, 3).await;
    wait_balanced(&nodes).await;
    let alice = nodes[0].operator("alice").await;
    let mut agents = Vec::new();
    for machine in machine_ids(6) {
        agents.push(TestAgent::start(&nats, &nodes[0], &machine, Some("carol")).await);
    }
    let mut chats = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        chats.push(open_chat(&alice, agent, &nodes[i % 3].base).await);
    }
    // The victim: the owner of the first chat's session, and a machine it owns.
    let victim_at = nodes
        .iter()
        .position(|n| n.node.partitions.owns(partition_of(&chats[0].session)))
        .expect("an owner");
    let victim_id = nodes[victim_at].node.node_id.clone();
    let victim_partitions = nodes[victim_at].node.partitions.owned();
    let orphan = (0..)
        .map(|i| format!("orphan{i}.own.acme"))
        .find(|m| victim_partitions.contains(&partition_of(m)))
        .expect("a machine in the victim's partitions");
    let survivor = (victim_at + 1) % 3;
    agents.push(TestAgent::start(&nats, &nodes[survivor], &orphan, Some("carol")).await);

    let victim = nodes.remove(victim_at);
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let killed = Instant::now();
    victim.kill().await;
    // Every chat keeps going through the surviving gateways, the dead node's sessions included,
    // while the survivors take its partitions over.
    let sending = join_all(
        chats
            .iter()
            .enumerate()
            .map(|(i, chat)| converse(chat, format!("chat{i}"), 8, &bases)),
    );
    let takeover = async {
        eventually(SETTLE, || async {
            owned_counts(&nodes).iter().sum::<usize>() == PARTITIONS as usize
        })
        .await;
        killed.elapsed()
    };
    let (sent, took) = tokio::join!(sending, takeover);
    println!(
        "the survivors owned every partition of the dead node ({} of them) {took:?} after the kill",
        victim_partitions.len(),
    );
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    assert!(owner_of(&nodes, &chats[0].session).is_some());
    wait_balanced(&nodes).await;
    assert_bucket_agrees(&nats, &nodes).await;
    assert!(
        nodes.iter().all(|n| n.node.node_id != victim_id),
        "the dead node is gone"
    );
    for (i, (chat, sent)) in chats.iter().zip(&sent).enumerate() {
        assert_delivered(chat, &bases[i % bases.len()], sent).await;
    }

    // The dead node's machine: its check-ins count again, and Quick View answers live.
    let agent = agents.iter().find(|a| a.machine == orphan).expect("agent");
    agent.check_in(natter_agent::Presence::user(Some("dave")));
    alice
        .at(&bases[0])
        .wait_for(&format!("/api/machines/{orphan}"), |v| v["user"] == "dave")
        .await;

    for agent in agents {
        agent.stop().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// A check-in that comes while its partition has no live owner (its node died, the survivor may
/// not take the partition before the dead node's lease runs out) is taken by the node that
/// takes the partition over instead of being lost: the agents here check in once an hour, so
/// only that check-in can show the new user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_while_its_partition_has_no_owner_waits_for_the_next_owner() {
    let nats = TestNats::start().await;
    let mut nodes = start_nodes(&nats, 2).await;
    wait_balanced(&nodes).await;
    let alice = nodes[0].operator("alice").await;
    let victim_partitions = nodes[1].node.partitions.owned();
    let orphans: Vec<String> = (0..)
        .map(|i| format!("orphan{i}.own.acme"))
        .filter(|m| victim_partitions.contains(&partition_of(m)))
        .take(8)
        .collect();
    let mut agents = Vec::new();
    for machine in &orphans {
        let presence = natter_agent::Presence::user(Some("carol"));
        let hour = Duration::from_secs(3600);
        agents.push(TestAgent::start_with(&nats, &nodes[0], machine, presence, hour).await);
    }
    let victim = nodes.remove(1);
    victim.kill().await;
    let survivor = &nodes[0];
    // At once: the dead node's leases have not run out, so nobody may act for its partitions.
    let mut while_unowned = 0;
    for agent in &agents {
        if !survivor.node.partitions.owns(partition_of(&agent.machine)) {
            while_unowned += 1;
        }
        agent.check_in(natter_agent::Presence::user(Some("dave")));
    }
    assert!(
        while_unowned > 0,
        "the survivor took every partition before a check-in was sent: nothing was tested"
    );
    for machine in &orphans {
        alice
            .wait_for(&format!("/api/machines/{machine}"), |v| v["user"] == "dave")
            .await;
    }
    for agent in agents {
        agent.stop().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_a_crash_under_its_id_takes_its_partitions_back() {
    let nats = TestNats::start().await;
    let mut config = nats.node_config();
    config.node.id = "crashing-node".into();
    let node = TestNode::start(config.clone()).await;
    assert_eq!(node.node.partitions.count(), PARTITIONS as usize);
    node.kill().await;
    let restarted = Instant::now();
    let node = TestNode::start(config).await;
    eventually(SETTLE, || async {
        node.node.partitions.count() == PARTITIONS as usize
    })
    .await;
    println!(
        "the restarted node owned every partition {:?} after its start began",
        restarted.elapsed()
    );
    assert_bucket_agrees(&nats, std::slice::from_ref(&node)).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_given_the_same_id_never_own_one_partition_together() {
    // A copied configuration: both nodes call themselves "twin".
    let nats = TestNats::start().await;
    let mut config = nats.node_config();
    config.node.id = "twin".into();
    let first = TestNode::start(config.clone()).await;
    let second = TestNode::start(config).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for p in 0..PARTITIONS {
            assert!(
                !(first.node.partitions.owns(p) && second.node.partitions.owns(p)),
                "both twins own partition {p}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every partition has one owner (waited for: a late renewal under load may leave one
    // between owners for a moment, as a snapshot once showed in CI with 31 of 32).
    let nodes = [first, second];
    eventually(SETTLE, || async {
        nodes
            .iter()
            .map(|n| n.node.partitions.count())
            .sum::<usize>()
            == PARTITIONS as usize
    })
    .await;
    let [first, second] = nodes;
    first.shutdown().await;
    second.shutdown().await;
}
