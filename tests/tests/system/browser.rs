//! The web UI in a real browser (Debian chromium driven by playwright-core, through the scripts
//! in tests/browser/ and their shared harness.mjs): login, machine list, a chat window per
//! machine titled with its machine ID, both sides talking, text shown as text, ten windows
//! sharing one event stream, a window beyond the stream's limit saying so, and the operator's
//! options (tone, auto-close) applied in every chat window, a restart re-opening the machine
//! user's window (opened / failed), a chat waiting for a stopped agent and opening when it checks
//! in again, a 10k-message history shown whole, once, in order, and
//! operators chatting with each other (the live list of operators online, the incoming-chat
//! popup and notification). Runs when NATTER_BROWSER_TESTS=1.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use natter_system_tests::*;

/// Browser tests run when NATTER_BROWSER_TESTS=1 (scripts/test sets it).
fn browser_tests_enabled() -> bool {
    let on = std::env::var("NATTER_BROWSER_TESTS").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "skipped: set NATTER_BROWSER_TESTS=1 (scripts/test does) to run the browser test"
        );
    }
    on
}

/// `node tests/browser/<script>` against `node`, logged in as `operator` (with the harness's
/// password for that operator); screenshots of a failed check are kept in
/// [`screenshot_dir`] (`_scratch`, the test's temporary directory, goes away with the test).
fn browser_script(
    script: &str,
    node: &TestNode,
    operator: &str,
    _scratch: &Path,
) -> tokio::process::Command {
    let artifacts = screenshot_dir();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo_root().join("tests/browser").join(script))
        .env("NATTER_URL", &node.base)
        .env("NATTER_OPERATOR", operator)
        .env("NATTER_PASSWORD", operator_password(operator))
        .env("NATTER_ARTIFACTS", &artifacts)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Where failed browser checks leave their screenshots (`<script>-check<N>-page<M>.png`):
/// `$NATTER_ARTIFACTS`, else `target/browser-artifacts`; kept after the test, for CI to upload.
fn screenshot_dir() -> std::path::PathBuf {
    std::env::var_os("NATTER_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/browser-artifacts"))
}

/// Runs a browser script to its end, within `limit`.
async fn finish_within(limit: Duration, script: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(limit, script.output())
        .await
        .unwrap_or_else(|_| panic!("browser test finishes within {limit:?}"))
        .expect("node runs")
}

