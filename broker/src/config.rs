//! `natter.toml`: every key with its default, environment overrides (`NATTER__SECTION__KEY`),
//! checked at start with an error that names the bad key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::embedded::ServerSecrets;
use natter_gateway::limits::LimitsConfig;
use serde::Deserialize;

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
}

#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// NATS server URL; empty = start the embedded nats-server.
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
    /// `NATTER_NATS_CALLOUT_SEED` (generated in the embedded mode).
    pub callout_seed: String,
    /// Password of the `natter-simulator` user (a simulated fleet); empty =
    /// `NATTER_NATS_SIMULATOR_PASSWORD`, and if that is empty too the simulator cannot log in.
    pub simulator_password: String,
    /// Password of the `natter-system` user (system account: cutting off revoked agents);
    /// empty = `NATTER_NATS_SYSTEM_PASSWORD` (generated in the embedded mode).
    pub system_password: String,
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
}

#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// An agent is shown offline after this many missed check-in intervals.
    pub offline_after: u32,
    /// A machine record whose status did not change is rewritten at most this often.
    pub refresh: Duration,
    /// How often "offline" deadlines are checked.
    pub sweep: Duration,
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

/// The file as written: strings where parsing needs a clear message.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    http: RawHttp,
    fleet: RawFleet,
    nats: RawNats,
    storage: RawStorage,
    chat: RawChat,
    log: RawLog,
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    listen: String,
    public_url: String,
    secure_cookies: bool,
    login_ttl: String,
    request_timeout: String,
    drain_timeout: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            secure_cookies: false,
            login_ttl: "12h".into(),
            request_timeout: "5s".into(),
            drain_timeout: "5s".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFleet {
    offline_after: u32,
    refresh: String,
    sweep: String,
}

