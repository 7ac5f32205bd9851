//! Configuration: defaults < TOML file < `PROMO_*` env (`__` nests) < CLI flags.
//! Every default works with `scripts/services.sh`.
//!
//! Secrets never print: the JWT secret and the bootstrap admin password are
//! not serialized at all, and a URL's password is serialized as `***`. Debug
//! prints what Serialize writes, so it redacts the same way.

use crate::roles::RoleSet;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use promo_store::kafka::KafkaSecurity;
use promo_store::{text, urls};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub roles: RoleSet,
    pub log: LogConfig,
    #[serde(serialize_with = "ser_url")]
    pub redis_url: String,
    /// For `rediss://`: the PEM file of the CA that signed Redis's
    /// certificate, when the system's trust store does not hold it.
    pub redis_ca_file: Option<PathBuf>,
    /// Kafka bootstrap servers; empty disables publishing (events wait in the outbox).
    pub kafka_brokers: String,
    /// TLS and SASL for Kafka (librdkafka's `security.protocol`, `ssl.*`,
    /// `sasl.*`), e.g. `PROMO_KAFKA__SECURITY_PROTOCOL=ssl`.
    pub kafka: KafkaSecurity,
    /// etcd endpoints; empty means static addresses from config.
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub etcd_lease_ttl_secs: i64,
    /// The advertised host of this process's gRPC endpoints in etcd.
    pub advertise_host: String,
    /// HS256 signing secret, at least 32 bytes. Never logged.
    #[serde(skip_serializing, deserialize_with = "text::de_secret")]
    pub jwt_secret: SecretString,
    pub bootstrap_admin_email: Option<String>,
    #[serde(skip_serializing, deserialize_with = "text::de_opt_secret")]
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
    pub reservation: ReservationConfig,
    pub holds: HoldConfig,
    pub overload: OverloadConfig,
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

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    #[serde(serialize_with = "ser_url")]
    pub database_url: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PointConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    pub max_earn_amount: i64,
    pub cache_ttl_secs: u64,
    pub lots: LotConfig,
}

/// Point lots (`point/expiry.rs`): the default lifetime of an earn and the
/// lot sweeper's pace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LotConfig {
    /// The lifetime of a lot whose earn names no `expires_at`, in days; 0
    /// means it never expires.
    pub default_lifetime_days: u32,
    /// How often the sweepers look for expired lots: the bound on how late an
    /// expiry happens, plus the time of the sweep itself.
    pub sweep_every_ms: u64,
    /// One sweep transaction claims the users of the first this-many due
    /// lots and expires all their due lots (10 lots a user: 10x as many).
    /// Smaller sweeps hold fewer balance rows for less time: at 1,000 a
    /// sweep of a million lots was as fast as at 10,000, and the p99 of the
    /// traffic beside it fell from 328 to 185 ms (perf/README.md, issue 21).
    pub sweep_batch: i64,
    /// Sweeper tasks per point process, each over its share of the users.
    pub sweepers: u8,
}

impl Default for LotConfig {
    fn default() -> Self {
        LotConfig {
            default_lifetime_days: 0,
            sweep_every_ms: 1_000,
            sweep_batch: 1_000,
            sweepers: 2,
        }
    }
}

