//! The two modes a child process of the bench runs in: a Natter node, and a crowd of idle SSE
//! clients. Both stop when their stdin closes (the bench ended or died).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::http;
use crate::procs::{BoxError, raise_nofile};

/// Waits until stdin is closed.
pub async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// `natter-bench node`: a node on a free loopback port against an external NATS server; prints
/// `READY <addr>` and runs until stdin closes.
pub async fn node(nats_url: String) -> Result<(), BoxError> {
    raise_nofile();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let listener = crate::procs::listen_loopback()?;
    let addr = listener.local_addr()?;
    let mut config = natter::Config::defaults();
    config.nats.url = nats_url;
    config.http.listen = addr;
    config.http.public_url = format!("http://{addr}");
    // Node ids must differ between nodes on one NATS (the default is made from the configured
    // port, the same for every bench node).
    config.node.id = format!("bench-{}", addr.port());
    config.http.drain_timeout = Duration::from_secs(1);
    // The bench logs many operators in and holds tens of thousands of streams of one login,
    // all from a few loopback addresses.
    config.limits.logins_per_address = 0;
    config.limits.max_connections = 0;
    config.limits.connections_per_address = 0;
    config.limits.streams_per_operator_login = 0;
    let node = natter::Node::start(listener, &config).await?;
    println!("READY {addr}");
    stdin_closed().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
    Ok(())
}

/// What `natter-bench clients` is told to do.
#[derive(clap::Args, Debug)]
pub struct ClientsArgs {
    /// The gateway.
    #[arg(long)]
    pub addr: SocketAddr,
    /// How many SSE connections to open and hold.
    #[arg(long)]
    pub count: usize,
    /// Sessions to spread the connections over (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<String>,
    /// Loopback source addresses to connect from (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Chat events each connection must receive (its replay) before it counts as open.
    #[arg(long, default_value_t = 0)]
    pub expect: usize,
}

/// `natter-bench clients`: opens `count` idle SSE connections (cookie from `NATTER_BENCH_COOKIE`),
/// waits for each one's `hello`, then only reads keep-alives. Prints `PROGRESS <open> <failed>`
/// every second and `DONE <open> <failed>` once every connection is open or has failed; runs
/// until stdin closes.
pub async fn clients(args: ClientsArgs) -> Result<(), BoxError> {
    raise_nofile();
    let cookie: Arc<str> = std::env::var("NATTER_BENCH_COOKIE")?.into();
    if args.sessions.is_empty() {
        return Err("no sessions".into());
    }
    let counts = Arc::new(Counts::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let sessions: Arc<Vec<String>> = Arc::new(args.sessions);
    let sources: Arc<Vec<IpAddr>> = Arc::new(args.sources);
    for i in 0..args.count {
        let (counts, permits) = (counts.clone(), permits.clone());
        let (sessions, sources, cookie) = (sessions.clone(), sources.clone(), cookie.clone());
        let (addr, expect) = (args.addr, args.expect);
        tokio::spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let path = format!("/api/events?sessions={}", sessions[i % sessions.len()]);
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let stream = open_idle(i, addr, source, &cookie, &path, expect).await;
            drop(permit);
            let Some(stream) = stream else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            counts.opened.fetch_add(1, Ordering::Relaxed);
            hold(stream).await;
        });
    }
    tokio::select! {
        _ = report(&counts, args.count as u64) => {}
        _ = stdin_closed() => std::process::exit(0),
    }
    stdin_closed().await;
    // Exit without tearing thousands of tasks down one by one.
    std::process::exit(0)
}

/// Connections opened and failed so far.
#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    failed: AtomicU64,
}

/// Opens client `i`'s SSE connection (at most 3 tries, 20 s each): its `hello`, then `expect`
/// chat events. Returns the stream, or none when every try failed.
async fn open_idle(
    i: usize,
    addr: SocketAddr,
    source: Option<IpAddr>,
    cookie: &str,
    path: &str,
    expect: usize,
) -> Option<tokio::net::TcpStream> {
    for attempt in 0..3u64 {
        let open = async {
            let mut sse = http::open_sse(addr, source, cookie, path).await?;
            let hello = sse.next().await?;
            if hello.event != "hello" {
                return Err(std::io::Error::other("no hello"));
            }
            let mut got = 0;
            while got < expect {
                let e = sse.next().await?;
                match e.event.as_str() {
                    "" => got += 1,
                    "error" => return Err(std::io::Error::other(e.data)),
                    _ => {}
                }
            }
            Ok::<_, std::io::Error>(sse.into_stream())
        };
        match tokio::time::timeout(Duration::from_secs(20), open).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(e)) if attempt == 2 => eprintln!("client {i}: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
        }
    }
    None
}

/// Idle: reads (and drops) keep-alive comments until the server goes away.
async fn hold(mut stream: tokio::net::TcpStream) {
    let mut buf = [0u8; 256];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Prints `PROGRESS <open> <failed>` every second until all `total` are open or failed, then
/// `DONE <open> <failed>`.
async fn report(counts: &Counts, total: u64) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (o, f) = (
            counts.opened.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
        );
        if o + f >= total {
            println!("DONE {o} {f}");
            break;
        }
        println!("PROGRESS {o} {f}");
    }
}
