//! The `natter` binary with TLS to NATS (embedded mode): `nats.tls_cert`/`tls_key` make its
//! nats-server serve TLS only, `nats.tls_ca` makes the node and the admin CLI trust it, and an
//! agent configured as `natter-agent --nats-ca` configures it checks in; a client without TLS
//! does not get in. The CA is made at run time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BROKER_PASSWORD, free_port, repo_root, spawn_node_with};

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// (CA, certificate, key).
fn write_test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Natter test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let server_cert = server_params
        .signed_by(&server_key, &Issuer::new(ca_params, ca_key))
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("server.pem", server_cert.pem()),
        write("server-key.pem", server_key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_nats_over_tls_to_agents_that_trust_its_ca() {
    let data = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_test_ca(certs.path());
    let tls_env = [
        ("NATTER__NATS__TLS_CERT", cert.as_path()),
        ("NATTER__NATS__TLS_KEY", key.as_path()),
        ("NATTER__NATS__TLS_CA", ca.as_path()),
    ];
    let log = data.path().join("natter.log");
    let nats_port = free_port();
    let mut node = spawn_node_with(data.path(), free_port(), nats_port, &log, &tls_env);
    // Ready means the node reached its own nats-server, over TLS.
    node.wait_ready();
    let url = std::fs::read_to_string(data.path().join("nats.url")).unwrap();
    let url = url.trim().to_string();

    // The admin CLI reaches it the same way (with nats.tls_ca) and issues the agent's token.
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "admin", "enroll-token"])
        .args(["--group", "sales.acme", "--uses", "1", "--ttl", "1h"])
        .env("NATTER__STORAGE__DATA_DIR", data.path())
        .env("NATTER__NATS__TLS_CA", &ca)
        .env("NATTER_NATS_BROKER_PASSWORD", BROKER_PASSWORD)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // An agent with the CA (`--nats-ca`) enrolls and checks in.
    let machine = "pc1.sales.acme";
    let agent = natter_agent::AgentConfig {
        nats_url: url.clone(),
        nats_ca: Some(ca.clone()),
        nats_user: machine.into(),
        nats_password: token,
        nkey_seed: Some(nkeys::KeyPair::new_user().seed().unwrap()),
        machine: machine.into(),
        interval: Duration::from_secs(1),
        os: "test".into(),
        ip: "127.0.0.1".into(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(natter_agent::run(
        agent,
        natter_agent::AgentHandle::new(natter_agent::Presence::user(Some("carol"))),
        std::sync::Arc::new(natter_agent::RecordingOpener::default()),
        stop.clone(),
    ));
    let broker = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), BROKER_PASSWORD.into())
        .add_root_certificates(ca.clone())
        .require_tls(true)
        .connect(&url)
        .await
        .expect("the broker user connects with the CA");
    let machines = async_nats::jetstream::new(broker)
        .get_key_value("natter_machines")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let record = machines.get(machine).await.ok().flatten();
        let user = record
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v["user"].clone());
        if user.as_ref().is_some_and(|u| u == "carol") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no check-in over TLS within 15 s: {}",
            node.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without the CA nobody gets in (the server wants TLS), not even with the broker's password.
    let plain = async_nats::ConnectOptions::new()
        .user_and_password("natter-broker".into(), BROKER_PASSWORD.into())
        .connect(format!("nats://127.0.0.1:{nats_port}"))
        .await;
    assert!(plain.is_err(), "a plain connection got in");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
    node.stop();
}
