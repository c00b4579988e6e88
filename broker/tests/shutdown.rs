//! Shutdown under load (issue 13, item 6): `natter serve` exits within 5 s of SIGTERM whatever
//! state NATS is in (frozen with SIGSTOP, killed), in the embedded mode and against an external
//! server, and leaves no nats-server of its own behind. The bound asserted is a generous 10 s
//! (a loaded test machine); each test prints the time it measured.

mod common;

use std::time::{Duration, Instant};

use common::{
    BROKER_PASSWORD, Node, free_port, nats_servers_using, node_command, recorded_server_pid,
    spawn_foreign_server, spawn_node,
};
use nix::sys::signal::Signal;

/// What the test allows; the design target is 5 s.
const EXIT_BOUND: Duration = Duration::from_secs(10);

fn signal_pid(pid: u32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// SIGTERM to the node; returns how long it took to exit (it must within [`EXIT_BOUND`]).
fn sigterm_and_time_exit(node: &mut Node, what: &str) -> Duration {
    let sent = Instant::now();
    node.signal(Signal::SIGTERM);
    node.wait_exit(EXIT_BOUND);
    let took = sent.elapsed();
    eprintln!("natter serve, {what}: exited {took:?} after SIGTERM");
    took
}

fn embedded_node(data: &std::path::Path, logs: &std::path::Path) -> Node {
    let mut node = spawn_node(data, free_port(), free_port(), &logs.join("n.log"));
    node.wait_ready();
    node
}

#[test]
fn a_node_whose_embedded_server_is_frozen_exits_on_sigterm_and_leaves_no_server() {
    let (data, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node = embedded_node(data.path(), logs.path());
    let server = recorded_server_pid(data.path());
    signal_pid(server, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    sigterm_and_time_exit(&mut node, "embedded server frozen");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !nats_servers_using(data.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the frozen server outlived its node"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_whose_embedded_server_was_just_killed_exits_on_sigterm() {
    let (data, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node = embedded_node(data.path(), logs.path());
    signal_pid(recorded_server_pid(data.path()), Signal::SIGKILL);
    sigterm_and_time_exit(&mut node, "embedded server killed");
    let output = node.output();
    assert!(nats_servers_using(data.path()).is_empty(), "{output}");
}

#[test]
fn a_node_whose_external_server_is_frozen_exits_on_sigterm() {
    let (data, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = spawn_foreign_server(store.path(), port);
    let http = free_port();
    let mut command = node_command(data.path(), http, &logs.path().join("n.log"));
    command
        .env("NATTER__NATS__URL", format!("nats://127.0.0.1:{port}"))
        .env("NATTER_NATS_BROKER_PASSWORD", BROKER_PASSWORD);
    let mut node = Node {
        child: command.spawn().unwrap(),
        http,
        nats_port: port,
        log: logs.path().join("n.log"),
    };
    node.wait_ready();
    signal_pid(server.id(), Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    sigterm_and_time_exit(&mut node, "external server frozen");
}

#[test]
fn a_healthy_node_exits_cleanly_on_sigterm() {
    let (data, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node = embedded_node(data.path(), logs.path());
    sigterm_and_time_exit(&mut node, "healthy");
    let status = node.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", node.output());
    assert!(nats_servers_using(data.path()).is_empty());
}
