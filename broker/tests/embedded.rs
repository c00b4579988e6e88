//! The `natter` binary itself: the embedded nats-server default (started, used, stopped with the
//! node), configuration errors that name the bad key, `check-config` keeping secrets out, and
//! `admin issuer-key` printing the key the node's server trusts.

mod common;

use std::net::TcpStream;
use std::process::Command;

use common::{free_port, repo_root, spawn_node};

#[test]
fn serve_starts_and_stops_its_own_nats_server() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let mut node = spawn_node(
        data.path(),
        free_port(),
        nats_port,
        &logs.path().join("natter.log"),
    );
    node.wait_ready();
    // The embedded server is where the node says, and it has JetStream data in the data dir.
    let url = std::fs::read_to_string(data.path().join("nats.url")).unwrap();
    assert_eq!(url.trim(), node.nats_url());
    assert!(TcpStream::connect(("127.0.0.1", nats_port)).is_ok());
    assert!(data.path().join("nats").is_dir());

    // The admin CLI issues enrollment tokens through the running node's NATS.
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "admin", "enroll-token"])
        .args(["--group", "sales.acme", "--uses", "3", "--ttl", "1h"])
        .env("NATTER__STORAGE__DATA_DIR", data.path())
        .env("NATTER_NATS_BROKER_PASSWORD", common::BROKER_PASSWORD)
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(token.trim().starts_with("nenr_"), "{token}");

    // The issuer key an external nats.conf would need is the public key of the kept seed.
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "admin", "issuer-key"])
        .env("NATTER__STORAGE__DATA_DIR", data.path())
        .output()
        .unwrap();
    let seed = std::fs::read_to_string(data.path().join("callout.seed")).unwrap();
    let expected = nkeys::KeyPair::from_seed(seed.trim()).unwrap().public_key();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);

    // SIGTERM: the node drains and stops its nats-server.
    node.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "the embedded nats-server outlived the node"
    );
    assert!(!data.path().join("nats.url").exists());
}

#[test]
fn a_bad_configuration_value_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "check-config"])
        .env("NATTER__CHAT__RETENTION", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chat.retention"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "does-not-exist.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
}

#[test]
fn check_config_says_which_secrets_are_set_but_never_prints_them() {
    let (seed, _) = natter_actors::auth_callout::Callout::generate_issuer();
    let check = |envs: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_natter"))
            .current_dir(repo_root())
            .args(["--config", "natter.toml", "check-config"])
            .env("NATTER__STORAGE__DATA_DIR", "/var/lib/natter-test")
            .env_remove("NATTER_NATS_BROKER_PASSWORD")
            .env_remove("NATTER_NATS_SIMULATOR_PASSWORD")
            .env_remove("NATTER_NATS_SYSTEM_PASSWORD")
            .env_remove("NATTER_NATS_CALLOUT_SEED")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = check(&[
        ("NATTER__NATS__PASSWORD", "broker-secret-in-config"),
        (
            "NATTER__NATS__SIMULATOR_PASSWORD",
            "simulator-secret-in-config",
        ),
        ("NATTER__NATS__SYSTEM_PASSWORD", "system-secret-in-config"),
        ("NATTER__NATS__CALLOUT_SEED", &seed),
    ]);
    for secret in [
        "broker-secret-in-config",
        "simulator-secret-in-config",
        "system-secret-in-config",
        &seed,
    ] {
        assert!(
            !shown.contains(secret),
            "check-config printed a secret:\n{shown}"
        );
    }
    assert_eq!(shown.matches("\"(set)\"").count(), 4, "{shown}");

    // Nothing configured in the embedded mode: the seed is generated and kept in the data dir.
    let shown = check(&[]);
    assert!(
        shown.contains("(not set: off)"),
        "the simulator is off: {shown}"
    );
    assert!(
        shown.contains("(generated, stored in /var/lib/natter-test/callout.seed)"),
        "{shown}"
    );
}
