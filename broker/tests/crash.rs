//! A node in the embedded mode survives its own crash: `kill -9` leaves no nats-server behind,
//! the restarted node admits agents (it kept its auth callout key), an orphan server of an older
//! build is stopped before a new one opens its store, and two processes never share one store
//! or port.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{
    Node, agent_checks_in, agent_config, agent_with_key_checks_in, free_port, nats_servers_using,
    recorded_server_pid, spawn_foreign_server, spawn_node, wait_agent_admitted,
};
use natter::embedded::ServerSecrets;
use nix::sys::signal::Signal;

/// The names in a process's environment.
fn environment_names(pid: u32) -> HashSet<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            entry.split_once('=').map(|(name, _)| name.to_string())
        })
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn kill_9_leaves_no_server_and_the_restarted_node_admits_agents() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (http, nats_port) = (free_port(), free_port());
    let mut node = spawn_node(data.path(), http, nats_port, &logs.path().join("1.log"));
    node.wait_ready();
    agent_checks_in(&node.nats_url(), "pc1.crash.test").await;

    // The server sees the secrets nats.conf reads, nothing of the node's environment.
    let server = recorded_server_pid(data.path());
    let allowed: HashSet<String> = ServerSecrets::VARS
        .into_iter()
        .chain(["TZ"])
        .map(String::from)
        .collect();
    let names = environment_names(server);
    assert!(
        names.is_subset(&allowed),
        "the server's environment: {names:?}"
    );
    let seed_file = data.path().join("callout.seed");
    let seed = std::fs::read_to_string(&seed_file).unwrap();
    let mode = std::fs::metadata(&seed_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    node.signal(Signal::SIGKILL);
    node.wait_exit(Duration::from_secs(5));
    wait_until(
        Duration::from_secs(2),
        "the nats-server died with its node",
        || nats_servers_using(data.path()).is_empty(),
    );

    let mut node = spawn_node(data.path(), http, nats_port, &logs.path().join("2.log"));
    node.wait_ready();
    assert_ne!(recorded_server_pid(data.path()), server);
    assert_eq!(std::fs::read_to_string(&seed_file).unwrap(), seed);
    agent_checks_in(&node.nats_url(), "pc2.crash.test").await;
    node.stop();
    assert!(nats_servers_using(data.path()).is_empty());
}

#[tokio::test]
async fn an_orphan_server_of_an_older_build_is_stopped_and_replaced() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    // What a node built without the parent-death signal left behind: its server, with the
    // node's arguments and an issuer key the new node does not know, and its pid file.
    let mut orphan = spawn_foreign_server(data.path(), nats_port);
    std::fs::write(data.path().join("nats-server.pid"), orphan.id().to_string()).unwrap();

    let mut node = spawn_node(
        data.path(),
        free_port(),
        nats_port,
        &logs.path().join("n.log"),
    );
    node.wait_ready();
    let status = orphan.try_wait().unwrap();
    assert!(status.is_some(), "the orphan still runs: {}", node.output());
    assert_eq!(
        nats_servers_using(data.path()),
        [recorded_server_pid(data.path())]
    );
    agent_checks_in(&node.nats_url(), "pc1.orphan.test").await;
    node.stop();
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut first = spawn_node(
        data.path(),
        free_port(),
        free_port(),
        &logs.path().join("1.log"),
    );
    first.wait_ready();
    let mut second = spawn_node(
        data.path(),
        free_port(),
        free_port(),
        &logs.path().join("2.log"),
    );
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let said = second.output();
    assert!(said.contains("used by another natter node"), "{said}");
    assert!(said.contains(&first.child.id().to_string()), "{said}");
    // The first node and its server are untouched.
    assert_eq!(nats_servers_using(data.path()).len(), 1);
    first.wait_ready();
    first.stop();
}

#[test]
fn a_port_held_by_another_process_is_named_and_the_node_exits() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    let mut node = spawn_node(data.path(), free_port(), port, &logs.path().join("n.log"));
    let status = node.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let said = node.output();
    assert!(said.contains(&format!("port {port} is in use")), "{said}");
    assert!(nats_servers_using(data.path()).is_empty());
}

/// Freezes the node, kills its nats-server, lets `meanwhile` take its store or port, and thaws
/// the node: it finds its server dead and something else in the way.
fn kill_server_while_frozen(node: &Node, data: &std::path::Path, meanwhile: impl FnOnce()) {
    node.signal(Signal::SIGSTOP);
    let server = nix::unistd::Pid::from_raw(recorded_server_pid(data) as i32);
    nix::sys::signal::kill(server, Signal::SIGKILL).unwrap();
    wait_until(Duration::from_secs(2), "the server died", || {
        nats_servers_using(data).is_empty()
    });
    meanwhile();
    node.signal(Signal::SIGCONT);
}

#[tokio::test]
async fn a_server_dead_while_another_holds_the_store_is_restarted_when_it_is_free() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut node = spawn_node(
        data.path(),
        free_port(),
        free_port(),
        &logs.path().join("n.log"),
    );
    node.wait_ready();
    let mut foreign = None;
    kill_server_while_frozen(&node, data.path(), || {
        foreign = Some(spawn_foreign_server(data.path(), free_port()));
    });
    let mut foreign = foreign.unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // No second server on the store, no crash loop: one start (the first) in 3 s, and it says why.
    let server_log = std::fs::read_to_string(data.path().join("nats-server.log")).unwrap();
    assert_eq!(server_log.matches("Starting nats-server").count(), 1);
    assert_eq!(nats_servers_using(data.path()), [foreign.id()]);
    let said = node.output();
    assert!(said.contains("not restarting nats-server yet"), "{said}");
    assert!(said.contains(&format!("pid {}", foreign.id())), "{said}");

    foreign.kill().unwrap();
    foreign.wait().unwrap();
    let agent = agent_config(&node.nats_url(), "pc1.store.test").await;
    wait_agent_admitted(&agent).await;
    agent_with_key_checks_in(agent).await;
    node.stop();
}

#[test]
fn a_node_whose_port_a_stranger_took_says_so_and_exits() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut node = spawn_node(
        data.path(),
        free_port(),
        free_port(),
        &logs.path().join("n.log"),
    );
    node.wait_ready();
    let mut stranger = None;
    kill_server_while_frozen(&node, data.path(), || {
        // The dead server's sockets close a moment after its command line is gone.
        wait_until(Duration::from_secs(2), "the port is free", || {
            stranger = std::net::TcpListener::bind(("127.0.0.1", node.nats_port)).ok();
            stranger.is_some()
        });
    });
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let said = node.output();
    assert!(
        said.contains(&format!("port {} is in use", node.nats_port)),
        "{said}"
    );
    drop(stranger);
}
