//! Issue 14 item 4: the Windows agent itself. `natter-agent.exe`, cross-built by `scripts/test`
//! (`NATTER_WINDOWS_AGENT`), runs under Wine (`NATTER_WINE`, Debian's `wine64`) against the
//! test's real nats-server on loopback: it enrolls with a token, checks in (the operator sees
//! the machine, its user and `windows`), and answers an operator's chat: the operator sees
//! `opened` and the link the agent printed logs the machine user in. `natter-agent chat`
//! reaches it through its control pipe (with the pipe's restricted access).
//!
//! Without `NATTER_WINDOWS_AGENT` the test says so and passes (a local run without the cross
//! build), except in CI (`CI=true`), where a missing Windows agent fails it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter_system_tests::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const MACHINE: &str = "win1.sales.acme";
/// Creating a Wine prefix (first start) takes 20–60 s on a CI machine.
const WINE_BOOT: Duration = Duration::from_secs(240);
/// From starting the exe to its first check-in seen by the operator (Wine loads the exe and
/// its DLLs first).
const FIRST_CHECKIN: Duration = Duration::from_secs(60);

/// The Windows agent and Wine, from the environment `scripts/test` sets; `None` (after saying
/// why) on a local run without them.
fn windows_agent() -> Option<(PathBuf, PathBuf)> {
    let agent = std::env::var_os("NATTER_WINDOWS_AGENT").map(PathBuf::from);
    let wine = std::env::var_os("NATTER_WINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/wine/wine64".into());
    match agent {
        Some(agent) => Some((agent, wine)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "CI=true but NATTER_WINDOWS_AGENT is unset: scripts/test builds the Windows agent"
            )
        }
        None => {
            eprintln!(
                "skipped: NATTER_WINDOWS_AGENT is unset (scripts/test cross-builds \
                 natter-agent.exe and sets it, with NATTER_WINE)"
            );
            None
        }
    }
}

/// A throwaway Wine prefix; its wineserver (and every process in it) is killed on drop.
struct Wine {
    wine: PathBuf,
    dir: tempfile::TempDir,
}

impl Wine {
    fn prefix(&self) -> PathBuf {
        self.dir.path().join("prefix")
    }

