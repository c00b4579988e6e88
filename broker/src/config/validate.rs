//! Turning the file as written into a [`Config`], checking each key; an error names the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::embedded::ServerTls;
use natter_gateway::limits::LimitsConfig;

use super::raw::{
    RawChat, RawConfig, RawFleet, RawHttp, RawLimits, RawLog, RawMetrics, RawNats, RawNode,
    RawStorage,
};
use super::{
    ChatConfig, Config, ConfigError, FleetConfig, HttpConfig, LogConfig, LogFormat, MetricsConfig,
    NatsConfig, NodeConfig, StorageConfig, invalid,
};

/// Checks every section.
pub(super) fn config(raw: RawConfig) -> Result<Config, ConfigError> {
    let http = http(raw.http)?;
    Ok(Config {
        node: node(raw.node, &http)?,
        metrics: metrics(raw.metrics),
        http,
        chat: chat(raw.chat)?,
        log: log(raw.log)?,
        nats: nats(raw.nats)?,
        storage: storage(raw.storage)?,
        fleet: fleet(raw.fleet)?,
        limits: limits(raw.limits)?,
    })
}

fn http(raw: RawHttp) -> Result<HttpConfig, ConfigError> {
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        invalid(
            "http.listen",
            format!("{:?} is not an address like 127.0.0.1:8080", raw.listen),
        )
    })?;
    let public_url = if raw.public_url.trim().is_empty() {
        format!("http://{listen}")
    } else {
        let u = raw.public_url.trim().trim_end_matches('/').to_string();
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(invalid(
                "http.public_url",
                "must start with http:// or https://",
            ));
        }
        u
    };
    Ok(HttpConfig {
        listen,
        public_url,
        secure_cookies: raw.secure_cookies,
        login_ttl: duration("http.login_ttl", &raw.login_ttl)?,
        request_timeout: duration("http.request_timeout", &raw.request_timeout)?,
        drain_timeout: duration("http.drain_timeout", &raw.drain_timeout)?,
        history_cache_mib: raw.history_cache_mib,
    })
}

fn chat(raw: RawChat) -> Result<ChatConfig, ConfigError> {
    let retention = duration("chat.retention", &raw.retention)?;
    if raw.max_message_bytes == 0 || raw.max_message_bytes > 64 * 1024 {
        return Err(invalid(
            "chat.max_message_bytes",
            "must be between 1 and 65536",
        ));
    }
    Ok(ChatConfig {
        retention,
        max_message_bytes: raw.max_message_bytes,
        duplicate_window: duration("chat.duplicate_window", &raw.duplicate_window)?,
        idle_actor_timeout: duration("chat.idle_actor_timeout", &raw.idle_actor_timeout)?,
        agent_timeout: duration("chat.agent_timeout", &raw.agent_timeout)?,
        session_ttl: duration("chat.session_ttl", &raw.session_ttl)?,
        link_ttl: duration("chat.link_ttl", &raw.link_ttl)?,
    })
}

fn log(raw: RawLog) -> Result<LogConfig, ConfigError> {
    let format = match raw.format.trim() {
        "human" | "" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log.format",
                format!("{other:?}: use human or json"),
            ));
        }
    };
    Ok(LogConfig { format })
}

