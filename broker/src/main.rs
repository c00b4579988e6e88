//! `natter`: run a broker node, or administer one.

/// jemalloc rather than glibc's malloc: tens of thousands of idle event streams leave glibc's
/// arenas fragmented (≈ 3 KiB more per idle connection, measured with `scripts/bench`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

mod identity;
mod issuer;

use clap::{Parser, Subcommand};
use natter::config::Config;
use natter::embedded::{DataDir, NatsServer, NatsServerOptions, ServerSecrets, find_server_bin};
use natter_actors::directory;
use natter_actors::machines::{MachineReply, MachineRequest};
use natter_actors::store::Stores;

#[derive(Parser)]
#[command(
    name = "natter",
    version,
    about = "Natter: remote-support chat over NATS"
)]
struct Cli {
    /// Configuration file (keys may also come from NATTER__SECTION__KEY variables).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: gateway + actors (and the embedded nats-server when nats.url is empty).
    Serve,
    /// Check the configuration and print it.
    CheckConfig,
    /// Administration commands (they talk to the node's NATS).
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand)]
enum Admin {
    /// Create or replace an operator account.
    AddOperator {
        #[arg(long)]
        username: String,
        /// Display name (default: the username).
        #[arg(long, default_value = "")]
        name: String,
        /// Administrators see every organisation.
        #[arg(long)]
        admin: bool,
        /// An organisation (acme) or machine group (sales.acme, with its subgroups) the operator
        /// may see. Repeat for several. Admins see everything.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Read the password from standard input (so it stays out of `ps` and shell history).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Issue an enrollment token: up to --uses agents of machines in --group may enroll with it
    /// within --ttl. Printed once; only its hash is stored.
    EnrollToken {
        /// The organisation (acme) or group (sales.acme, with its subgroups) it enrolls.
        #[arg(long)]
        group: String,
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// List the enrollment tokens: id, group, uses left, expiry, state (never the tokens).
    EnrollTokens,
    /// Revoke an enrollment token by its id from `enroll-tokens` (or a unique prefix of at
    /// least 8 hex digits): it enrolls nobody from then on. Agents it enrolled stay enrolled.
    RevokeToken { id: String },
    /// Forget a machine's key (re-enrollment, key rotation): its agent is cut off and must
    /// enroll again with a new token.
    ForgetKey { machine: String },
    /// Register a machine before its agent checks in ("never checked in").
    AddMachine { machine: String },
    /// Suspend an agent: its check-ins change nothing and nobody can chat with the machine.
    Suspend { machine: String },
    /// Lift a suspension.
    Resume { machine: String },
    /// Machine roles: what a machine's user may do (e.g. start a chat with operators).
    #[command(subcommand)]
    Role(RoleCommand),
    /// Print the auth callout issuer's public key (from nats.callout_seed,
    /// NATTER_NATS_CALLOUT_SEED or <data_dir>/callout.seed): what an external nats-server
    /// needs in NATTER_NATS_CALLOUT_ISSUER. Needs no running NATS.
    IssuerKey,
    /// Print a new auth callout issuer seed, to give every node of a cluster
    /// (nats.callout_seed or NATTER_NATS_CALLOUT_SEED). Keep it secret. Needs no running NATS.
    NewCalloutSeed,
}

#[derive(Subcommand)]
enum RoleCommand {
    /// Create a machine role (a name of a-z, 0-9, - and _).
    Create {
        name: String,
        /// Give it the right "may start a chat with operators".
        #[arg(long)]
        may_start_chat: bool,
    },
    /// Switch a role's right "may start a chat with operators" on or off.
    Set {
        name: String,
        #[arg(long, action = clap::ArgAction::Set, required = true)]
        may_start_chat: Option<bool>,
    },
    /// Delete a role; its machines have no role (and no right) from then on.
    Delete { name: String },
    /// List the roles, their right and their machines.
    List,
    /// Put a machine in a role (a machine has at most one: this replaces any other).
    Assign { machine: String, role: String },
    /// Take a machine out of its role.
    Unassign { machine: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natter: {e}");
            return ExitCode::from(2);
        }
    };
    natter::logging::init(&config.log.format, &config.node.id);
    let result = match cli.command {
        Command::Serve => serve(config).await,
        Command::CheckConfig => {
            println!("{:#?}", redacted(&config));
            Ok(())
        }
        Command::Admin(admin) => run_admin(config, admin).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM). The handlers are installed
/// when this is called, not when the future is first polled: a SIGTERM right after "natter is
/// ready" (before the server first polls its shutdown future) would otherwise kill the process
/// with no shutdown at all.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// How long a node asked to stop gets to shut down before it exits anyway (its embedded
/// nats-server, if any, is killed with it: the server asks for SIGKILL when its parent dies).
/// Each step of the shutdown has its own bound; this one holds whatever state NATS is in, so
/// the process is gone within 5 s of SIGTERM.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_millis(4500);

/// Exits the process [`SHUTDOWN_LIMIT`] from now unless it has exited by then. A thread of its
/// own, so a busy or stuck runtime cannot hold it up.
fn exit_after_shutdown_limit() {
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_LIMIT);
        eprintln!("natter: the shutdown did not finish within {SHUTDOWN_LIMIT:?}; exiting anyway");
        std::process::exit(1);
    });
}

