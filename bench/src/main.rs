//! `natter-bench`: Natter measured against the physical limit (raw NATS on the same server, in
//! the same run). See `docs/benchmarks.md` for the method; `scripts/bench` builds and runs it.
//!
//! The bench starts its own nats-server (the repository's `nats.conf`, a temporary store) and
//! runs every Natter node as a child process (this binary in `node` mode), so the node's memory,
//! CPU and file descriptors are its own. Idle-connection clients run in more child processes
//! (`clients` mode). Every child dies with the bench: `kill_on_drop`, and each exits when its
//! stdin closes.

mod browser;
mod chat;
mod conns;
mod cost;
mod cost_doc;
mod fleet_floor;
mod fleet_page;
mod floor;
mod floor_chat;
mod http;
mod idle_phases;
mod modes;
mod nodes;
mod phases;
mod procs;
mod raw;
mod report;
mod rows;
mod sim;

/// The allocator of the `natter` binary, so nodes run by the bench (`node` mode) are measured as
/// deployed; the floors use it too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use natter::embedded::{NatsServer, NatsServerOptions, ServerSecrets, find_server_bin};

use crate::procs::{BoxError, NodeProc, raise_nofile};

#[derive(Parser)]
#[command(
    name = "natter-bench",
    about = "Natter against raw NATS: latency, throughput, connections, join (server and browser)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark (the default).
    Run(RunArgs),
    /// (internal) Run a node against an external NATS server until stdin closes.
    #[command(hide = true)]
    Node {
        #[arg(long)]
        nats_url: String,
    },
    /// (internal) Hold idle SSE connections until stdin closes.
    #[command(hide = true)]
    Clients(modes::ClientsArgs),
    /// (internal) The floor of idle SSE connections: a bare hyper SSE server (with `--warp`:
    /// warp's SSE reply), until stdin closes.
    #[command(hide = true)]
    FloorSse {
        #[arg(long)]
        warp: bool,
    },
    /// (internal) The floor of the chat path: a bare hyper + JetStream server taking the
    /// throughput phase's load (password in the broker's variable), until stdin closes.
    #[command(hide = true)]
    FloorChat {
        #[arg(long)]
        nats_url: String,
    },
    /// (internal) The floor of one machine's state in a node: prints the resident memory per
    /// item of `--count` items of `--kind`.
    #[command(hide = true)]
    FloorFleet {
        #[arg(long, value_enum)]
        kind: fleet_floor::FloorKind,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
    },
    /// Rewrites the cost curve's table (in `--out`) and plot from `cost-curve.json` beside it,
    /// measuring nothing.
    CostCurve {
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
    /// (internal) Simulated agents `--first` .. `--first + --count` until stdin closes (the
    /// `cost-agents` phase's simulator processes).
    #[command(hide = true)]
    Simulate(sim::SimArgs),
}

const ALL_PHASES: &str = "raw,latency,throughput,floor-chat,join,browser-join,nodes,conns,many,storm,fleet-page,cost-readers,cost-sessions";
/// The phases run last, on a nats-server of their own.
const COST_PHASES: &str = "cost-readers,cost-sessions,cost-agents";

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The nats-server binary (default: on PATH if ≥ 2.11, else .tools/nats/bin/nats-server).
    #[arg(long, env = "NATTER_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// The server configuration.
    #[arg(long, default_value = "nats.conf")]
    nats_conf: PathBuf,
    /// Where the results block is written (between its markers; the rest is kept).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Print only; do not write `--out`.
    #[arg(long)]
    no_write: bool,
    /// Shorter phases (smoke runs, profiling).
    #[arg(long)]
    quick: bool,
    /// Phases to run: raw, latency, throughput, floor-chat (the throughput load on a bare
    /// hyper + JetStream server: the floor of the chat path), join, browser-join (a chat window in Chromium
    /// opening a 10k-message history), nodes (throughput, fan-out share and
    /// failover with 1 and 3 nodes), conns (10k and 19k on one gateway), many (across several
    /// gateway processes), storm (many connects at once that need a replay), fleet-page (the
    /// Chat page with 100k simulated machines in scope; 5k with --quick), cost-readers (CPU per
    /// delivered message and memory per session at 1, 3, 10, 100 readers per session),
    /// cost-sessions (node memory with 1k, 10k, 100k open sessions), cost-agents (not in the
    /// default: check-in CPU at 10k, 100k, 300k agents, several minutes; scripts/bench-fleet
    /// --cost). The cost phases rewrite the cost curve (docs/cost-curve.json, .svg and its
    /// block in --out) unless --quick or --no-write.
    #[arg(long, value_delimiter = ',', default_value = ALL_PHASES)]
    phases: Vec<String>,
    /// Connections for the `many` phase.
    #[arg(long, default_value_t = 100_000)]
    many: usize,
    /// Gateway processes for the `many` phase.
    #[arg(long, default_value_t = 6)]
    many_nodes: usize,
    /// Seconds to wait before each chat phase, with the node's pid printed (to attach a
    /// profiler).
    #[arg(long, default_value_t = 0)]
    pause: u64,
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Node { nats_url }) => node_runtime()?.block_on(modes::node(nats_url)),
        Some(Cmd::Clients(args)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(modes::clients(args)),
        Some(Cmd::FloorSse { warp }) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(floor::floor_sse(warp)),
        Some(Cmd::FloorChat { nats_url }) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(floor_chat::floor_chat(
                nats_url,
                std::env::var(ServerSecrets::BROKER_PASSWORD_VAR)?,
            )),
        Some(Cmd::FloorFleet { kind, count }) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(fleet_floor::floor_fleet(kind, count)),
        Some(Cmd::CostCurve { out }) => cost_doc::write(&out, &serde_json::json!({})),
        Some(Cmd::Simulate(args)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(sim::simulate(args)),
        Some(Cmd::Run(args)) => runtime()?.block_on(run(args)),
        None => runtime()?.block_on(run(RunArgs::parse_from(["run"]))),
    }
}