fn nats(raw: RawNats) -> Result<NatsConfig, ConfigError> {
    let url = raw.url.trim().to_string();
    let servers = super::server_urls(&url);
    if !url.is_empty() && servers.is_empty() {
        return Err(invalid("nats.url", "names no server"));
    }
    if let Some(bad) = servers
        .iter()
        .find(|u| !(u.starts_with("nats://") || u.starts_with("tls://")))
    {
        return Err(invalid(
            "nats.url",
            format!(
                "{bad:?}: every URL (several are separated by commas) must start with nats:// or \
                 tls:// (or leave nats.url empty for the embedded server)"
            ),
        ));
    }
    if !(1..=MAX_REPLICAS).contains(&raw.replicas) {
        return Err(invalid(
            "nats.replicas",
            format!(
                "{}: must be between 1 and {MAX_REPLICAS} (3 on a cluster of three servers)",
                raw.replicas
            ),
        ));
    }
    if raw.replicas > 1 && url.is_empty() {
        return Err(invalid(
            "nats.replicas",
            "above 1 needs a NATS cluster (nats.url); the embedded server is one server",
        ));
    }
    let path = |s: String| Some(PathBuf::from(s.trim())).filter(|p| !p.as_os_str().is_empty());
    let tls = match (path(raw.tls_cert), path(raw.tls_key)) {
        (None, None) => None,
        (Some(cert), Some(key)) if url.is_empty() => Some(ServerTls { cert, key }),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "nats.tls_cert",
                "is for the embedded server only (nats.url must be empty)",
            ));
        }
        (Some(_), None) => return Err(invalid("nats.tls_key", "must be set with nats.tls_cert")),
        (None, Some(_)) => return Err(invalid("nats.tls_cert", "must be set with nats.tls_key")),
    };
    Ok(NatsConfig {
        tls,
        tls_ca: path(raw.tls_ca),
        url,
        user: raw.user,
        password: raw.password,
        server_bin: raw.server_bin,
        server_config: PathBuf::from(raw.server_config),
        embedded_port: raw.embedded_port,
        callout_seed: raw.callout_seed,
        simulator_password: raw.simulator_password,
        system_password: raw.system_password,
        replicas: raw.replicas,
    })
}

/// JetStream allows at most 5 replicas of a stream.
const MAX_REPLICAS: usize = 5;

fn storage(raw: RawStorage) -> Result<StorageConfig, ConfigError> {
    if raw.data_dir.trim().is_empty() {
        return Err(invalid("storage.data_dir", "must not be empty"));
    }
    Ok(StorageConfig {
        data_dir: PathBuf::from(raw.data_dir),
    })
}

fn fleet(raw: RawFleet) -> Result<FleetConfig, ConfigError> {
    if raw.offline_after == 0 {
        return Err(invalid("fleet.offline_after", "must be at least 1"));
    }
    Ok(FleetConfig {
        offline_after: raw.offline_after,
        refresh: duration("fleet.refresh", &raw.refresh)?,
        sweep: duration("fleet.sweep", &raw.sweep)?,
        rest_after: duration("fleet.rest_after", &raw.rest_after)?,
    })
}

fn limits(raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    Ok(LimitsConfig {
        logins_per_address: raw.logins_per_address,
        logins_per_username: raw.logins_per_username,
        concurrent_hashes: raw.concurrent_hashes,
        hash_wait: duration("limits.hash_wait", &raw.hash_wait)?,
        header_timeout: duration("limits.header_timeout", &raw.header_timeout)?,
        body_timeout: duration("limits.body_timeout", &raw.body_timeout)?,
        max_connections: raw.max_connections,
        connections_per_address: raw.connections_per_address,
        streams_per_operator_login: raw.streams_per_operator_login,
        streams_per_machine_user_login: raw.streams_per_machine_user_login,
    })
}

/// Longest node id.
const NODE_ID_MAX: usize = 64;

fn node(raw: RawNode, http: &HttpConfig) -> Result<NodeConfig, ConfigError> {
    let id = raw.id.trim();
    if id.is_empty() {
        return Ok(NodeConfig {
            id: default_node_id(&hostname(), http.listen.port()),
        });
    }
    // No dots: an id may become a NATS subject token or a KV key.
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
    if id.len() > NODE_ID_MAX || !id.chars().all(allowed) {
        return Err(invalid(
            "node.id",
            format!("{id:?}: use up to {NODE_ID_MAX} letters, digits, '-' or '_'"),
        ));
    }
    Ok(NodeConfig { id: id.to_string() })
}

/// The machine's host name, or `natter` if it has none we can read.
fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "natter".into())
}

/// `<host>-<port>`, the host name cut to what a node id may hold.
pub(super) fn default_node_id(host: &str, port: u16) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(NODE_ID_MAX - 6)
        .collect();
    format!("{host}-{port}")
}

fn metrics(raw: RawMetrics) -> MetricsConfig {
    let token = raw.token.trim();
    MetricsConfig {
        token: (!token.is_empty()).then(|| token.to_string()),
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
