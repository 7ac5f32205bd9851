//! Configuration: defaults < TOML file < `PROMO_*` env (`__` nests) < CLI flags.
//! Every default works with `scripts/services.sh`.

use crate::roles::RoleSet;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use promo_store::urls;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub roles: RoleSet,
    pub log: LogConfig,
    pub redis_url: String,
    /// Kafka bootstrap servers; empty disables publishing (events wait in the outbox).
    pub kafka_brokers: String,
    /// etcd endpoints; empty means static addresses from config.
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub etcd_lease_ttl_secs: i64,
    /// The advertised host of this process's gRPC endpoints in etcd.
    pub advertise_host: String,
    /// HS256 signing secret, at least 32 bytes. Never logged.
    #[serde(serialize_with = "ser_secret")]
    pub jwt_secret: SecretString,
    pub bootstrap_admin_email: Option<String>,
    #[serde(serialize_with = "ser_opt_secret")]
    pub bootstrap_admin_password: Option<SecretString>,
    /// Call in-process when the gateway and a service share a process.
    pub in_process: bool,
    pub db_max_connections: u32,
    pub db_acquire_timeout_ms: u64,
    pub gateway: GatewayConfig,
    pub coupon: ServiceConfig,
    pub point: PointConfig,
    pub timesale: TimesaleConfig,
    pub outbox: OutboxConfig,
    /// A fixed offset added to the clock (chaos and window tests).
    pub clock_offset_secs: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive, e.g. `info,promod=debug`.
    pub level: String,
    /// When set, logs also go to daily-rotated files in this folder.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub database_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PointConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    pub max_earn_amount: i64,
    pub cache_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TimesaleConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    pub remaining_sync_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// Static gRPC addresses used when etcd is not configured.
    pub coupon_grpc: String,
    pub point_grpc: String,
    pub timesale_grpc: String,
    pub call_timeout_ms: u64,
    pub breaker: BreakerConfig,
    pub rate_limit: RateLimitConfig,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    /// A connection that has not sent a complete request head within this
    /// time is closed (idle keep-alive connections too), so slow or silent
    /// clients cannot hold sockets for ever.
    pub header_read_timeout_ms: u64,
    pub cors_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    pub error_threshold_percent: u32,
    pub window_secs: u64,
    pub min_requests: u32,
    pub reset_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Per client IP on anonymous auth routes: burst and refill per second.
    pub auth_burst: u32,
    pub auth_per_sec: f64,
    pub auth_fail_open: bool,
    /// Per user on authenticated routes.
    pub user_burst: u32,
    pub user_per_sec: f64,
    pub user_fail_open: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    pub batch_size: i64,
    pub poll_interval_ms: u64,
    pub retention_secs: i64,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("static default address")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            roles: RoleSet::default(),
            log: LogConfig::default(),
            redis_url: urls::REDIS_URL.into(),
            kafka_brokers: String::new(),
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/promo/services".into(),
            etcd_lease_ttl_secs: 5,
            advertise_host: "127.0.0.1".into(),
            jwt_secret: SecretString::from(String::new()),
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            in_process: true,
            db_max_connections: 16,
            db_acquire_timeout_ms: 1000,
            gateway: GatewayConfig::default(),
            coupon: ServiceConfig {
                http_addr: addr("127.0.0.1:3001"),
                grpc_addr: addr("127.0.0.1:50051"),
                database_url: urls::COUPON_DATABASE_URL.into(),
            },
            point: PointConfig::default(),
            timesale: TimesaleConfig::default(),
            outbox: OutboxConfig::default(),
            clock_offset_secs: 0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
            dir: None,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Config::default().coupon
    }
}

impl Default for PointConfig {
    fn default() -> Self {
        PointConfig {
            service: ServiceConfig {
                http_addr: addr("127.0.0.1:3002"),
                grpc_addr: addr("127.0.0.1:50052"),
                database_url: urls::POINT_DATABASE_URL.into(),
            },
            max_earn_amount: 10_000_000,
            cache_ttl_secs: 300,
        }
    }
}

impl Default for TimesaleConfig {
    fn default() -> Self {
        TimesaleConfig {
            service: ServiceConfig {
                http_addr: addr("127.0.0.1:3003"),
                grpc_addr: addr("127.0.0.1:50053"),
                database_url: urls::TIMESALE_DATABASE_URL.into(),
            },
            remaining_sync_interval_secs: 5,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            http_addr: addr("127.0.0.1:4000"),
            database_url: urls::GATEWAY_DATABASE_URL.into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 14 * 24 * 3600,
            coupon_grpc: "http://127.0.0.1:50051".into(),
            point_grpc: "http://127.0.0.1:50052".into(),
            timesale_grpc: "http://127.0.0.1:50053".into(),
            call_timeout_ms: 3000,
            breaker: BreakerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            error_threshold_percent: 50,
            window_secs: 10,
            min_requests: 20,
            reset_timeout_secs: 30,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            auth_burst: 20,
            auth_per_sec: 5.0,
            auth_fail_open: false,
            user_burst: 1000,
            user_per_sec: 500.0,
            user_fail_open: true,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch_size: 500,
            poll_interval_ms: 200,
            retention_secs: 24 * 3600,
        }
    }
}