/// How long a node whose embedded server failed gets to shut down before it exits anyway.
const FAILED_SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The embedded nats-server, and the data directory the node holds (locked) while it runs.
struct Embedded {
    server: NatsServer,
    data_dir: DataDir,
}

async fn serve(mut config: Config) -> Result<(), BoxError> {
    // Bind first: a taken port is the most common start-up error, and it should be clear.
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (http.listen): {e}", config.http.listen))?;
    let embedded = match config.nats.url.is_empty() {
        true => Some(start_embedded(&mut config).await?),
        false => None,
    };
    let server_failure = embedded.as_ref().map(|e| e.server.failure());
    let (failure_tx, mut failure_rx) = tokio::sync::oneshot::channel();
    let shutdown = stop_requested(server_failure, failure_tx);
    let result = natter::run(listener, &config, shutdown).await;
    if let Some(Embedded { server, data_dir }) = embedded {
        server.stop().await;
        let _ = std::fs::remove_file(data_dir.path().join("nats.url"));
    }
    result?;
    match failure_rx.try_recv() {
        Ok(why) => Err(format!("the embedded nats-server stopped: {why}").into()),
        Err(_) => Ok(()),
    }
}

/// Resolves when the node must stop: on Ctrl-C or SIGTERM (handled from this call on), or when
/// its embedded server failed for good (the reason goes to `failure`).
fn stop_requested(
    server_failure: Option<impl std::future::Future<Output = String>>,
    failure: tokio::sync::oneshot::Sender<String>,
) -> impl std::future::Future<Output = ()> {
    let stop = stop_signal();
    async move {
        let failed = async {
            match server_failure {
                Some(server_failure) => server_failure.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop => exit_after_shutdown_limit(),
            why = failed => {
                // Without its NATS server, a step of the shutdown could wait for ever.
                let last_words = format!(
                    "natter: the embedded nats-server stopped: {why} (shutdown cut short after {} s)",
                    FAILED_SHUTDOWN_LIMIT.as_secs()
                );
                tokio::spawn(async move {
                    tokio::time::sleep(FAILED_SHUTDOWN_LIMIT).await;
                    eprintln!("{last_words}");
                    std::process::exit(1);
                });
                let _ = failure.send(why);
            }
        }
    }
}

/// Starts the embedded nats-server from the locked data directory and points `config` at it.
async fn start_embedded(config: &mut Config) -> Result<Embedded, BoxError> {
    let bin = find_server_bin(&config.nats.server_bin)?;
    let data_dir = DataDir::lock(&config.storage.data_dir)?;
    let broker_password = match config.nats_password() {
        p if p.is_empty() => random_secret(),
        p => p,
    };
    // The simulator is off unless a password for it is configured: nobody knows this one.
    let simulator_password = match config.simulator_password() {
        p if p.is_empty() => random_secret(),
        p => p,
    };
    let system_password = match config.system_password() {
        p if p.is_empty() => random_secret(),
        p => p,
    };
    let (callout_seed, issuer) = callout_issuer(config, &data_dir)?;
    let server = NatsServer::start_in(
        NatsServerOptions {
            bin,
            config: config.nats.server_config.clone(),
            port: config.nats.embedded_port,
            store_dir: data_dir.path().join("nats"),
            log_file: Some(data_dir.path().join("nats-server.log")),
            secrets: ServerSecrets {
                broker_password: broker_password.clone(),
                simulator_password: simulator_password.clone(),
                system_password: system_password.clone(),
                callout_issuer: issuer,
            },
            tls: config.nats.tls.clone(),
        },
        &data_dir,
    )
    .await?;
    config.nats.url = server.url();
    config.nats.password = broker_password;
    config.nats.simulator_password = simulator_password;
    config.nats.system_password = system_password;
    config.nats.callout_seed = callout_seed;
    // Admin commands and demo agents find the embedded server here.
    std::fs::write(data_dir.path().join("nats.url"), server.url())?;
    tracing::info!(url = %server.url(), "embedded nats-server is running");
    Ok(Embedded { server, data_dir })
}

/// The auth callout's issuer as (seed, public key): the node signs agents' permissions with the
/// seed, and nats-server trusts only the public key. A configured seed wins; otherwise the data
/// directory keeps one, so a restarted node and a server started earlier agree.
fn callout_issuer(config: &Config, data_dir: &DataDir) -> Result<(String, String), BoxError> {
    match config.callout_seed() {
        seed if seed.is_empty() => Ok(data_dir.callout_seed()?),
        seed => {
            let key =
                nkeys::KeyPair::from_seed(&seed).map_err(|e| format!("nats.callout_seed: {e}"))?;
            Ok((seed, key.public_key()))
        }
    }
}

/// The configuration as `check-config` prints it: each secret replaced by where it comes from.
fn redacted(config: &Config) -> Config {
    let embedded = config.nats.url.is_empty();
    let describe = |value: String, otherwise: &str| match value.is_empty() {
        true => otherwise.to_string(),
        false => "(set)".to_string(),
    };
    let mut shown = config.clone();
    shown.nats.password = describe(
        config.nats_password(),
        if embedded {
            "(generated at start)"
        } else {
            "(not set)"
        },
    );
    shown.nats.simulator_password = describe(config.simulator_password(), "(not set: off)");
    shown.nats.system_password = describe(
        config.system_password(),
        if embedded {
            "(generated at start)"
        } else {
            "(not set)"
        },
    );
    let seed_file = DataDir::callout_seed_file_in(&config.storage.data_dir);
    shown.nats.callout_seed = describe(
        config.callout_seed(),
        &match embedded {
            true => format!("(generated, stored in {})", seed_file.display()),
            false => "(not set)".to_string(),
        },
    );
    if shown.metrics.token.is_some() {
        shown.metrics.token = Some("(set)".into());
    }
    shown
}

async fn run_admin(mut config: Config, admin: Admin) -> Result<(), BoxError> {
    // The issuer key commands work on the configuration alone.
    match admin {
        Admin::IssuerKey => {
            println!("{}", issuer::public_key(&config)?);
            return Ok(());
        }
        Admin::NewCalloutSeed => {
            println!("{}", issuer::new_seed());
            return Ok(());
        }
        _ => {}
    }
    if config.nats.url.is_empty() {
        // The node's embedded server, if one is running from this data dir.
        let file = config.storage.data_dir.join("nats.url");
        config.nats.url = std::fs::read_to_string(&file)
            .map_err(|_| {
                format!(
                    "nats.url is empty and {} does not exist: is the node running?",
                    file.display()
                )
            })?
            .trim()
            .to_string();
    }
    let client = natter::connect(&config).await?;
    let stores = Stores::ensure(client.clone(), natter::store_config(&config)).await?;
    match admin {
        Admin::AddOperator {
            username,
            name,
            admin,
            scopes,
            password_stdin: _,
        } => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            let record = directory::put_operator(
                &stores.operators,
                &username,
                &name,
                admin,
                &scopes,
                password,
            )
            .await?;
            println!(
                "operator {} ({}){} saved",
                record.username,
                record.name,
                if record.admin { ", admin" } else { "" }
            );
        }
        Admin::EnrollToken { group, uses, ttl } => {
            identity::enroll_token(&client, config.nats.replicas, &group, uses, ttl).await?
        }
        Admin::ForgetKey { machine } => {
            identity::forget_key(&client, config.nats.replicas, &machine).await?
        }
        Admin::EnrollTokens => identity::list_tokens(&client, config.nats.replicas).await?,
        Admin::RevokeToken { id } => {
            identity::revoke_token(&client, config.nats.replicas, &id).await?
        }
        Admin::AddMachine { machine } => {
            machine_request(&client, &machine, MachineRequest::Provision).await?
        }
        Admin::Suspend { machine } => {
            machine_request(
                &client,
                &machine,
                MachineRequest::Suspend { suspended: true },
            )
            .await?
        }
        Admin::Resume { machine } => {
            machine_request(
                &client,
                &machine,
                MachineRequest::Suspend { suspended: false },
            )
            .await?
        }
        Admin::Role(command) => role_command(&stores.roles, command).await?,
        Admin::IssuerKey | Admin::NewCalloutSeed => unreachable!("answered above"),
    }
    client.flush().await?;
    Ok(())
}

