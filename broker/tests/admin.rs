//! The admin CLI's enrollment-token commands against a running node (embedded mode):
//! `enroll-tokens` lists id, group, uses, expiry and state but never a token, and
//! `revoke-token <id>` makes a token enroll nobody.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BROKER_PASSWORD, free_port, repo_root, spawn_node};

/// Runs `natter admin <args>` against the node of `data`; returns success, stdout, stderr.
fn admin(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .current_dir(repo_root())
        .args(["--config", "natter.toml", "admin"])
        .args(args)
        .env("NATTER__STORAGE__DATA_DIR", data)
        .env("NATTER_NATS_BROKER_PASSWORD", BROKER_PASSWORD)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The line of the token listing with this id, if any.
fn listed(data: &Path, id: &str) -> Option<String> {
    let (ok, list, err) = admin(data, &["enroll-tokens"]);
    assert!(ok, "{err}");
    list.lines()
        .find(|l| l.starts_with(id))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A real agent's settings for `machine` with `token` as its enrollment token.
fn agent(nats_url: &str, machine: &str, token: &str) -> natter_agent::AgentConfig {
    natter_agent::AgentConfig {
        nats_user: machine.into(),
        nats_password: token.into(),
        nkey_seed: Some(nkeys::KeyPair::new_user().seed().unwrap()),
        machine: machine.into(),
        nats_url: nats_url.into(),
        nats_ca: None,
        interval: Duration::from_secs(1),
        os: "test".into(),
        ip: "127.0.0.1".into(),
    }
}

/// One connection attempt as `agent` (the auth callout enrolls it if its token allows).
async fn connects(agent: &natter_agent::AgentConfig) -> bool {
    async_nats::ConnectOptions::new()
        .user_and_password(agent.nats_user.clone(), agent.nats_password.clone())
        .nkey(agent.nkey_seed.clone().unwrap_or_default())
        .connect(&agent.nats_url)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_tokens_are_listed_without_their_secret_and_revoked_by_id() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("natter.log");
    let mut node = spawn_node(data.path(), free_port(), free_port(), &log);
    node.wait_ready();
    let issue = |group: &str, uses: &str| {
        let (ok, token, err) = admin(
            data.path(),
            &[
                "enroll-token",
                "--group",
                group,
                "--uses",
                uses,
                "--ttl",
                "1h",
            ],
        );
        assert!(ok, "{err}");
        token.trim().to_string()
    };
    let sales = issue("sales.acme", "2");
    let other = issue("globex", "1");
    // A token's id is the start of its hash: it names the token, it is not the token.
    let id = |token: &str| natter_actors::sha256_hex(token)[..16].to_string();
    let (sales_id, other_id) = (id(&sales), id(&other));

    let (ok, list, err) = admin(data.path(), &["enroll-tokens"]);
    assert!(ok, "{err}");
    for token in [&sales, &other] {
        assert!(!list.contains(&token[5..20]), "a token is listed: {list}");
    }
    let line = listed(data.path(), &sales_id).expect("the sales token is listed");
    assert!(
        line.contains("sales.acme 2/2 ") && line.ends_with("unused"),
        "{line}"
    );
    assert!(listed(data.path(), &other_id).is_some_and(|l| l.contains("globex 1/1 ")));

    // One enrollment uses it partly.
    let pc1 = agent(&node.nats_url(), "pc1.sales.acme", &sales);
    assert!(connects(&pc1).await, "pc1 enrolls with the sales token");
    let line = listed(data.path(), &sales_id).expect("still listed");
    assert!(
        line.contains(" 1/2 ") && line.ends_with("partly used"),
        "{line}"
    );

    // Revoked by a prefix of its id: gone from the list and it enrolls nobody; the agent it
    // enrolled stays enrolled, and the other token is untouched.
    let (ok, out, err) = admin(data.path(), &["revoke-token", &sales_id[..8]]);
    assert!(ok && out.contains(&sales_id), "{out}{err}");
    assert_eq!(listed(data.path(), &sales_id), None);
    assert!(listed(data.path(), &other_id).is_some());
    let pc2 = agent(&node.nats_url(), "pc2.sales.acme", &sales);
    assert!(!connects(&pc2).await, "a revoked token enrolled pc2");
    assert!(connects(&pc1).await, "pc1 is still enrolled");

    // Bad or unknown ids are clear errors.
    let (ok, _, err) = admin(data.path(), &["revoke-token", &sales_id]);
    assert!(!ok && err.contains("no enrollment token"), "{err}");
    let (ok, _, err) = admin(data.path(), &["revoke-token", "xyz"]);
    assert!(!ok && err.contains("not a token id"), "{err}");
    node.stop();
}

/// `natter admin role …`: create, list, toggle the right, assign, unassign, delete; bad names,
/// unknown roles and machine IDs are clear errors that change nothing.
#[test]
fn machine_roles_are_managed_from_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("natter.log");
    let mut node = spawn_node(data.path(), free_port(), free_port(), &log);
    node.wait_ready();
    let run = |args: &[&str]| {
        let mut all = vec!["role"];
        all.extend_from_slice(args);
        admin(data.path(), &all)
    };
    let roles = || {
        let (ok, out, err) = run(&["list"]);
        assert!(ok, "{err}");
        out.lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert!(roles().is_empty());

    let (ok, out, err) = run(&["create", "kiosk", "--may-start-chat"]);
    assert!(
        ok && out.contains("role kiosk created: may start a chat"),
        "{out}{err}"
    );
    let (ok, out, err) = run(&["create", "staff"]);
    assert!(ok && out.contains("may not start a chat"), "{out}{err}");
    let (ok, _, err) = run(&["assign", "pc1.sales.acme", "kiosk"]);
    assert!(ok, "{err}");
    assert_eq!(roles(), ["kiosk yes pc1.sales.acme", "staff no"]);

    let (ok, out, err) = run(&["set", "kiosk", "--may-start-chat", "false"]);
    assert!(
        ok && out.contains("role kiosk: may not start a chat"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["assign", "pc1.sales.acme", "staff"]);
    assert!(ok, "{err}");
    assert_eq!(roles(), ["kiosk no", "staff no pc1.sales.acme"]);

    // Clear errors, nothing changed.
    for (args, says) in [
        (vec!["create", "Kiosk Users"], "not a role name"),
        (vec!["create", "kiosk"], "already exists"),
        (
            vec!["set", "nope", "--may-start-chat", "true"],
            "no role nope",
        ),
        (vec!["assign", "pc1.sales.acme", "nope"], "no role nope"),
        (vec!["assign", "not-a-machine", "kiosk"], "not a machine ID"),
        (vec!["delete", "nope"], "no role nope"),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    let (ok, _, err) = run(&["set", "kiosk", "--may-start-chat", "maybe"]);
    assert!(!ok && err.contains("maybe"), "{err}");
    assert_eq!(roles(), ["kiosk no", "staff no pc1.sales.acme"]);

    let (ok, out, _) = run(&["unassign", "pc1.sales.acme"]);
    assert!(ok && out.contains("no role (was staff)"), "{out}");
    let (ok, _, err) = run(&["delete", "kiosk"]);
    assert!(ok, "{err}");
    assert_eq!(roles(), ["staff no"]);
    node.stop();
}
