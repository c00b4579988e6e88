//! The web UI in a real browser (Debian chromium driven by playwright-core): login, machine
//! list, a chat window per machine titled with its machine ID, both sides talking, text shown as
//! text, and ten windows sharing one event stream. Runs when NATTER_BROWSER_TESTS=1.

use std::time::Duration;

use natter_system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_works_in_a_real_browser() {
    if std::env::var("NATTER_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set NATTER_BROWSER_TESTS=1 (scripts/test does) to run the browser test"
        );
        return;
    }
    let nats = TestNats::start().await;
    let node = TestNode::start(nats.node_config()).await;
    let machines: Vec<String> = (1..=10).map(|i| format!("pc{i}.sales.acme")).collect();
    let mut agents = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        agents.push(TestAgent::start(&nats, &node, m, Some(&format!("user{i}"))).await);
    }
    node.add_operator("alice", "Alice Admin", "alice-password")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    std::fs::write(&url_file, "").unwrap();
    // The first machine's agent writes the URL it is asked to open, as a real agent would open it.
    let opened = agents[0].opener.opened.clone();
    let url_file2 = url_file.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let urls: Vec<String> = opened
                .lock()
                .unwrap()
                .iter()
                .map(|(_, u)| u.clone())
                .collect();
            if urls.len() > seen {
                seen = urls.len();
                std::fs::write(&url_file2, urls.last().unwrap()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let script = repo_root().join("tests/browser/chat.mjs");
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(&script)
            .env("NATTER_URL", &node.base)
            .env("NATTER_OPERATOR", "alice")
            .env("NATTER_PASSWORD", "alice-password")
            .env("NATTER_MACHINE", &machines[0])
            .env("NATTER_MACHINES", machines.join(","))
            .env("NATTER_AGENT_URL_FILE", &url_file)
            .env("NATTER_ARTIFACTS", dir.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("browser test finishes within 4 minutes")
    .expect("node runs");
    watcher.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("skip:"),
        "every browser check ran:\n{stdout}"
    );
    node.shutdown().await;
}