impl Default for RawFleet {
    fn default() -> Self {
        RawFleet {
            offline_after: 3,
            refresh: "5m".into(),
            sweep: "250ms".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNats {
    url: String,
    user: String,
    password: String,
    server_bin: String,
    server_config: String,
    embedded_port: u16,
    callout_seed: String,
    simulator_password: String,
    system_password: String,
}

impl Default for RawNats {
    fn default() -> Self {
        RawNats {
            url: String::new(),
            user: "natter-broker".into(),
            password: String::new(),
            server_bin: String::new(),
            server_config: "nats.conf".into(),
            embedded_port: 4222,
            callout_seed: String::new(),
            simulator_password: String::new(),
            system_password: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStorage {
    data_dir: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            data_dir: "data".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawChat {
    retention: String,
    max_message_bytes: usize,
    duplicate_window: String,
    idle_actor_timeout: String,
    agent_timeout: String,
    session_ttl: String,
}

impl Default for RawChat {
    fn default() -> Self {
        RawChat {
            retention: "1h".into(),
            max_message_bytes: 4096,
            duplicate_window: "2m".into(),
            idle_actor_timeout: "5m".into(),
            agent_timeout: "10s".into(),
            session_ttl: "24h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "human".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    logins_per_address: u32,
    logins_per_username: u32,
    concurrent_hashes: usize,
    hash_wait: String,
    header_timeout: String,
    body_timeout: String,
    max_connections: usize,
    connections_per_address: usize,
    streams_per_operator_login: usize,
    streams_per_machine_user_login: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = LimitsConfig::default();
        let secs = |t: Duration| format!("{}s", t.as_secs());
        RawLimits {
            logins_per_address: d.logins_per_address,
            logins_per_username: d.logins_per_username,
            concurrent_hashes: d.concurrent_hashes,
            hash_wait: secs(d.hash_wait),
            header_timeout: secs(d.header_timeout),
            body_timeout: secs(d.body_timeout),
            max_connections: d.max_connections,
            connections_per_address: d.connections_per_address,
            streams_per_operator_login: d.streams_per_operator_login,
            streams_per_machine_user_login: d.streams_per_machine_user_login,
        }
    }
}

impl RawLimits {
    fn check(self) -> Result<LimitsConfig, ConfigError> {
        Ok(LimitsConfig {
            logins_per_address: self.logins_per_address,
            logins_per_username: self.logins_per_username,
            concurrent_hashes: self.concurrent_hashes,
            hash_wait: duration("limits.hash_wait", &self.hash_wait)?,
            header_timeout: duration("limits.header_timeout", &self.header_timeout)?,
            body_timeout: duration("limits.body_timeout", &self.body_timeout)?,
            max_connections: self.max_connections,
            connections_per_address: self.connections_per_address,
            streams_per_operator_login: self.streams_per_operator_login,
            streams_per_machine_user_login: self.streams_per_machine_user_login,
        })
    }
}

fn duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not a duration like 30s or 1h ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, "must be more than zero"));
    }
    Ok(d)
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
        Config::from_raw(raw)
    }

    /// The defaults (what an empty `natter.toml` gives).
    pub fn defaults() -> Config {
        Config::from_raw(RawConfig::default()).expect("defaults are valid")
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw.http.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    raw.http.listen
                ),
            )
        })?;
        let public_url = if raw.http.public_url.trim().is_empty() {
            format!("http://{listen}")
        } else {
            let u = raw.http.public_url.trim().trim_end_matches('/').to_string();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    "http.public_url",
                    "must start with http:// or https://",
                ));
            }
            u
        };
        let retention = duration("chat.retention", &raw.chat.retention)?;
        if raw.chat.max_message_bytes == 0 || raw.chat.max_message_bytes > 64 * 1024 {
            return Err(invalid(
                "chat.max_message_bytes",
                "must be between 1 and 65536",
            ));
        }
        let format = match raw.log.format.trim() {
            "human" | "" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?}: use human or json"),
                ));
            }
        };
        let url = raw.nats.url.trim().to_string();
        if !(url.is_empty() || url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(invalid(
                "nats.url",
                "must start with nats:// or tls:// (or be empty)",
            ));
        }
        if raw.storage.data_dir.trim().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        if raw.fleet.offline_after == 0 {
            return Err(invalid("fleet.offline_after", "must be at least 1"));
        }
        Ok(Config {
            fleet: FleetConfig {
                offline_after: raw.fleet.offline_after,
                refresh: duration("fleet.refresh", &raw.fleet.refresh)?,
                sweep: duration("fleet.sweep", &raw.fleet.sweep)?,
            },
            http: HttpConfig {
                listen,
                public_url,
                secure_cookies: raw.http.secure_cookies,
                login_ttl: duration("http.login_ttl", &raw.http.login_ttl)?,
                request_timeout: duration("http.request_timeout", &raw.http.request_timeout)?,
                drain_timeout: duration("http.drain_timeout", &raw.http.drain_timeout)?,
            },
            nats: NatsConfig {
                url,
                user: raw.nats.user,
                password: raw.nats.password,
                server_bin: raw.nats.server_bin,
                server_config: PathBuf::from(raw.nats.server_config),
                embedded_port: raw.nats.embedded_port,
                callout_seed: raw.nats.callout_seed,
                simulator_password: raw.nats.simulator_password,
                system_password: raw.nats.system_password,
            },
            storage: StorageConfig {
                data_dir: PathBuf::from(raw.storage.data_dir),
            },
            chat: ChatConfig {
                retention,
                max_message_bytes: raw.chat.max_message_bytes,
                duplicate_window: duration("chat.duplicate_window", &raw.chat.duplicate_window)?,
                idle_actor_timeout: duration(
                    "chat.idle_actor_timeout",
                    &raw.chat.idle_actor_timeout,
                )?,
                agent_timeout: duration("chat.agent_timeout", &raw.chat.agent_timeout)?,
                session_ttl: duration("chat.session_ttl", &raw.chat.session_ttl)?,
            },
            log: LogConfig { format },
            limits: raw.limits.check()?,
        })
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
        Config::from_raw(raw)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::defaults();
        assert_eq!(c.chat.retention, Duration::from_secs(3600));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.http.public_url, "http://127.0.0.1:8080");
        assert!(c.nats.url.is_empty());
        assert_eq!(c.chat.max_message_bytes, 4096);
    }

    #[test]
    fn the_shipped_file_is_valid_and_matches_the_defaults() {
        let shipped = include_str!("../../natter.toml");
        let c = from_toml(shipped).unwrap();
        let d = Config::defaults();
        assert_eq!(c.chat.retention, d.chat.retention);
        assert_eq!(c.http.listen, d.http.listen);
        assert_eq!(format!("{:?}", c.limits), format!("{:?}", d.limits));
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