impl LotConfig {
    /// The default lifetime of a new lot (`None`: never expires).
    pub fn default_lifetime(&self) -> Option<chrono::Duration> {
        let days = i64::from(self.default_lifetime_days);
        (days > 0).then(|| chrono::Duration::days(days))
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TimesaleConfig {
    #[serde(flatten)]
    pub service: ServiceConfig,
    pub remaining_sync_interval_secs: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    #[serde(serialize_with = "ser_url")]
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
    /// Failed code redemptions, limited whether or not `rate_limit` is on.
    pub code_guard: CodeGuardConfig,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    /// The deadline of bulk writes (code generation), which answer once
    /// up to a million rows are committed.
    pub bulk_timeout_ms: u64,
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

/// Buckets of failed code redemptions (a mistyped, unknown or spent code),
/// per user and per client IP: each failure takes a token, and while either
/// bucket is empty every redemption of its owner is 429. Refills are per
/// minute: guessing stays at a handful of tries a minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeGuardConfig {
    pub user_burst: u32,
    pub user_per_min: f64,
    pub ip_burst: u32,
    pub ip_per_min: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    pub batch_size: i64,
    pub poll_interval_ms: u64,
    pub retention_secs: i64,
}

/// Crash-safe reservations (`reconcile.rs`): a taking whose row never came
/// is given back once it is older than `bound_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservationConfig {
    /// How old an unsettled taking must be before it is given back. Rows
    /// commit within half of it or not at all (the engine's commit deadline).
    pub bound_ms: u64,
    /// How often each coupon or timesale role looks for such takings.
    pub reconcile_every_ms: u64,
}

/// Holds (`sweep.rs`): checkout reservations that expire by themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HoldConfig {
    /// A hold's lifetime when the request names none (1..=86400).
    pub default_seconds: i64,
    /// How often each role looks for holds past their `expires_at`: the
    /// bound on how late an expiry happens, plus one batch's time.
    pub sweep_every_ms: u64,
    /// How many due holds one sweep transaction expires.
    pub sweep_batch: i64,
}

impl HoldConfig {
    pub fn pace(&self) -> crate::sweep::Pace {
        crate::sweep::Pace {
            every_ms: self.sweep_every_ms,
            batch: self.sweep_batch,
        }
    }
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            default_seconds: 900,
            sweep_every_ms: 1_000,
            sweep_batch: 1_000,
        }
    }
}

/// Admission control (`overload.rs`): the same bound for each REST and
/// gRPC port on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OverloadConfig {
    /// The most requests a port works on at once; one more is answered 503
    /// with `Retry-After` at once, never queued.
    pub max_in_flight: usize,
    /// Whether the bound follows latency between `min_in_flight` and
    /// `max_in_flight` (else it is `max_in_flight`).
    pub adaptive: bool,
    /// The adaptive bound's floor (it starts at `max_in_flight`).
    pub min_in_flight: usize,
    /// The adaptive bound falls while requests take longer than this inside
    /// promod, and grows while they do not.
    pub latency_target_ms: u64,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            max_in_flight: 256,
            adaptive: true,
            min_in_flight: 64,
            latency_target_ms: 25,
        }
    }
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
            redis_ca_file: None,
            kafka_brokers: String::new(),
            kafka: KafkaSecurity::default(),
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
            reservation: ReservationConfig::default(),
            holds: HoldConfig::default(),
            overload: OverloadConfig::default(),
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
            lots: LotConfig::default(),
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
            code_guard: CodeGuardConfig::default(),
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            bulk_timeout_ms: 300_000,
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

impl Default for CodeGuardConfig {
    fn default() -> Self {
        CodeGuardConfig {
            user_burst: 10,
            user_per_min: 10.0,
            ip_burst: 30,
            ip_per_min: 30.0,
        }
    }
}

impl Default for ReservationConfig {
    fn default() -> Self {
        ReservationConfig {
            bound_ms: 10_000,
            reconcile_every_ms: 2_000,
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

/// `scheme://user:password@host/..` with the password replaced by `***`.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let Some((user, _)) = authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
    else {
        return url.into();
    };
    let host_and_path = &rest[authority.rfind('@').map_or(0, |at| at + 1)..];
    format!("{scheme}://{user}:***@{host_and_path}").into()
}

fn ser_url<S: serde::Serializer>(url: &str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&redact_url(url))
}

/// Debug prints what Serialize writes, which holds no secret.
macro_rules! debug_as_serialized {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match serde_json::to_string(self) {
                    Ok(json) => write!(f, "{} {json}", stringify!($t)),
                    Err(e) => write!(f, "{} (unprintable: {e})", stringify!($t)),
                }
            }
        }
    )*};
}

