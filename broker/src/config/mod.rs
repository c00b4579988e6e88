//! `natter.toml`: every key with its default, environment overrides (`NATTER__SECTION__KEY`),
//! checked at start with an error that names the bad key.
//!
//! - this module: the validated [`Config`] and how it is loaded;
//! - `raw`: the file as written, with every default;
//! - `validate`: the checks, one function per section.

mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::embedded::ServerSecrets;
use natter_gateway::limits::LimitsConfig;
use raw::RawConfig;

/// The node's whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub fleet: FleetConfig,
    pub nats: NatsConfig,
    pub storage: StorageConfig,
    pub chat: ChatConfig,
    pub log: LogConfig,
    /// The gateway's limits (`[limits]`).
    pub limits: LimitsConfig,
    pub node: NodeConfig,
    pub metrics: MetricsConfig,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's name in logs and metrics (`node.id`). Default `<hostname>-<http port>`:
    /// the same across restarts, and distinct for nodes sharing a host.
    pub id: String,
}

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// The bearer token `/metrics` asks for; `None`: only loopback clients may read it.
    pub token: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// Base URL browsers reach the gateway at (links sent to agents). Default `http://<listen>`.
    pub public_url: String,
    /// Mark cookies `Secure` (behind an HTTPS proxy).
    pub secure_cookies: bool,
    pub login_ttl: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    /// MiB of recently read chat histories the gateway keeps (0: none).
    pub history_cache_mib: u32,
}

#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// NATS server URL, or several separated by commas (servers of one cluster: the node
    /// connects to any and fails over to the others); empty = start the embedded nats-server.
    pub url: String,
    pub user: String,
    /// Password; empty = the `NATTER_NATS_BROKER_PASSWORD` environment variable.
    pub password: String,
    /// nats-server binary for the embedded mode; empty = `nats-server` on PATH, then
    /// `.tools/nats/bin/nats-server`.
    pub server_bin: String,
    /// Server configuration for the embedded mode.
    pub server_config: PathBuf,
    /// Client port of the embedded server (0 = any free port).
    pub embedded_port: u16,
    /// Seed of the account key that signs agent permissions (auth callout); empty =
    /// `NATTER_NATS_CALLOUT_SEED` (embedded mode: generated once, kept in `<data_dir>/callout.seed`).
    pub callout_seed: String,
    /// Password of the `natter-simulator` user (a simulated fleet); empty =
    /// `NATTER_NATS_SIMULATOR_PASSWORD`, and if that is empty too the simulator cannot log in.
    pub simulator_password: String,
    /// Password of the `natter-system` user (system account: cutting off revoked agents);
    /// empty = `NATTER_NATS_SYSTEM_PASSWORD` (generated in the embedded mode).
    pub system_password: String,
    /// The embedded server's certificate and key (PEM): every client must then use TLS.
    pub tls: Option<crate::embedded::ServerTls>,
    /// CA (PEM) the node's own NATS connections trust; set = they require TLS.
    pub tls_ca: Option<PathBuf>,
    /// Copies of the events stream and of every KV bucket (JetStream replicas): 1 on one
    /// server, 3 on a cluster of three; 1..=5.
    pub replicas: usize,
}

impl NatsConfig {
    /// The server URLs of `url`, one per comma-separated entry.
    pub fn servers(&self) -> Vec<String> {
        server_urls(&self.url)
    }
}

