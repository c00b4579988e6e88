//! The `natter` binary itself: the embedded nats-server default (started, used, stopped with the
//! node), and configuration errors that name the bad key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn nats_server() -> PathBuf {
    match std::env::var("NATTER_NATS_SERVER") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".tools/nats/bin/nats-server"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serve_starts_and_stops_its_own_nats_server() {
    let data = tempfile::tempdir().unwrap();
    let http = free_port();
    let nats_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "serve"])
        .env("NATTER__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("NATTER__STORAGE__DATA_DIR", data.path())
        .env("NATTER__NATS__SERVER_BIN", nats_server())
        .env("NATTER__NATS__EMBEDDED_PORT", nats_port.to_string())
        .env("NATTER_NATS_BROKER_PASSWORD", "embedded-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http_get(http, "/readyz").is_some_and(|r| r.contains("200 OK")) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "natter exited during start"
        );
        assert!(
            Instant::now() < deadline,
            "natter was not ready within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The embedded server is where the node says, and it has JetStream data in the data dir.
    let url = std::fs::read_to_string(data.path().join("nats.url")).unwrap();
    assert_eq!(url.trim(), format!("nats://127.0.0.1:{nats_port}"));
    assert!(TcpStream::connect(("127.0.0.1", nats_port)).is_ok());
    assert!(data.path().join("nats").is_dir());

    // The admin CLI issues enrollment tokens through the running node's NATS.
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "admin", "enroll-token"])
        .args(["--group", "sales.acme", "--uses", "3", "--ttl", "1h"])
        .env("NATTER__STORAGE__DATA_DIR", data.path())
        .env("NATTER_NATS_BROKER_PASSWORD", "embedded-test")
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(token.trim().starts_with("nenr_"), "{token}");

    // SIGTERM: the node drains and stops its nats-server.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "natter did not stop within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "the embedded nats-server outlived the node"
    );
    assert!(!data.path().join("nats.url").exists());
}

#[test]
fn check_config_shows_no_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "check-config"])
        .env("NATTER__NATS__PASSWORD", "broker-secret-1")
        .env("NATTER__NATS__SIMULATOR_PASSWORD", "simulator-secret-2")
        .env("NATTER__NATS__SYSTEM_PASSWORD", "system-secret-3")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("simulator_password"), "{printed}");
    assert!(!printed.contains("secret-"), "{printed}");
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