    /// `program` under Wine in this prefix, quiet, without the Mono/Gecko installers a new
    /// prefix would otherwise offer.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.wine);
        command
            .arg(program)
            .env("WINEPREFIX", self.prefix())
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Creates the prefix (Wine's first start, the slow part) and waits for it.
    async fn boot(wine: &Path) -> Wine {
        let wine = Wine {
            wine: wine.to_path_buf(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let mut boot = wine.command("wineboot");
        boot.arg("--init")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = tokio::time::timeout(WINE_BOOT, boot.status())
            .await
            .unwrap_or_else(|_| panic!("wineboot did not finish within {WINE_BOOT:?}"))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", wine.wine.display()));
        assert!(status.success(), "wineboot --init failed: {status}");
        wine
    }

    /// Runs `command` (made by [`Wine::command`]) to its end: its exit code, stdout and
    /// stderr, trimmed.
    async fn run(&self, command: &mut tokio::process::Command) -> (Option<i32>, String, String) {
        let out = tokio::time::timeout(FIRST_CHECKIN, command.output())
            .await
            .unwrap_or_else(|_| panic!("{command:?} did not finish within {FIRST_CHECKIN:?}"))
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    /// `path` as Wine's programs see it (drive Z: is the Unix root).
    fn windows_path(path: &Path) -> String {
        format!("Z:{}", path.display()).replace('/', "\\")
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let server = self.wine.with_file_name("wineserver");
        let _ = std::process::Command::new(server)
            .arg("-k")
            .env("WINEPREFIX", self.prefix())
            .status();
    }
}

/// Copies the agent next to a freshly built `bcryptprimitives.dll` (agent/wine/: Wine 8 lacks
/// the `ProcessPrng` that Rust's std needs); returns the copy's path.
fn agent_with_prng_shim(agent: &Path, dir: &Path) -> PathBuf {
    let source = repo_root().join("agent/wine");
    let dll = dir.join("bcryptprimitives.dll");
    let built = std::process::Command::new("x86_64-w64-mingw32-gcc")
        .arg("-shared")
        .arg("-o")
        .arg(&dll)
        .arg(source.join("bcryptprimitives.c"))
        .arg(source.join("bcryptprimitives.def"))
        .arg("-ladvapi32")
        .status()
        .expect("run x86_64-w64-mingw32-gcc (scripts/setup --windows installs it)");
    assert!(built.success(), "building the ProcessPrng shim failed");
    let exe = dir.join("natter-agent.exe");
    std::fs::copy(agent, &exe).unwrap_or_else(|e| panic!("copy {}: {e}", agent.display()));
    exe
}

/// Every line a stream printed so far, collected as it comes.
fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_agent_under_wine_enrolls_checks_in_and_opens_a_chat() {
    let Some((agent, wine)) = windows_agent() else {
        return;
    };
    let s = Scenario::new().operator("alice").start().await;
    let alice = s.operator("alice");
    let token = s.nats.enroll_token("sales.acme", 1).await;

    let wine = Wine::boot(&wine).await;
    let exe = agent_with_prng_shim(&agent, wine.dir.path());
    let key_file = wine.dir.path().join("win1.nk");
    let mut child = wine
        .command(&exe)
        .arg("--nats-url")
        .arg(s.nats.url())
        .arg("--key-file")
        .arg(Wine::windows_path(&key_file))
        .arg("--enroll-token")
        .arg(&token)
        .arg("--machine")
        .arg(format!("{MACHINE}=carol"))
        .arg("--opener")
        .arg("print")
        .arg("--interval")
        .arg("2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start natter-agent.exe under wine");
    let stdout = collect_lines(child.stdout.take().expect("stdout"));
    let stderr = collect_lines(child.stderr.take().expect("stderr"));
    let agent_log = || stderr.lock().unwrap().join("\n");

    // Enrolled and checked in: the operator sees the Windows machine with carol logged on.
    let path = format!("/api/machines/{MACHINE}");
    let seen = tokio::time::timeout(FIRST_CHECKIN, async {
        loop {
            let (_, view) = alice.get(&path).await;
            if view["user"] == "carol" {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no check-in within {FIRST_CHECKIN:?}; agent log:\n{}",
            agent_log()
        )
    });
    assert_eq!(seen["os"], "windows", "{seen}");
    assert_eq!(seen["status"], "user", "{seen}");
    assert!(key_file.exists(), "the agent created its key file");

    // An operator's chat: the agent answers `opened`, and the link it printed is a working
    // login for the machine user.
    let session = alice.new_chat(MACHINE).await;
    let mut events = alice.session_events(&session).await;
    let answer = events.next_of_type("agent").await;
    assert_eq!(
        answer["status"],
        "opened",
        "{answer}\nagent log:\n{}",
        agent_log()
    );
    let printed = format!("open chat on {MACHINE}: ");
    let url = (stdout.lock().unwrap().iter())
        .find_map(|l| l.strip_prefix(&printed).map(String::from))
        .unwrap_or_else(|| {
            panic!(
                "the agent printed no link; stdout: {:?}",
                stdout.lock().unwrap()
            )
        });
    let prefix = format!("{}/m/{session}/#t=", s.node.base);
    let token = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} does not start with {prefix}"));
    let carol = Browser::new(&s.node.base);
    let (status, view) = carol
        .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["machine"], MACHINE);

    // The machine's user asks through the control pipe (its access is the agent's own, see
    // agent/src/control.rs): `natter-agent chat` reaches the agent, which asks the broker; this
    // machine's role (none) does not allow it, and the user is told so.
    let (code, answer, errors) = wine
        .run(
            wine.command(&exe)
                .arg("chat")
                .arg("--key-file")
                .arg(Wine::windows_path(&key_file)),
        )
        .await;
    assert!(
        answer.starts_with("refused (not_allowed): "),
        "natter-agent chat printed {answer:?} (exit {code:?}, stderr {errors:?}); agent log:\n{}",
        agent_log()
    );
    assert_eq!(code, Some(1), "only `opened` exits 0");

    child.start_kill().expect("stop the agent");
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
    drop(wine);
    s.shutdown().await;
}