debug_as_serialized!(
    Config,
    ServiceConfig,
    PointConfig,
    TimesaleConfig,
    GatewayConfig
);

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
    /// Layers the sources and validates the result. The env layer reads the
    /// process environment: `PROMO_A__B=v` sets `a.b`, and its values are
    /// parsed (`7`, `true`, `[..]`); `PROMO_TEST_*` belong to the tests.
    pub fn load(file: Option<&std::path::Path>, cli: &CliOverrides) -> Result<Config, ConfigError> {
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
        let env = Env::prefixed("PROMO_")
            .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("test_"))
            .split("__");
        let cfg: Config = fig
            .merge(env)
            .merge(Serialized::defaults(cli))
            .extract_lossy()
            .map_err(|e| ConfigError::Invalid(e.to_string().to_lowercase()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.reservation.bound_ms < 1_000 || self.reservation.reconcile_every_ms == 0 {
            return Err(ConfigError::Invalid(
                "reservation.bound_ms must be at least 1000 and reservation.reconcile_every_ms greater than 0".into(),
            ));
        }
        let h = &self.holds;
        if !(1..=promo_domain::hold::MAX_HOLD_SECONDS).contains(&h.default_seconds)
            || h.sweep_every_ms == 0
            || !(1..=10_000).contains(&h.sweep_batch)
        {
            return Err(ConfigError::Invalid(
                "holds.default_seconds must be 1..=86400, holds.sweep_every_ms greater than 0 and holds.sweep_batch 1..=10000".into(),
            ));
        }
        let l = &self.point.lots;
        if l.sweep_every_ms == 0 || !(1..=50_000).contains(&l.sweep_batch) || l.sweepers == 0 {
            return Err(ConfigError::Invalid(
                "point.lots.sweep_every_ms and point.lots.sweepers must be greater than 0 and point.lots.sweep_batch 1..=50000".into(),
            ));
        }
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
        if self.gateway.bulk_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "gateway.bulk_timeout_ms must be greater than 0".into(),
            ));
        }
        let g = &self.gateway.code_guard;
        if g.user_burst == 0 || g.ip_burst == 0 || g.user_per_min <= 0.0 || g.ip_per_min <= 0.0 {
            return Err(ConfigError::Invalid(
                "gateway.code_guard bursts and refills must be greater than 0".into(),
            ));
        }
        let o = &self.overload;
        if o.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "overload.max_in_flight must be greater than 0".into(),
            ));
        }
        // The floor means nothing to a fixed bound: old configs that only
        // lower `max_in_flight` stay valid.
        if o.adaptive && (o.min_in_flight == 0 || o.min_in_flight > o.max_in_flight) {
            return Err(ConfigError::Invalid(
                "overload.min_in_flight must be between 1 and overload.max_in_flight".into(),
            ));
        }
        if o.latency_target_ms == 0 {
            return Err(ConfigError::Invalid(
                "overload.latency_target_ms must be greater than 0".into(),
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

fn toml_check(text: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    text.parse::<toml::Table>()
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid(format!("malformed toml in {}: {e}", path.display())))
}

#[cfg(test)]
// Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::roles::Role;
    use figment::Jail;
    use std::path::Path;

    const SECRET: &str = "jwt-secret-jwt-secret-jwt-secret-jwt";

    /// A jail with only the variables a test sets (and the secret every load needs).
    fn jail(test: impl FnOnce(&mut Jail) -> figment::Result<()>) {
        Jail::expect_with(|j| {
            j.clear_env();
            j.set_env("PROMO_JWT_SECRET", SECRET);
            test(j)
        });
    }

    fn load(file: Option<&str>, cli: &CliOverrides) -> Result<Config, ConfigError> {
        Config::load(file.map(Path::new), cli)
    }

    fn no_cli() -> CliOverrides {
        CliOverrides::default()
    }

    #[test]
    fn defaults_then_file_then_env_then_cli() {
        jail(|j| {
            let c = load(None, &no_cli()).unwrap();
            assert_eq!(c.gateway.http_addr.port(), 4000);
            assert_eq!(c.log.format, "text");
            assert_eq!(
                c.point.service.database_url,
                Config::default().point.service.database_url
            );

            j.create_file(
                "promod.toml",
                "log = { format = \"json\", level = \"debug\" }\nroles = \"coupon\"\n\
                 [coupon]\nhttp_addr = \"127.0.0.1:3101\"\n",
            )?;
            let c = load(Some("promod.toml"), &no_cli()).unwrap();
            assert_eq!(c.log.format, "json");
            assert_eq!(c.coupon.http_addr.port(), 3101);
            assert!(c.roles.has(Role::Coupon) && !c.roles.has(Role::Gateway));

            j.set_env("PROMO_LOG__LEVEL", "warn");
            j.set_env("PROMO_ROLES", "gateway,point");
            j.set_env("PROMO_DB_MAX_CONNECTIONS", "7");
            j.set_env("PROMO_COUPON__HTTP_ADDR", "127.0.0.1:3201");
            let c = load(Some("promod.toml"), &no_cli()).unwrap();
            assert_eq!(c.log.level, "warn");
            assert_eq!(
                c.log.format, "json",
                "file value survives where env is silent"
            );
            assert_eq!(c.coupon.http_addr.port(), 3201, "env beats the file");
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
            let c = load(Some("promod.toml"), &cli).unwrap();
            assert_eq!(c.log.format, "text");
            assert_eq!(
                c.log.level, "warn",
                "env value survives where cli is silent"
            );
            assert!(c.roles.has(Role::Timesale) && !c.roles.has(Role::Point));
            Ok(())
        });
    }

    #[test]
    fn env_nests_with_double_underscores() {
        jail(|j| {
            let url = "postgres://promo@db.internal:5432/coupons";
            j.set_env("PROMO_COUPON__DATABASE_URL", url);
            j.set_env("PROMO_POINT__MAX_EARN_AMOUNT", "500");
            j.set_env("PROMO_GATEWAY__RATE_LIMIT__ENABLED", "false");
            j.set_env(
                "PROMO_GATEWAY__CORS_ORIGINS",
                "[\"https://a.test\", \"https://b.test\"]",
            );
            // Not config: the tests' own variables and the file path.
            j.set_env("PROMO_TEST_KAFKA", "127.0.0.1:9");
            j.set_env("PROMO_CONFIG", "elsewhere.toml");
            let c = load(None, &no_cli()).unwrap();
            assert_eq!(c.coupon.database_url, url);
            assert_eq!(c.point.max_earn_amount, 500);
            assert_eq!(
                c.point.service.database_url,
                Config::default().point.service.database_url,
                "a flattened section keeps its own defaults"
            );
            assert!(!c.gateway.rate_limit.enabled);
            assert_eq!(c.gateway.cors_origins, ["https://a.test", "https://b.test"]);
            Ok(())
        });
    }

    /// librdkafka's names under `kafka`, a password of digits included,
    /// which never prints.
    #[test]
    fn kafka_security_comes_from_env_and_its_password_never_prints() {
        jail(|j| {
            j.set_env("PROMO_KAFKA__SECURITY_PROTOCOL", "sasl_ssl");
            j.set_env("PROMO_KAFKA__SASL_USERNAME", "4242");
            j.set_env("PROMO_KAFKA__SASL_PASSWORD", "87654321");
            j.set_env("PROMO_REDIS_CA_FILE", "/etc/promo/redis-ca.pem");
            let c = load(None, &no_cli()).unwrap();
            assert_eq!(c.kafka.security_protocol.as_deref(), Some("sasl_ssl"));
            assert_eq!(c.kafka.sasl_username.as_deref(), Some("4242"));
            let pw = c.kafka.sasl_password.as_ref().unwrap();
            assert_eq!(pw.expose_secret(), "87654321");
            let path = c.redis_ca_file.as_deref().and_then(|p| p.to_str());
            assert_eq!(path, Some("/etc/promo/redis-ca.pem"));
            for printed in [format!("{c:?}"), toml::to_string(&c).unwrap()] {
                assert!(!printed.contains("87654321"), "{printed}");
                assert!(printed.contains("sasl_ssl"), "{printed}");
            }
            Ok(())
        });
    }

    #[test]
    fn secrets_of_digits_stay_text() {
        jail(|j| {
            let digits = "1".repeat(40);
            j.set_env("PROMO_JWT_SECRET", &digits);
            j.set_env("PROMO_BOOTSTRAP_ADMIN_PASSWORD", "12345678");
            let c = load(None, &no_cli()).unwrap();
            assert_eq!(c.jwt_secret.expose_secret(), digits);
            let pw = c.bootstrap_admin_password.unwrap();
            assert_eq!(pw.expose_secret(), "12345678");
            Ok(())
        });
    }

    #[test]
    fn printed_config_holds_no_secret() {
        jail(|j| {
            j.set_env("PROMO_BOOTSTRAP_ADMIN_PASSWORD", "admin-pass-word");
            j.set_env(
                "PROMO_GATEWAY__DATABASE_URL",
                "postgres://gw:db-pass-word@h:5432/gateway_db",
            );
            j.set_env(
                "PROMO_POINT__DATABASE_URL",
                "postgres://pt:db-pass-word@h/point_db",
            );
            j.set_env("PROMO_REDIS_URL", "redis://:redis-pass-word@h:6379/0");
            let c = load(None, &no_cli()).unwrap();
            assert_eq!(
                c.bootstrap_admin_password.as_ref().unwrap().expose_secret(),
                "admin-pass-word"
            );
            assert!(c.redis_url.contains("redis-pass-word"), "loaded in clear");
            let printed = [
                format!("{c:?}"),
                format!("{:?}", c.gateway),
                format!("{:?}", c.point),
                serde_json::to_string(&c).unwrap(),
                toml::to_string(&c).unwrap(),
            ];
            for p in &printed {
                for secret in [SECRET, "admin-pass-word", "db-pass-word", "redis-pass-word"] {
                    assert!(!p.contains(secret), "{secret} printed in {p}");
                }
            }
            assert!(
                printed[0].contains("postgres://gw:***@h:5432/gateway_db"),
                "{}",
                printed[0]
            );
            assert!(
                printed[0].contains("redis://:***@h:6379/0"),
                "{}",
                printed[0]
            );
            Ok(())
        });
    }

    #[test]
    fn urls_lose_only_their_password() {
        assert_eq!(
            redact_url("postgres://u:p@h:1/db?x=1"),
            "postgres://u:***@h:1/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("http://h/p@q:r"), "http://h/p@q:r");
        assert_eq!(redact_url("u:p@h"), "u:p@h");
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        jail(|j| {
            j.create_file("bad.toml", "roles = [\n")?;
            let e = load(Some("bad.toml"), &no_cli()).unwrap_err();
            assert!(e.to_string().contains("malformed toml"), "{e}");
            let e = load(Some("missing.toml"), &no_cli()).unwrap_err();
            assert!(e.to_string().contains("does not exist"), "{e}");

            j.set_env("PROMO_ROLES", "gateway,bogus");
            let e = load(None, &no_cli()).unwrap_err();
            assert!(e.to_string().contains("bogus"), "{e}");

            j.set_env("PROMO_ROLES", "gateway");
            j.set_env("PROMO_JWT_SECRET", "short");
            let e = load(None, &no_cli()).unwrap_err();
            assert!(e.to_string().contains("at least 32 bytes"), "{e}");
            assert!(
                !e.to_string().contains("short\""),
                "the secret itself is not echoed"
            );

            j.set_env("PROMO_OVERLOAD__MAX_IN_FLIGHT", "0");
            let e = load(None, &no_cli()).unwrap_err();
            assert!(e.to_string().contains("overload.max_in_flight"), "{e}");

            j.set_env("PROMO_OVERLOAD__MAX_IN_FLIGHT", "8");
            j.set_env("PROMO_OVERLOAD__MIN_IN_FLIGHT", "9");
            let e = load(None, &no_cli()).unwrap_err();
            assert!(e.to_string().contains("overload.min_in_flight"), "{e}");
            j.set_env("PROMO_OVERLOAD__ADAPTIVE", "false");
            j.set_env("PROMO_JWT_SECRET", "a-secret-of-more-than-thirty-two-bytes");
            load(None, &no_cli()).expect("a fixed bound has no floor to check");
            j.set_env("PROMO_OVERLOAD__ADAPTIVE", "true");

            j.set_env("PROMO_OVERLOAD__MIN_IN_FLIGHT", "4");
            j.set_env("PROMO_OVERLOAD__LATENCY_TARGET_MS", "0");
            let e = load(None, &no_cli()).unwrap_err();
            assert!(e.to_string().contains("overload.latency_target_ms"), "{e}");
            Ok(())
        });
    }
}