/// A node's runtime: tokio's default (a worker per core), or `NATTER_BENCH_NODE_WORKERS`
/// workers, so a node's runtime can be measured alone (`TOKIO_WORKER_THREADS` would also reach
/// the bench's own load generator).
fn node_runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Ok(workers) = std::env::var("NATTER_BENCH_NODE_WORKERS") {
        builder.worker_threads(workers.parse()?);
    }
    Ok(builder.enable_all().build()?)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

impl RunArgs {
    fn parse_from<const N: usize>(argv: [&str; N]) -> RunArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: RunArgs,
        }
        Only::parse_from(argv).args
    }

    fn has(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// Everything measured (absent when a phase did not run).
#[derive(Default)]
struct Results {
    raw: Option<raw::RawResults>,
    latency: Option<chat::Step>,
    latency_floor: Option<chat::Step>,
    throughput: Option<(Option<chat::Step>, Option<chat::Step>)>,
    floor_chat: Option<(Option<chat::Step>, Option<chat::Step>)>,
    join: Option<Vec<chat::JoinResult>>,
    browser_join: Option<browser::BrowserJoin>,
    fleet_page: Option<fleet_page::FleetPage>,
    nodes: Option<Vec<nodes::NodesPoint>>,
    conns: Option<Vec<conns::ConnPoint>>,
    many: Option<conns::ConnPoint>,
    storm: Option<conns::ConnPoint>,
    cost_readers: Option<Vec<cost::ReadersPoint>>,
    cost_sessions: Option<Vec<cost::SessionsPoint>>,
    cost_agents: Option<Vec<cost::AgentsPoint>>,
    notes: Vec<String>,
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    let t_start = Instant::now();
    let nofile = raise_nofile();
    let tmp = tempfile::Builder::new().prefix("natter-bench-").tempdir()?;
    let logs = std::env::temp_dir().join("natter-bench-logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let child_log = logs.join("children.log");
    say(format!("logs in {}", logs.display()));

    let (server, nats_version, password, simulator_password) =
        start_server(&args, &tmp.path().join("js"), &logs.join("nats-server.log")).await?;
    let url = server.url();
    say(format!(
        "{nats_version} on {url}; open files limit {nofile}"
    ));
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut res = Results::default();
    let at = phases::Target {
        url: &url,
        password: &password,
        simulator_password: &simulator_password,
        log: &child_log,
        nats_pid: cost::nats_server_pid(server.port()),
    };
    // On Ctrl-C or SIGTERM the phases are dropped (their child processes are killed on drop)
    // and the server is stopped below, so nothing outlives the bench.
    let mut outcome = tokio::select! {
        r = phases::phases(&args, &at, &mut res) => r,
        s = interrupted() => Err(format!("interrupted by {s}").into()),
    };
    server.stop().await;
    if outcome.is_ok() && COST_PHASES.split(',').any(|p| args.has(p)) {
        // The cost phases get a nats-server of their own: what the phases above left in theirs
        // (100k machines, long histories) would be in the cost figures otherwise.
        let (server, _, password, simulator_password) = start_server(
            &args,
            &tmp.path().join("js-cost"),
            &logs.join("nats-server-cost.log"),
        )
        .await?;
        let url = server.url();
        say(format!("cost phases: a fresh nats-server on {url}"));
        let at = phases::Target {
            url: &url,
            password: &password,
            simulator_password: &simulator_password,
            log: &child_log,
            nats_pid: cost::nats_server_pid(server.port()),
        };
        outcome = tokio::select! {
            r = phases::cost_phases(&args, &at, &mut res) => r,
            s = interrupted() => Err(format!("interrupted by {s}").into()),
        };
        server.stop().await;
    }
    if let Err(e) = &outcome {
        say(format!("stopped early: {e}"));
        res.notes.push(format!("The run stopped early: {e}."));
    }

    let block = results_block(&res, &nats_version, &load_before, t_start);
    println!("\n{block}");
    let all_ran = ALL_PHASES.split(',').all(|p| args.has(p));
    if !args.no_write && all_ran {
        report::write_doc(&args.out, &block)?;
        say(format!("results written to {}", args.out.display()));
    } else if !args.no_write {
        say("not every phase ran: results not written");
    }
    write_cost_curve(&args, &res, &load_before)?;
    outcome
}

/// Merges the cost-curve series this run measured into the cost curve (data, table, plot),
/// unless the run was quick or told not to write.
fn write_cost_curve(args: &RunArgs, res: &Results, load_before: &str) -> Result<(), BoxError> {
    if res.cost_readers.is_none() && res.cost_sessions.is_none() && res.cost_agents.is_none() {
        return Ok(());
    }
    if args.no_write || args.quick {
        say("cost curve not written (--no-write or --quick)");
        return Ok(());
    }
    let run = format!(
        "run of {}{} · load average before the run {}",
        std::env::var("NATTER_BENCH_DATE").unwrap_or_else(|_| "now".into()),
        std::env::var("NATTER_BENCH_COMMIT")
            .map(|c| format!(" · commit {c}"))
            .unwrap_or_default(),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let new = cost_doc::series(
        &run,
        res.cost_readers.as_deref(),
        res.cost_sessions.as_deref(),
        res.cost_agents.as_deref(),
    );
    cost_doc::write(&args.out, &new)?;
    say(format!(
        "cost curve written to {} (and cost-curve.json, cost-curve.svg beside it)",
        args.out.display()
    ));
    Ok(())
}

/// Starts a nats-server of the bench's own (its store in `store_dir`, its log in `log_file`);
/// returns it, its version line, the broker's password and the simulator's.
async fn start_server(
    args: &RunArgs,
    store_dir: &Path,
    log_file: &Path,
) -> Result<(NatsServer, String, String, String), BoxError> {
    let bin = match &args.nats_server {
        Some(p) => p.clone(),
        None => find_server_bin("")?,
    };
    let nats_version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let password = hex(&rand_bytes());
    let simulator_password = hex(&rand_bytes());
    let server = NatsServer::start(NatsServerOptions {
        bin: bin.clone(),
        config: args.nats_conf.clone(),
        port: 0,
        store_dir: store_dir.to_path_buf(),
        log_file: Some(log_file.to_path_buf()),
        secrets: ServerSecrets {
            broker_password: password.clone(),
            // The simulated fleet of the fleet-page phase logs in with this one.
            simulator_password: simulator_password.clone(),
            // The bench runs no real agents: nobody needs to know this.
            system_password: hex(&rand_bytes()),
            // nats.conf names the auth callout issuer; the bench runs no real agents.
            callout_issuer: natter_actors::auth_callout::Callout::generate_issuer().1,
        },
        tls: None,
    })
    .await?;
    Ok((server, nats_version, password, simulator_password))
}

/// The results block: the run's header line, the table, then the notes.
fn results_block(res: &Results, nats_version: &str, load_before: &str, t_start: Instant) -> String {
    let table = report::table(&rows::rows(res));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let header = format!(
        "Run of {} · {} · {cores} cores · load average before the run {} · total {:.0} s{}\n\n",
        std::env::var("NATTER_BENCH_DATE").unwrap_or_else(|_| "now".into()),
        nats_version,
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        t_start.elapsed().as_secs_f64(),
        std::env::var("NATTER_BENCH_COMMIT")
            .map(|c| format!(" · commit {c}"))
            .unwrap_or_default(),
    );
    let mut block = format!("{header}{table}");
    for n in &res.notes {
        block.push_str(&format!("\n- {n}"));
    }
    block.push('\n');
    block
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ (std::process::id() as u128) << 64;
    for (i, x) in b.iter_mut().enumerate() {
        *x = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
    }
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn pause(args: &RunArgs, node: &NodeProc, what: &str) {
    if args.pause > 0 {
        say(format!(
            "node pid {} — {what} starts in {} s",
            node.pid(),
            args.pause
        ));
        tokio::time::sleep(Duration::from_secs(args.pause)).await;
    }
}