/// The non-empty, trimmed comma-separated entries of a `nats.url`.
fn server_urls(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Where the embedded nats-server keeps JetStream data (`<data_dir>/nats`).
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// How long messages are kept (F3).
    pub retention: Duration,
    pub max_message_bytes: usize,
    pub duplicate_window: Duration,
    pub idle_actor_timeout: Duration,
    pub agent_timeout: Duration,
    /// How long a session stays joinable after its last activity.
    pub session_ttl: Duration,
    /// How long a chat link works if unused (it works once).
    pub link_ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// An agent is shown offline after this many missed check-in intervals.
    pub offline_after: u32,
    /// A machine record whose status did not change is rewritten at most this often.
    pub refresh: Duration,
    /// How often "offline" deadlines are checked.
    pub sweep: Duration,
    /// An agent actor idle this long, with nothing pending, goes back to a record.
    pub rest_after: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// A configuration that cannot be used; names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Loads `path` (if given; it must exist then) and the environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(p) = path {
            builder = builder.add_source(config::File::from(p).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("NATTER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let raw: RawConfig = builder.build()?.try_deserialize()?;
        validate::config(raw)
    }

    /// The defaults (what an empty `natter.toml` gives).
    pub fn defaults() -> Config {
        validate::config(RawConfig::default()).expect("defaults are valid")
    }

    /// The auth callout issuer seed: the configured one, else the environment's.
    pub fn callout_seed(&self) -> String {
        env_or(&self.nats.callout_seed, "NATTER_NATS_CALLOUT_SEED")
    }

    /// The simulator's password: the configured one, else the environment's.
    pub fn simulator_password(&self) -> String {
        env_or(
            &self.nats.simulator_password,
            ServerSecrets::SIMULATOR_PASSWORD_VAR,
        )
    }

    /// The system user's password: the configured one, else the environment's.
    pub fn system_password(&self) -> String {
        env_or(
            &self.nats.system_password,
            ServerSecrets::SYSTEM_PASSWORD_VAR,
        )
    }

    /// The broker's NATS password: the configured one, else the environment's.
    pub fn nats_password(&self) -> String {
        if self.nats.password.is_empty() {
            std::env::var(ServerSecrets::BROKER_PASSWORD_VAR).unwrap_or_default()
        } else {
            self.nats.password.clone()
        }
    }
}

fn env_or(configured: &str, var: &str) -> String {
    if configured.is_empty() {
        std::env::var(var).unwrap_or_default()
    } else {
        configured.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(s: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(s, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        validate::config(raw)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::defaults();
        assert_eq!(c.chat.retention, Duration::from_secs(3600));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.http.public_url, "http://127.0.0.1:8080");
        assert!(c.nats.url.is_empty());
        assert_eq!(c.chat.max_message_bytes, 4096);
        assert!(c.node.id.ends_with("-8080"), "{}", c.node.id);
        assert!(c.metrics.token.is_none());
    }

    #[test]
    fn the_default_node_id_is_the_host_and_port() {
        assert_eq!(
            validate::default_node_id("box1.example.com", 8081),
            "box1-example-com-8081"
        );
        let c = from_toml("[node]\nid = \"eu-1\"\n[metrics]\ntoken = \"t\"").unwrap();
        assert_eq!(
            (c.node.id.as_str(), c.metrics.token.as_deref()),
            ("eu-1", Some("t"))
        );
        let e = from_toml("[node]\nid = \"a b\"").unwrap_err().to_string();
        assert!(e.contains("node.id"), "{e}");
    }

    #[test]
    fn the_shipped_file_is_valid_and_matches_the_defaults() {
        let shipped = include_str!("../../../natter.toml");
        let c = from_toml(shipped).unwrap();
        let d = Config::defaults();
        assert_eq!(c.chat.retention, d.chat.retention);
        assert_eq!(c.http.listen, d.http.listen);
        assert_eq!(format!("{:?}", c.limits), format!("{:?}", d.limits));
    }

    #[test]
    fn tls_files_are_read_and_checked() {
        let c = from_toml("[nats]\ntls_cert = \"s.pem\"\ntls_key = \"k.pem\"\ntls_ca = \"ca.pem\"")
            .unwrap();
        let tls = c.nats.tls.expect("server TLS");
        assert_eq!((tls.cert, tls.key), ("s.pem".into(), "k.pem".into()));
        assert_eq!(c.nats.tls_ca, Some("ca.pem".into()));
        assert!(Config::defaults().nats.tls.is_none());
        let e = from_toml("[nats]\ntls_cert = \"s.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats.tls_key"), "{e}");
        let e = from_toml("[nats]\nurl = \"tls://h:4222\"\ntls_cert = \"s\"\ntls_key = \"k\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats.tls_cert"), "{e}");
    }

    #[test]
    fn several_nats_urls_and_replicas() {
        let c =
            from_toml("[nats]\nurl = \"nats://a:4222, nats://b:4222,tls://c:4222\"\nreplicas = 3")
                .unwrap();
        assert_eq!(
            c.nats.servers(),
            ["nats://a:4222", "nats://b:4222", "tls://c:4222"]
        );
        assert_eq!(c.nats.replicas, 3);
        assert_eq!(Config::defaults().nats.replicas, 1);
        assert!(Config::defaults().nats.servers().is_empty());
        for bad in [
            "url = \"nats://a:4222,b:4222\"",
            "url = \" , \"",
            "url = \"nats://a:4222\"\nreplicas = 0",
            "url = \"nats://a:4222\"\nreplicas = 6",
            "replicas = 3",
        ] {
            let e = from_toml(&format!("[nats]\n{bad}"))
                .unwrap_err()
                .to_string();
            let key = if bad.contains("replicas") {
                "nats.replicas"
            } else {
                "nats.url"
            };
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = from_toml("[chat]\nretention = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chat.retention"), "{e}");
        let e = from_toml("[http]\nlisten = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen"), "{e}");
        let e = from_toml("[chat]\nretenshun = \"1h\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retenshun"), "{e}");
        let e = from_toml("[log]\nformat = \"xml\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.format"), "{e}");
        let e = from_toml("[limits]\nheader_timeout = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.header_timeout"), "{e}");
    }
}