/// Prints the script's report; fails unless every check ran and passed.
fn assert_every_check_passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "browser checks failed (screenshots in {}):\n{stdout}\n{stderr}",
        screenshot_dir().display()
    );
    assert!(
        !stdout.contains("skip:"),
        "every browser check ran:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_works_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machines: Vec<String> = (1..=10).map(|i| format!("pc{i}.sales.acme")).collect();
    let users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let mut scenario = Scenario::new().operator("alice");
    for (m, u) in machines.iter().zip(&users) {
        scenario = scenario.machine(m, u.as_str());
    }
    let s = scenario.start().await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    std::fs::write(&url_file, "").unwrap();
    // The first machine's agent writes the URL it is asked to open, as a real agent would open it.
    let opened = s.agent(&machines[0]).opener.opened.clone();
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
    let output = finish_within(
        Duration::from_secs(240),
        browser_script("chat.mjs", &s.node, "alice", dir.path())
            .env("NATTER_MACHINE", &machines[0])
            .env("NATTER_MACHINES", machines.join(","))
            .env("NATTER_AGENT_URL_FILE", &url_file),
    )
    .await;
    watcher.abort();
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Writes each URL the agent of `machine` is asked to open into `file` (as a real agent would
/// open it), until aborted.
fn write_opened_urls(s: &Fixture, machine: &str, file: &Path) -> tokio::task::JoinHandle<()> {
    std::fs::write(file, "").unwrap();
    let opened = s.agent(machine).opener.opened.clone();
    let file = file.to_path_buf();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let last = {
                let urls = opened.lock().unwrap();
                (urls.len() > seen).then(|| (urls.len(), urls.last().unwrap().1.clone()))
            };
            if let Some((n, url)) = last {
                seen = n;
                std::fs::write(&file, url).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// F12 in a real browser: the operator's options are kept on the server and applied in every
/// chat window (the tone on messages sent and received, closing when the other party ends the
/// chat, or staying open and read-only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_options_apply_in_every_chat_window_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "pc1.sales.acme";
    let s = Scenario::new()
        .operator("alice")
        .machine(machine, "carol")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    let watcher = write_opened_urls(&s, machine, &url_file);
    let output = finish_within(
        Duration::from_secs(180),
        browser_script("options.mjs", &s.node, "alice", dir.path())
            .env("NATTER_MACHINE", machine)
            .env("NATTER_AGENT_URL_FILE", &url_file),
    )
    .await;
    watcher.abort();
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 11 item 5 in a real browser: "Restart chat" in the operator's window of an ended chat
/// asks the agent again and shows its answer, "opened" or "failed" (then "Ask the machine
/// again"). The script tells the test when the agent's opener must fail (a control file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_chat_reopens_the_users_window_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "pc1.sales.acme";
    let s = Scenario::new()
        .operator("alice")
        .machine(machine, "carol")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    let control = dir.path().join("agent-control.txt");
    std::fs::write(&control, "").unwrap();
    let watcher = write_opened_urls(&s, machine, &url_file);
    let mut child = browser_script("restart.mjs", &s.node, "alice", dir.path())
        .env("NATTER_MACHINE", machine)
        .env("NATTER_AGENT_URL_FILE", &url_file)
        .env("NATTER_AGENT_CONTROL", &control)
        .spawn()
        .expect("node runs");
    let fail_with = s.agent(machine).opener.fail_with.clone();
    let mut script = ControlledScript::new(&mut child, &control);
    let status = loop {
        match script.next(&["fail", "open"]).await {
            Step::Asked("fail") => {
                *fail_with.lock().unwrap() = Some("no browser on this machine".into());
                script.answer("failing");
            }
            Step::Asked(_) => {
                *fail_with.lock().unwrap() = None;
                script.answer("opening");
            }
            Step::Exited(status) => break status,
        }
    };
    let output = collect_output(status, &mut child).await;
    watcher.abort();
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 12 item 2 in a real browser: the operator's window of a chat opened while the machine's
/// agent is stopped says it waits for the machine; when the agent starts again and checks in, the
/// user's window opens and shows the message written meanwhile. The script tells the test when
/// to stop and start the agent (a control file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_waits_for_the_machine_and_opens_at_its_next_check_in_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "pc1.sales.acme";
    let mut s = Scenario::new()
        .operator("alice")
        .machine(machine, "carol")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    let control = dir.path().join("agent-control.txt");
    std::fs::write(&control, "").unwrap();
    std::fs::write(&url_file, "").unwrap();
    let mut child = browser_script("checkin.mjs", &s.node, "alice", dir.path())
        .env("NATTER_MACHINE", machine)
        .env("NATTER_AGENT_URL_FILE", &url_file)
        .env("NATTER_AGENT_CONTROL", &control)
        .spawn()
        .expect("node runs");
    let mut watcher = None;
    let mut script = ControlledScript::new(&mut child, &control);
    let status = loop {
        match script.next(&["stop", "start"]).await {
            Step::Asked("stop") => {
                s.stop_agent(machine).await;
                script.answer("stopped");
            }
            Step::Asked(_) => {
                s.add_machine(machine, "carol").await;
                watcher = Some(write_opened_urls(&s, machine, &url_file));
                script.answer("started");
            }
            Step::Exited(status) => break status,
        }
    };
    let output = collect_output(status, &mut child).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    assert_every_check_passed(&output);
    // One window: the agent was asked once, after it came back.
    let opened = s.agent(machine).opener.opened.lock().unwrap().len();
    assert_eq!(opened, 1, "links the agent was asked to open");
    s.shutdown().await;
}

/// A browser script that asks the test to act through a control file: it writes a command
/// there and waits for the test's answer (another word) in the same file.
struct ControlledScript<'a> {
    child: &'a mut tokio::process::Child,
    control: &'a Path,
    deadline: tokio::time::Instant,
}

/// What a [`ControlledScript`] did next.
enum Step {
    /// It wrote this command (one of those [`ControlledScript::next`] was given).
    Asked(&'static str),
    Exited(std::process::ExitStatus),
}

impl<'a> ControlledScript<'a> {
    fn new(child: &'a mut tokio::process::Child, control: &'a Path) -> Self {
        ControlledScript {
            child,
            control,
            deadline: tokio::time::Instant::now() + Duration::from_secs(180),
        }
    }

    /// Waits until the script writes one of `commands` or exits (within 3 minutes in all).
    async fn next(&mut self, commands: &[&'static str]) -> Step {
        loop {
            let written = std::fs::read_to_string(self.control).unwrap_or_default();
            if let Some(command) = commands.iter().find(|c| **c == written.trim()) {
                return Step::Asked(command);
            }
            if let Some(status) = self.child.try_wait().expect("node runs") {
                return Step::Exited(status);
            }
            assert!(
                tokio::time::Instant::now() < self.deadline,
                "browser test finishes within 3 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tells the script its command was carried out.
    fn answer(&self, word: &str) {
        std::fs::write(self.control, word).unwrap();
    }
}

/// The output of a script that has exited with `status`.
async fn collect_output(
    status: std::process::ExitStatus,
    child: &mut tokio::process::Child,
) -> Output {
    use tokio::io::AsyncReadExt;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).await.unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).await.unwrap();
    }
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// F10/F11 in a real browser: status icons change live (no reload), Quick View on hover, the
/// filter, and an operator with a narrower scope sees fewer machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machine_list_is_live_scoped_and_filterable_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let visible = ["pc1.sales.acme", "pc2.east.sales.acme", "kiosk1.sales.acme"];
    let hidden = ["pc3.support.acme", "srv1.dc.globex"];
    let mut scenario = Scenario::new().scoped_operator("bob", &["sales.acme"]);
    for m in visible.iter().chain(hidden.iter()) {
        let user = (!m.starts_with("kiosk")).then_some("someone");
        scenario = scenario.machine(m, user);
    }
    let s = scenario.start().await;
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.txt");
    std::fs::write(&status_file, "").unwrap();
    let child = browser_script("machines.mjs", &s.node, "bob", dir.path())
        .env("NATTER_EXPECT_MACHINES", visible.join(","))
        .env("NATTER_HIDDEN_MACHINES", hidden.join(","))
        .env("NATTER_STATUS_FILE", &status_file)
        .env("NATTER_FILTER", "*.east.*")
        .spawn()
        .expect("node runs");
    // When the page shows the list, log a user off pc1 (user → online) and say so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&status_file).unwrap_or_default();
        if text.starts_with("ready") {
            let pc1 = &s.agent("pc1.sales.acme").handle;
            pc1.set_presence(natter_agent::Presence::user(None));
            pc1.checkin_now();
            std::fs::write(&status_file, "changed:pc1.sales.acme:online\n").unwrap();
            break;
        }
        if text.starts_with("failed") || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("browser test finishes")
        .expect("node runs");
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 11 item 6 in a real browser: a chat window opening a session with a 10k-message
/// history has all of it in the page's text, once, in order (older blocks as text until near
/// the screen), then a live message after it; the oldest message, found by its text and
/// scrolled to, shows as a message of its own; a second window of the same browser (history
/// from the shared worker) too. How fast is the bench's `browser-join`
/// phase, never an assertion here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_window_shows_a_10k_message_history_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "pc1.sales.acme";
    let s = Scenario::new()
        .operator("alice")
        .machine(machine, "carol")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let output = finish_within(
        Duration::from_secs(300),
        browser_script("join.mjs", &s.node, "alice", dir.path()).env("NATTER_MACHINE", machine),
    )
    .await;
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 11, items 1 and 2, in a real browser: the Chat page lists the operators online whose
/// scope covers what the filter shows, live under a filter change and a logout; clicking one
/// starts a chat; the other gets the incoming-chat popup (kept over a reload) and, with the page
/// in the background, a browser notification; answering from either opens the chat window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_chat_with_each_other_from_the_chat_page_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    // alice sees every machine; bob only sales.acme, so a list showing pc2.support.acme leaves
    // him out.
    let s = Scenario::new()
        .operator("alice")
        .scoped_operator("bob", &["sales.acme"])
        .machine("pc1.sales.acme", "carol")
        .machine("pc2.support.acme", "dave")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let output = finish_within(
        Duration::from_secs(180),
        browser_script("incoming.mjs", &s.node, "alice", dir.path())
            .env("NATTER_OTHER_OPERATOR", "bob")
            .env("NATTER_OTHER_PASSWORD", operator_password("bob"))
            .env("NATTER_OTHER_SCOPE", "sales.acme"),
    )
    .await;
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 11, item 3 in a real browser: the machine-role right on and off. The admin manages the
/// role on the Chat page; the machine user's request (the agent's control socket, as
/// `natter-agent chat` sends it) is refused while the right is off; with it on, the start page
/// lists the operator, and a click starts the chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machine_role_right_on_and_off_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "pc1.sales.acme";
    let s = Scenario::new()
        .operator("alice")
        .machine(machine, "carol")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    let watcher = write_opened_urls(&s, machine, &url_file);
    let socket = dir.path().join("agent.sock");
    let listener = natter_agent::control::bind(&socket).expect("control socket");
    let stop = tokio_util::sync::CancellationToken::new();
    let control = tokio::spawn(natter_agent::control::serve(
        listener,
        socket.clone(),
        s.agent(machine).handle.clone(),
        stop.clone(),
    ));
    let output = finish_within(
        Duration::from_secs(180),
        browser_script("roles.mjs", &s.node, "alice", dir.path())
            .env("NATTER_OPERATOR_NAME", "alice (operator)")
            .env("NATTER_MACHINE", machine)
            .env("NATTER_CONTROL_SOCKET", &socket)
            .env("NATTER_AGENT_URL_FILE", &url_file),
    )
    .await;
    watcher.abort();
    stop.cancel();
    let _ = control.await;
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 12, items 3 and 4, in a real browser: "Hand over" in a chat window hands the chat to
/// an operator on the Chat page (his popup, he answers and sees the whole chat, the giver's
/// window says to whom it went); the window's transcript links give what both windows showed;
/// and (issue 12, item 5) after the giver's browser is closed and started again, her Chat page
/// offers the chat again and one click shows it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_handed_over_and_its_transcript_saved_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let s = Scenario::alice_and_carol_on_pc1()
        .operator("bob")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let output = finish_within(
        Duration::from_secs(180),
        browser_script("handoff.mjs", &s.node, "alice", dir.path())
            .env("NATTER_OTHER_OPERATOR", "bob")
            .env("NATTER_OTHER_PASSWORD", operator_password("bob"))
            .env("NATTER_MACHINE", "pc1.sales.acme"),
    )
    .await;
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 12 item 6 in a real browser: a machine with two users; the operator picks the second
/// on the Chat page (and the first in the Quick View), each chat window is titled with the
/// machine and its user, and only that user's desktop session gets the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_with_the_second_of_two_users_reaches_only_that_user_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "ts1.sales.acme";
    let s = Scenario::new()
        .operator("alice")
        .machine_with(
            machine,
            natter_agent::Presence::users(&[("carol", "console"), ("dave", "rdp-tcp#3")]),
            Duration::from_secs(30),
        )
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let files = [
        dir.path().join("carol-url.txt"),
        dir.path().join("dave-url.txt"),
    ];
    // Each user's desktop: the URL the agent was asked to open in that session.
    let opened_in = s.agent(machine).opener.opened_in.clone();
    let sessions = ["console", "rdp-tcp#3"];
    for f in &files {
        std::fs::write(f, "").unwrap();
    }
    let watcher = tokio::spawn({
        let files = files.clone();
        async move {
            loop {
                let opened = opened_in.lock().unwrap().clone();
                for (session, file) in sessions.iter().zip(&files) {
                    let last = opened
                        .iter()
                        .rev()
                        .find(|(s, _)| s.as_deref() == Some(*session));
                    if let Some((_, url)) = last {
                        std::fs::write(file, url).unwrap();
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let file_list = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let output = finish_within(
        Duration::from_secs(180),
        browser_script("users.mjs", &s.node, "alice", dir.path())
            .env("NATTER_MACHINE", machine)
            .env("NATTER_USERS", "carol,dave")
            .env("NATTER_URL_FILES", file_list),
    )
    .await;
    watcher.abort();
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Typing indicators and read receipts (issue 12, item 1) in a real browser, both ways: "… is
/// typing" in the operator's and the machine user's window while the other types, gone when the
/// input is emptied, the message arrives or nothing more comes; "Seen" with its time under the
/// newest of one's messages the other window has shown; neither a line of the transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_seen_show_in_both_windows_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    let machine = "pc1.sales.acme";
    let s = Scenario::alice_and_carol_on_pc1().start().await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("agent-url.txt");
    let watcher = write_opened_urls(&s, machine, &url_file);
    let output = finish_within(
        Duration::from_secs(180),
        browser_script("typing.mjs", &s.node, "alice", dir.path())
            .env("NATTER_MACHINE", machine)
            .env("NATTER_USER", "carol")
            .env("NATTER_AGENT_URL_FILE", &url_file),
    )
    .await;
    watcher.abort();
    assert_every_check_passed(&output);
    s.shutdown().await;
}

/// Issue 13 item 5 in a real browser: 250 machines on the Chat page, a page of 200 at a time
/// with the count, Next / Previous, a status change on the page shown live, a filter starting at
/// its first page. (That changes of machines off the page are not sent is checked on the stream's
/// bytes in `machines.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machine_list_pages_through_250_machines_in_a_real_browser() {
    if !browser_tests_enabled() {
        return;
    }
    const COUNT: usize = 250;
    let s = Scenario::new().operator("alice").start().await;
    let machine = |i: usize| format!("m{i:03}.paging.acme");
    let client = s.nats.broker_client().await;
    let request = |m: &str, body: serde_json::Value| {
        client.request(
            natter_actors::subjects::machine_request(m),
            serde_json::to_vec(&body).unwrap().into(),
        )
    };
    for answer in futures::future::join_all(
        (0..COUNT).map(|i| request(&machine(i), serde_json::json!({"op": "provision"}))),
    )
    .await
    {
        answer.expect("the fleet provisions the machine");
    }
    s.operator("alice")
        .wait_for("/api/machines?limit=1", |v| v["total"] == COUNT)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.txt");
    std::fs::write(&control, "").unwrap();
    let mut child = browser_script("paging.mjs", &s.node, "alice", dir.path())
        .env("NATTER_MACHINES", COUNT.to_string())
        .env("NATTER_CONTROL", &control)
        .spawn()
        .expect("node runs");
    let mut script = ControlledScript::new(&mut child, &control);
    let status = loop {
        match script.next(&["suspend"]).await {
            Step::Asked(_) => {
                let answer = request(
                    &machine(210),
                    serde_json::json!({"op": "suspend", "suspended": true}),
                )
                .await
                .expect("the fleet answers");
                assert!(
                    String::from_utf8_lossy(&answer.payload).contains("suspended"),
                    "{answer:?}"
                );
                script.answer("suspended");
            }
            Step::Exited(status) => break status,
        }
    };
    let output = collect_output(status, &mut child).await;
    assert_every_check_passed(&output);
    s.shutdown().await;
}