fn ser_secret<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn ser_opt_secret<S: serde::Serializer>(
    s: &Option<SecretString>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_some(s.expose_secret()),
        None => ser.serialize_none(),
    }
}

/// Overrides from the command line, the last layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Layers the sources and validates the result. `env` is passed in so that
    /// tests do not depend on the process environment.
    pub fn load(
        file: Option<&std::path::Path>,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!("cannot read {}: {e}", path.display()))
            })?;
            // Parse first so that malformed TOML is reported with its line.
            toml_check(&text, path)?;
            fig = fig.merge(Toml::string(&text));
        }
        fig = fig.merge(Serialized::defaults(env_layer(env)));
        fig = fig.merge(Serialized::defaults(cli));
        let cfg: Config = fig
            .extract_lossy()
            .map_err(|e| ConfigError::Invalid(e.to_string().to_lowercase()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log.format must be `text` or `json`, not `{}`",
                self.log.format
            )));
        }
        if self.gateway.header_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "gateway.header_read_timeout_ms must be greater than 0".into(),
            ));
        }
        // Every role verifies tokens on its REST port, so every role needs the secret.
        let len = self.jwt_secret.expose_secret().len();
        if len < 32 {
            return Err(ConfigError::Invalid(format!(
                "jwt_secret (PROMO_JWT_SECRET) must be at least 32 bytes, got {len}"
            )));
        }
        Ok(())
    }
}

/// `PROMO_A__B=v` becomes `{a: {b: v}}`.
fn env_layer(env: &[(String, String)]) -> toml::Table {
    let mut root = toml::Table::new();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("PROMO_") else {
            continue;
        };
        if rest.starts_with("TEST_") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        // Scalars stay strings (`extract_lossy` converts "3" or "true" where a
        // number or bool is expected); only `[..]` is read as a TOML array.
        let parsed = value
            .trim_start()
            .starts_with('[')
            .then(|| format!("v = {value}").parse::<toml::Table>().ok())
            .flatten()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        insert_path(&mut root, &path, parsed);
    }
    root
}

fn insert_path(node: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            node.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let child = node
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = child {
                insert_path(t, rest, value);
            }
        }
    }
}

fn toml_check(text: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    text.parse::<toml::Table>()
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid(format!("malformed toml in {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::Role;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, val)| (k.to_string(), val.to_string()))
            .collect();
        v.push(("PROMO_JWT_SECRET".into(), "s".repeat(32)));
        v
    }

    fn file(text: &str) -> tempfile_path::TempPath {
        let p = std::env::temp_dir().join(format!("promod-cfg-{}.toml", uuid::Uuid::new_v4()));
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        tempfile_path::TempPath(p)
    }

    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_then_file_then_env_then_cli() {
        let c = Config::load(None, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(c.gateway.http_addr.port(), 4000);
        assert_eq!(c.log.format, "text");

        let f = file("log = { format = \"json\", level = \"debug\" }\nroles = \"coupon\"\n[coupon]\nhttp_addr = \"127.0.0.1:3101\"\n");
        let c = Config::load(Some(&f.0), &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(c.log.format, "json");
        assert_eq!(c.coupon.http_addr.port(), 3101);
        assert!(c.roles.has(Role::Coupon) && !c.roles.has(Role::Gateway));

        let e = env(&[
            ("PROMO_LOG__LEVEL", "warn"),
            ("PROMO_ROLES", "gateway,point"),
            ("PROMO_DB_MAX_CONNECTIONS", "7"),
        ]);
        let c = Config::load(Some(&f.0), &e, &CliOverrides::default()).unwrap();
        assert_eq!(c.log.level, "warn");
        assert_eq!(
            c.log.format, "json",
            "file value survives where env is silent"
        );
        assert_eq!(c.db_max_connections, 7);
        assert!(c.roles.has(Role::Point) && !c.roles.has(Role::Coupon));

        let cli = CliOverrides {
            roles: Some("timesale".into()),
            log: Some(LogOverrides {
                format: Some("text".into()),
                level: None,
            }),
            kafka_brokers: None,
        };
        let c = Config::load(Some(&f.0), &e, &cli).unwrap();
        assert_eq!(c.log.format, "text");
        assert_eq!(
            c.log.level, "warn",
            "env value survives where cli is silent"
        );
        assert!(c.roles.has(Role::Timesale) && !c.roles.has(Role::Point));
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        let f = file("roles = [\n");
        let e = Config::load(Some(&f.0), &env(&[]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("malformed toml"), "{e}");
        let e = Config::load(
            None,
            &env(&[("PROMO_ROLES", "gateway,bogus")]),
            &CliOverrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let short = vec![("PROMO_JWT_SECRET".to_string(), "short".to_string())];
        let e = Config::load(None, &short, &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("at least 32 bytes"), "{e}");
        assert!(
            !e.to_string().contains("short\""),
            "the secret itself is not echoed"
        );
    }
}
