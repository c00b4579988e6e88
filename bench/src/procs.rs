//! Child processes (nodes and connection clients, both this binary re-executed in another mode),
//! and what `/proc` says about them.
//!
//! Every child is `kill_on_drop` and reads its stdin: when the bench ends (or panics) the pipe
//! closes and the child exits on its own, and dropping the handle kills it in any case.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use natter::embedded::ServerSecrets;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Raises the soft open-files limit to the hard limit (inherited by children).
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some(Duration::from_millis((utime + stime) * 1000 / hz.max(1)))
}

/// A listener on a free loopback port with a deep accept backlog (tens of thousands of clients
/// connect in bursts).
pub fn listen_loopback() -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(4096)
}

/// Share of one core the processes used over `window` (1.0 = one core busy).
pub async fn cpu_share(pids: &[u32], window: Duration) -> f64 {
    let total = |pids: &[u32]| -> Duration { pids.iter().filter_map(|p| cpu_time(*p)).sum() };
    let before = total(pids);
    let t0 = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let used = total(pids).saturating_sub(before);
    used.as_secs_f64() / t0.elapsed().as_secs_f64()
}

/// A child running this binary in another mode, talking line by line on stdout.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `natter-bench <args>` with `env`; its stderr goes to `log`.
    pub fn spawn(args: &[String], env: &[(&str, String)], log: &Path) -> Result<Proc, BoxError> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        // NATTER_BENCH_NODE_WRAPPER="perf record -g --" (or heaptrack …) runs nodes and the
        // idle-connection floors under a profiler; their pid is then the profiler's.
        let wrapper = std::env::var("NATTER_BENCH_NODE_WRAPPER").unwrap_or_default();
        let mut cmd = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
            Some((first, rest))
                if args
                    .first()
                    .is_some_and(|a| a == "node" || a == "floor-sse") =>
            {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            _ => Command::new(exe),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("child exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Proc {
            child,
            pid,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line the child prints, within `limit`.
    pub async fn line(&mut self, limit: Duration) -> Result<String, BoxError> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err(format!("child {} ended", self.pid).into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(format!("child {} said nothing for {limit:?}", self.pid).into()),
        }
    }

    /// Asks the child to stop (closes its stdin) and waits up to `limit`, then kills it.
    pub async fn stop(mut self, limit: Duration) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Kills the child now.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A Natter node in a child process.
pub struct NodeProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl NodeProc {
    pub async fn start(nats_url: &str, password: &str, log: &Path) -> Result<NodeProc, BoxError> {
        let proc = Proc::spawn(
            &["node".into(), "--nats-url".into(), nats_url.into()],
            &[(ServerSecrets::BROKER_PASSWORD_VAR, password.to_string())],
            log,
        )?;
        Self::ready(proc).await
    }

    /// The floor of the chat path (`floor-chat`) against the bench's NATS server.
    pub async fn start_floor_chat(
        nats_url: &str,
        password: &str,
        log: &Path,
    ) -> Result<NodeProc, BoxError> {
        let proc = Proc::spawn(
            &["floor-chat".into(), "--nats-url".into(), nats_url.into()],
            &[(ServerSecrets::BROKER_PASSWORD_VAR, password.to_string())],
            log,
        )?;
        Self::ready(proc).await
    }

    /// A floor to compare idle connections with: a bare hyper SSE server (`floor-sse`), or
    /// warp's SSE reply behind warp's service (`floor-sse --warp`).
    pub async fn start_floor(warp: bool, log: &Path) -> Result<NodeProc, BoxError> {
        let mut args = vec!["floor-sse".to_string()];
        if warp {
            args.push("--warp".into());
        }
        Self::ready(Proc::spawn(&args, &[], log)?).await
    }

    async fn ready(mut proc: Proc) -> Result<NodeProc, BoxError> {
        // A profiler wrapping the node may print lines of its own first.
        for _ in 0..20 {
            let line = proc.line(Duration::from_secs(30)).await?;
            if let Some(addr) = line.strip_prefix("READY ") {
                let addr = addr.parse()?;
                return Ok(NodeProc { proc, addr });
            }
        }
        Err("the node never said READY".into())
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.proc.pid).unwrap_or(0)
    }
}
