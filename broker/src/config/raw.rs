//! `natter.toml` as written, with every key's default: strings where parsing needs a clear
//! message (durations, addresses), checked in [`super::validate`].

use std::time::Duration;

use natter_gateway::limits::LimitsConfig;
use serde::Deserialize;

/// The file as written: strings where parsing needs a clear message.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub http: RawHttp,
    pub fleet: RawFleet,
    pub nats: RawNats,
    pub storage: RawStorage,
    pub chat: RawChat,
    pub log: RawLog,
    pub limits: RawLimits,
    pub node: RawNode,
    pub metrics: RawMetrics,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    pub listen: String,
    pub public_url: String,
    pub secure_cookies: bool,
    pub login_ttl: String,
    pub request_timeout: String,
    pub drain_timeout: String,
    pub history_cache_mib: u32,
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
            history_cache_mib: 64,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFleet {
    pub offline_after: u32,
    pub refresh: String,
    pub sweep: String,
    pub rest_after: String,
}

impl Default for RawFleet {
    fn default() -> Self {
        RawFleet {
            offline_after: 3,
            refresh: "5m".into(),
            sweep: "250ms".into(),
            rest_after: "1s".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNats {
    pub url: String,
    pub user: String,
    pub password: String,
    pub server_bin: String,
    pub server_config: String,
    pub embedded_port: u16,
    pub callout_seed: String,
    pub simulator_password: String,
    pub system_password: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub tls_ca: String,
    pub replicas: usize,
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
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            replicas: 1,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStorage {
    pub data_dir: String,
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
pub(super) struct RawChat {
    pub retention: String,
    pub max_message_bytes: usize,
    pub duplicate_window: String,
    pub idle_actor_timeout: String,
    pub agent_timeout: String,
    pub session_ttl: String,
    pub link_ttl: String,
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
            link_ttl: "5m".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "human".into(),
        }
    }
}

/// `[node]`: an empty id is replaced by the default (`<hostname>-<http port>`).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNode {
    pub id: String,
}

/// `[metrics]`: an empty token serves `/metrics` to loopback clients only.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub token: String,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    pub logins_per_address: u32,
    pub logins_per_username: u32,
    pub concurrent_hashes: usize,
    pub hash_wait: String,
    pub header_timeout: String,
    pub body_timeout: String,
    pub max_connections: usize,
    pub connections_per_address: usize,
    pub streams_per_operator_login: usize,
    pub streams_per_machine_user_login: usize,
}

/// The gateway's own defaults, so that they are written once.
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
