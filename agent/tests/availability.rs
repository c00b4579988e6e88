//! The `natter-agent` binary against a real nats-server on loopback that comes and goes: it keeps
//! trying to connect (also after an authorization failure), resumes checking in after the server
//! restarts, and exits within 5 s of SIGTERM whatever the server does. The server here is a plain
//! one with two password users (the simulator and the machine, whose "password" is the agent's
//! enrollment token; the server ignores its key): these tests are about the connection, not the
//! broker and its auth callout, which `tests/tests/system/agent.rs` adds. And with `--users os`
//! (Linux) the check-ins report the sessions a (recorded) `loginctl` lists.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::process::{Child, Command};

const USER: &str = "natter-simulator";
const PASSWORD: &str = "agent-test-secret";
const MACHINE: &str = "pc1.sales.acme";
/// What the agent promises: it exits within this long after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Generous bound for things that take milliseconds to a few seconds.
const WAIT: Duration = Duration::from_secs(15);

fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATTER_NATS_SERVER")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats/bin/nats-server");
    if local.is_file() {
        local
    } else {
        PathBuf::from("nats-server")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// A nats-server on `port` whose users (simulator, machine) have `password`; killed when
/// dropped.
struct Server {
    child: Child,
    port: u16,
    _config: tempfile::NamedTempFile,
}

impl Server {
    async fn start(port: u16, password: &str) -> Server {
        let config = tempfile::NamedTempFile::new().expect("config file");
        let users = format!(
            "authorization {{ users: [ {{user: \"{USER}\", password: \"{password}\"}}, \
             {{user: \"{MACHINE}\", password: \"{password}\"}} ] }}"
        );
        std::fs::write(config.path(), users).expect("write config");
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-c")
            .arg(config.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server (set NATTER_NATS_SERVER)");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "nats-server up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Server {
            child,
            port,
            _config: config,
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a hung
    /// server or a network that drops everything. It is killed when dropped (SIGKILL works on a
    /// stopped process).
    fn freeze(&self) {
        let pid = self.child.id().expect("nats-server pid") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP");
    }

    /// Kills the server (SIGKILL: gone without a goodbye).
    async fn kill(mut self) {
        self.child.kill().await.expect("kill nats-server");
    }

    /// Subscribes to every real agent's check-in, as the broker would.
    async fn checkins(&self) -> async_nats::Subscriber {
        self.checkins_on(natter_actors::subjects::ALL_CHECKINS)
            .await
    }

    /// Subscribes to every check-in on `subjects` (real or simulated agents').
    async fn checkins_on(&self, subjects: &'static str) -> async_nats::Subscriber {
        let client = async_nats::ConnectOptions::new()
            .user_and_password(USER.into(), PASSWORD.into())
            .connect(url(self.port))
            .await
            .expect("observer connects");
        let subscriber = client.subscribe(subjects).await.expect("subscribe");
        client.flush().await.expect("flush");
        subscriber
    }
}

/// A running `natter-agent` whose output (log and printed links) goes to a temp file; killed when dropped.
struct Agent {
    child: Child,
    log: tempfile::NamedTempFile,
    _keys: tempfile::TempDir,
}

impl Agent {
    fn start(port: u16, password: &str, args: &[&str]) -> Agent {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let keys = tempfile::tempdir().expect("key dir");
        let child = Command::new(env!("CARGO_BIN_EXE_natter-agent"))
            .args(["--nats-url", &url(port)])
            .args(["--enroll-token", password, "--simulator-password", password])
            .arg("--key-file")
            .arg(keys.path().join("agent.nk"))
            .args(["--opener", "print", "--interval", "1s"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start natter-agent");
        Agent {
            child,
            log,
            _keys: keys,
        }
    }

    fn machine(port: u16, password: &str) -> Agent {
        Agent::start(port, password, &["--machine", MACHINE])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "agent exited ({status:?}):\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and asserts a clean exit within [`STOP_LIMIT`].
    async fn stop_within_limit(mut self) {
        self.assert_running();
        let pid = self.child.id().expect("pid") as i32;
        let sent = tokio::time::Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = tokio::time::timeout(STOP_LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running {STOP_LIMIT:?} after SIGTERM"))
            .expect("wait");
        assert!(status.success(), "exit status {status}:\n{}", self.log());
        assert!(sent.elapsed() < STOP_LIMIT);
        eprintln!("stopped {:?} after SIGTERM", sent.elapsed());
    }
}

/// Waits for check-ins until `machines` distinct machines have checked in.
async fn wait_for_checkins(checkins: &mut async_nats::Subscriber, machines: usize) {
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < machines {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, checkins.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {machines} machines checked in", seen.len()))
            .expect("subscription open");
        seen.insert(msg.subject.to_string());
    }
}

#[tokio::test]
async fn an_agent_started_before_its_server_checks_in_once_the_server_is_up() {
    let port = free_port();
    let mut agent = Agent::machine(port, PASSWORD);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.assert_running();
    assert!(agent.log().contains("could not connect to NATS; retrying"));

    let server = Server::start(port, PASSWORD).await;
    wait_for_checkins(&mut server.checkins().await, 1).await;
    agent.stop_within_limit().await;
}

#[tokio::test]
async fn an_agent_refused_by_the_server_keeps_trying_until_it_is_admitted() {
    let port = free_port();
    let refusing = Server::start(port, "another-secret").await;
    let mut agent = Agent::machine(port, PASSWORD);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.log().contains("authorization violation") {
        assert!(tokio::time::Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.assert_running();

    refusing.kill().await;
    let server = Server::start(port, PASSWORD).await;
    wait_for_checkins(&mut server.checkins().await, 1).await;
    agent.stop_within_limit().await;
}

#[tokio::test]
async fn check_ins_resume_after_the_server_restarts() {
    let port = free_port();
    let server = Server::start(port, PASSWORD).await;
    let agent = Agent::machine(port, PASSWORD);
    wait_for_checkins(&mut server.checkins().await, 1).await;

    server.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = Server::start(port, PASSWORD).await;
    wait_for_checkins(&mut server.checkins().await, 1).await;
    assert!(
        agent.log().contains("reconnected to NATS"),
        "{}",
        agent.log()
    );
    agent.stop_within_limit().await;
}

#[tokio::test]
async fn sigterm_stops_an_agent_whose_server_is_gone_within_5_s() {
    let port = free_port();
    let server = Server::start(port, PASSWORD).await;
    let agent = Agent::machine(port, PASSWORD);
    wait_for_checkins(&mut server.checkins().await, 1).await;

    server.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.stop_within_limit().await;
}

#[tokio::test]
async fn sigterm_stops_an_agent_that_never_connected_within_5_s() {
    let agent = Agent::machine(free_port(), PASSWORD);
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.stop_within_limit().await;
}

#[tokio::test]
async fn sigterm_stops_a_simulated_fleet_whose_server_is_gone_within_5_s() {
    let port = free_port();
    let server = Server::start(port, PASSWORD).await;
    let fleet = Agent::start(port, PASSWORD, &["--simulate", "100"]);
    let simulated = natter_actors::subjects::ALL_SIMULATED_CHECKINS;
    wait_for_checkins(&mut server.checkins_on(simulated).await, 100).await;

    server.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.stop_within_limit().await;
}

#[tokio::test]
async fn sigterm_stops_an_agent_whose_server_is_frozen_within_5_s() {
    let port = free_port();
    let server = Server::start(port, PASSWORD).await;
    let agent = Agent::machine(port, PASSWORD);
    wait_for_checkins(&mut server.checkins().await, 1).await;

    server.freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.stop_within_limit().await;
}

/// A large simulated fleet (20 connections of 1000 agents) whose server hangs: every connection
/// has unanswered work in flight when SIGTERM comes.
#[tokio::test]
async fn sigterm_stops_a_simulated_fleet_of_20000_whose_server_is_frozen_within_5_s() {
    let port = free_port();
    let server = Server::start(port, PASSWORD).await;
    let fleet = Agent::start(port, PASSWORD, &["--simulate", "20000"]);
    let simulated = natter_actors::subjects::ALL_SIMULATED_CHECKINS;
    wait_for_checkins(&mut server.checkins_on(simulated).await, 2000).await;

    server.freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.stop_within_limit().await;
}

#[tokio::test]
async fn sigterm_stops_a_simulated_fleet_of_20000_whose_server_is_gone_within_5_s() {
    let port = free_port();
    let server = Server::start(port, PASSWORD).await;
    let fleet = Agent::start(port, PASSWORD, &["--simulate", "20000"]);
    let simulated = natter_actors::subjects::ALL_SIMULATED_CHECKINS;
    wait_for_checkins(&mut server.checkins_on(simulated).await, 2000).await;

    server.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.stop_within_limit().await;
}

/// A `loginctl` in `dir` answering with the files there: `list` for `list-sessions`,
/// `session-ID` for `show-session ID`.
#[cfg(target_os = "linux")]
fn fake_loginctl(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("loginctl");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\nlist-sessions) cat '{0}/list' ;;\n\
         show-session) cat '{0}/session-'\"$2\" ;;\nesac\n",
        dir.display()
    );
    std::fs::write(&path, script).expect("write loginctl");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Writes what the fake `loginctl` in `dir` answers: each session `(id, user, uid, idle since µs)`.
#[cfg(target_os = "linux")]
fn logged_on(dir: &std::path::Path, sessions: &[(&str, &str, u32, u64)]) {
    let mut list = String::new();
    for (id, user, uid, idle_since) in sessions {
        list.push_str(&format!("{id} {uid} {user} seat0\n"));
        let idle = if *idle_since == 0 { "no" } else { "yes" };
        let show = format!(
            "Id={id}\nName={user}\nUser={uid}\nClass=user\nType=x11\nState=active\nActive=yes\n\
             Remote=no\nIdleHint={idle}\nIdleSinceHint={idle_since}\nDisplay=:{id}\nLeader=1\n"
        );
        std::fs::write(dir.join(format!("session-{id}.new")), show).expect("write session");
        std::fs::rename(
            dir.join(format!("session-{id}.new")),
            dir.join(format!("session-{id}")),
        )
        .expect("rename");
    }
    std::fs::write(dir.join("list.new"), list).expect("write list");
    std::fs::rename(dir.join("list.new"), dir.join("list")).expect("rename");
}

/// The next check-in for which `wanted` holds.
#[cfg(target_os = "linux")]
async fn checkin_where(
    checkins: &mut async_nats::Subscriber,
    wanted: impl Fn(&natter_actors::protocol::Checkin) -> bool,
) -> natter_actors::protocol::Checkin {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, checkins.next())
            .await
            .expect("the check-in within the wait")
            .expect("subscription open");
        let checkin: natter_actors::protocol::Checkin =
            serde_json::from_slice(&msg.payload).expect("a check-in");
        if wanted(&checkin) {
            return checkin;
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn with_users_os_the_check_ins_report_the_sessions_logind_knows() {
    let answers = tempfile::tempdir().expect("dir");
    let loginctl = fake_loginctl(answers.path());
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    logged_on(
        answers.path(),
        &[
            ("2", "carol", 1000, 0),
            ("5", "dave", 1001, now_us - 1_200_000_000),
        ],
    );
    let server = Server::start(free_port(), PASSWORD).await;
    let mut checkins = server.checkins().await;
    let loginctl = loginctl.display().to_string();
    let mut agent = Agent::start(
        server.port,
        PASSWORD,
        &[
            "--machine",
            MACHINE,
            "--users",
            "os",
            "--loginctl",
            &loginctl,
            "--users-poll",
            "100ms",
        ],
    );

    let two = checkin_where(&mut checkins, |c| c.users.is_some()).await;
    let users: Vec<(String, String, bool)> = (two.users.unwrap().into_iter())
        .map(|u| (u.name, u.session, u.idle_secs >= 1200))
        .collect();
    assert_eq!(
        users,
        [
            ("carol".into(), "2".into(), false),
            ("dave".into(), "5".into(), true)
        ]
    );

    // Both log off.
    logged_on(answers.path(), &[]);
    checkin_where(&mut checkins, |c| c.user.is_none() && c.users.is_none()).await;
    agent.assert_running();
    agent.stop_within_limit().await;
    server.kill().await;
}

#[tokio::test]
async fn users_os_with_users_given_too_is_refused_clearly() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_natter-agent"))
        .args(["--key-file", "/nonexistent/key.nk", "--users", "os"])
        .args(["--machine", "pc1.sales.acme=carol"])
        .output()
        .expect("run natter-agent");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--users os reads the users from the OS: give --machine without =USERS"),
        "{stderr}"
    );
}

/// The unit `natter-agent service-unit` prints: what the README promises, and valid for
/// systemd (`systemd-analyze verify`, where the machine has it).
#[test]
fn the_service_unit_restarts_on_failure_and_keeps_its_key_private() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_natter-agent"))
        .arg("service-unit")
        .output()
        .expect("run natter-agent");
    assert!(output.status.success());
    let unit = String::from_utf8(output.stdout).expect("text");
    for line in [
        "ExecStart=/usr/local/bin/natter-agent --machine ${NATTER_MACHINE} --users os --opener desktop",
        "EnvironmentFile=/etc/natter-agent.env",
        "Restart=on-failure",
        "StateDirectory=natter-agent",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "Environment=NATTER_AGENT_KEY_FILE=/var/lib/natter-agent/key.nk",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} in the unit");
    }
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped verifying: this machine has no systemd-analyze");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("natter-agent.service");
    let here = unit.replace(
        "/usr/local/bin/natter-agent",
        env!("CARGO_BIN_EXE_natter-agent"),
    );
    std::fs::write(&path, here).expect("write unit");
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze: {said}"
    );
}