/// `natter admin role …`.
async fn role_command(
    roles: &natter_actors::roles::Roles,
    command: RoleCommand,
) -> Result<(), BoxError> {
    let right = |on: bool| {
        if on {
            "may start a chat"
        } else {
            "may not start a chat"
        }
    };
    match command {
        RoleCommand::Create {
            name,
            may_start_chat,
        } => {
            let r = roles.create(&name, may_start_chat).await?;
            println!("role {} created: {}", r.name, right(r.may_start_chat));
        }
        RoleCommand::Set {
            name,
            may_start_chat,
        } => {
            let r = roles
                .set_may_start_chat(&name, may_start_chat.unwrap_or_default())
                .await?;
            println!("role {}: {}", r.name, right(r.may_start_chat));
        }
        RoleCommand::Delete { name } => {
            roles.delete(&name).await?;
            println!("role {name} deleted");
        }
        RoleCommand::List => {
            let list = roles.list().await?;
            if list.is_empty() {
                eprintln!("no machine roles");
            } else {
                println!("{:<24}  {:<14}  MACHINES", "ROLE", "MAY START CHAT");
            }
            for r in list {
                println!(
                    "{:<24}  {:<14}  {}",
                    r.name,
                    if r.may_start_chat { "yes" } else { "no" },
                    r.machines.join(" ")
                );
            }
        }
        RoleCommand::Assign { machine, role } => {
            roles.assign(&machine, &role).await?;
            println!("{machine}: role {role}");
        }
        RoleCommand::Unassign { machine } => match roles.unassign(&machine).await? {
            Some(role) => println!("{machine}: no role (was {role})"),
            None => println!("{machine}: had no role"),
        },
    }
    Ok(())
}

/// Asks a machine's agent actor (on whichever node owns it) and prints the machine's state.
async fn machine_request(
    client: &async_nats::Client,
    machine: &str,
    request: MachineRequest,
) -> Result<(), BoxError> {
    if !natter_actors::protocol::valid_machine_id(machine) {
        return Err(format!("{machine:?} is not a machine ID (like pc1.sales.acme)").into());
    }
    let body = serde_json::to_vec(&request)?;
    // Retried while the machine's partition changes hands between nodes.
    let (reply, _) = natter_actors::partitions::request_owner::<MachineReply>(
        client,
        natter_actors::subjects::machine_request(machine),
        body.into(),
        std::time::Duration::from_secs(5),
        natter_actors::partitions::machine_moved,
    )
    .await
    .map_err(|e| format!("no node answered: {e}"))?;
    let record = reply.map_err(|e| format!("{machine}: {e}"))?;
    println!("{}: {}", record.id, record.status.describe());
    Ok(())
}
