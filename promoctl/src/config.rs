//! Where promoctl finds the gateway, credentials and stores, for every
//! command alike: flags > env (`PROMOCTL_*`, merged by clap) > `config.toml`
//! in the config dir > defaults. The config dir is `PROMOCTL_CONFIG_DIR`,
//! else `~/.config/promoctl`.
//!
//! Like a kubeconfig, the file may hold named contexts: the top-level keys
//! apply to all of them, `[contexts.NAME]` overrides them, and
//! `current_context` (set by `promoctl config use-context NAME`) or
//! `--context NAME` (`PROMOCTL_CONTEXT`) picks one.

use crate::error::{CtlError, CtlResult};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:4000";

/// The settings of one context; each key is also a flag (`--gateway-url`)
/// and an env var (`PROMOCTL_GATEWAY_URL`) of the same name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timesale_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// A PEM file of CA certificates trusted, besides the system's, for an
    /// https gateway and role urls (kubectl's `certificate-authority`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    /// For `rediss://` with a private CA (promod's `redis_ca_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<PathBuf>,
    /// librdkafka's `security.protocol`, `ssl.ca.location` and `sasl.*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_security_protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_ssl_ca_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_mechanism: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_password: Option<String>,
    /// The service roles' REST base URLs (the dashboard's health and metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timesale_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_prefix: Option<String>,
}

impl FileConfig {
    /// `over`'s keys where it sets them, ours elsewhere.
    fn overlay(self, over: FileConfig) -> FileConfig {
        FileConfig {
            gateway_url: over.gateway_url.or(self.gateway_url),
            email: over.email.or(self.email),
            password: over.password.or(self.password),
            gateway_database_url: over.gateway_database_url.or(self.gateway_database_url),
            coupon_database_url: over.coupon_database_url.or(self.coupon_database_url),
            point_database_url: over.point_database_url.or(self.point_database_url),
            timesale_database_url: over.timesale_database_url.or(self.timesale_database_url),
            redis_url: over.redis_url.or(self.redis_url),
            kafka_brokers: over.kafka_brokers.or(self.kafka_brokers),
            certificate_authority: over.certificate_authority.or(self.certificate_authority),
            redis_ca_file: over.redis_ca_file.or(self.redis_ca_file),
            kafka_security_protocol: over
                .kafka_security_protocol
                .or(self.kafka_security_protocol),
            kafka_ssl_ca_location: over.kafka_ssl_ca_location.or(self.kafka_ssl_ca_location),
            kafka_sasl_mechanism: over.kafka_sasl_mechanism.or(self.kafka_sasl_mechanism),
            kafka_sasl_username: over.kafka_sasl_username.or(self.kafka_sasl_username),
            kafka_sasl_password: over.kafka_sasl_password.or(self.kafka_sasl_password),
            coupon_url: over.coupon_url.or(self.coupon_url),
            point_url: over.point_url.or(self.point_url),
            timesale_url: over.timesale_url.or(self.timesale_url),
            etcd_url: over.etcd_url.or(self.etcd_url),
            etcd_prefix: over.etcd_prefix.or(self.etcd_prefix),
        }
    }
}

/// `config.toml` as written: shared keys, contexts, and the current one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    pub shared: FileConfig,
    pub current_context: Option<String>,
    pub contexts: BTreeMap<String, FileConfig>,
}

/// The context named by `--context` / `PROMOCTL_CONTEXT`, set once at start:
/// every command and helper that reads the file then sees the same context
/// without threading the flag through each of them.
static SELECTED_CONTEXT: OnceLock<String> = OnceLock::new();

pub fn select_context(name: Option<&str>) {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        let _ = SELECTED_CONTEXT.set(n.to_owned());
    }
}

pub fn config_dir() -> CtlResult<PathBuf> {
    if let Some(d) = std::env::var_os("PROMOCTL_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CtlError::usage("neither PROMOCTL_CONFIG_DIR nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".config").join("promoctl"))
}

pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.toml")
}

/// The file's text, or `None` when there is no file.
fn read_text(path: &Path) -> CtlResult<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CtlError::usage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

impl ConfigFile {
    /// A missing file is an empty config; a malformed one is a usage error.
    pub fn load(dir: &Path) -> CtlResult<ConfigFile> {
        let path = config_path(dir);
        match read_text(&path)? {
            None => Ok(ConfigFile::default()),
            Some(text) => ConfigFile::parse(&text)
                .map_err(|e| CtlError::usage(format!("malformed {}: {e}", path.display()))),
        }
    }

    pub fn parse(text: &str) -> Result<ConfigFile, toml::de::Error> {
        let mut table: toml::Table = toml::from_str(text)?;
        let current_context = match table.remove("current_context") {
            Some(v) => Some(String::deserialize(v)?),
            None => None,
        };
        let contexts = match table.remove("contexts") {
            Some(v) => BTreeMap::<String, FileConfig>::deserialize(v)?,
            None => BTreeMap::new(),
        };
        let shared = FileConfig::deserialize(toml::Value::Table(table))?;
        Ok(ConfigFile {
            shared,
            current_context,
            contexts,
        })
    }

    /// The context in force: `--context`, else `current_context`, else none.
    pub fn context_name(&self) -> Option<&str> {
        SELECTED_CONTEXT
            .get()
            .map(String::as_str)
            .or(self.current_context.as_deref())
    }

    /// The shared keys under the context `name` (when one is named).
    pub fn resolve(self, name: Option<&str>) -> CtlResult<FileConfig> {
        let Some(name) = name else {
            return Ok(self.shared);
        };
        match self.contexts.get(name) {
            Some(ctx) => Ok(self.shared.clone().overlay(ctx.clone())),
            None => Err(CtlError::usage(format!(
                "no context {name:?} in the config file (contexts: {})",
                self.names()
            ))),
        }
    }

    fn names(&self) -> String {
        match self.contexts.len() {
            0 => "none".to_owned(),
            _ => self.contexts.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

impl FileConfig {
    /// The settings in force: the file's shared keys under the selected
    /// context. A missing file is an empty config; a malformed one, or a
    /// context it does not define, is a usage error.
    pub fn load(dir: &Path) -> CtlResult<FileConfig> {
        let file = ConfigFile::load(dir)?;
        let name = file.context_name().map(str::to_owned);
        file.resolve(name.as_deref())
    }
}

/// Makes `name` the current context, keeping the rest of the file (comments
/// included) as it is.
pub fn use_context(dir: &Path, name: &str) -> CtlResult<()> {
    let path = config_path(dir);
    let text = read_text(&path)?.unwrap_or_default();
    let file = ConfigFile::parse(&text)
        .map_err(|e| CtlError::usage(format!("malformed {}: {e}", path.display())))?;
    if !file.contexts.contains_key(name) {
        return Err(CtlError::usage(format!(
            "no context {name:?} in {} (contexts: {})",
            path.display(),
            file.names()
        )));
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| CtlError::usage(format!("malformed {}: {e}", path.display())))?;
    // toml_edit writes the root's keys before its tables, so a new key
    // cannot land inside the last context.
    doc["current_context"] = toml_edit::value(name);
    std::fs::write(&path, doc.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The first value that is set: the flag (or its env var, as clap merged it),
/// then the file, then the default.
pub fn pick(flag: Option<&str>, file: Option<&str>, default: &str) -> String {
    flag.or(file)
        .filter(|s| !s.is_empty())
        .unwrap_or(default)
        .to_owned()
}

/// Tokens from the last login, kept in `token.json` (mode 0600).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    pub gateway_url: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds when the access token expires.
    pub expires_at: i64,
}

impl StoredToken {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("token.json")
    }

    pub fn load(dir: &Path) -> CtlResult<Option<StoredToken>> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                CtlError::usage(format!(
                    "malformed {}: {e}; run `promoctl login`",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CtlError::usage(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes through a temporary file created 0600, so the token is never
    /// readable by others, not even for a moment.
    pub fn save(&self, dir: &Path) -> CtlResult<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = Self::path(dir);
        let tmp = dir.join(format!(".token.json.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self).context("cannot encode the token")?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .context("cannot restrict the token file")?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    pub fn remove(dir: &Path) -> CtlResult<bool> {
        match std::fs::remove_file(Self::path(dir)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CtlError::other("cannot remove the token", e)),
        }
    }

    /// Expired, or about to: a request sent now could arrive too late.
    pub fn is_expired(&self, now_unix: i64) -> bool {
        now_unix + 30 >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> PathBuf {
        std::env::temp_dir().join(format!("promoctl-cfg-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn flag_beats_file_beats_default() {
        assert_eq!(pick(Some("a"), Some("b"), "c"), "a");
        assert_eq!(pick(None, Some("b"), "c"), "b");
        assert_eq!(pick(None, None, "c"), "c");
        assert_eq!(pick(Some(""), None, "c"), "c");
    }

    #[test]
    fn token_round_trips_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir();
        let t = StoredToken {
            gateway_url: DEFAULT_GATEWAY.into(),
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: 100,
        };
        t.save(&dir).unwrap();
        let mode = std::fs::metadata(StoredToken::path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(StoredToken::load(&dir).unwrap(), Some(t.clone()));
        assert!(t.is_expired(80));
        assert!(!t.is_expired(10));
        assert!(StoredToken::remove(&dir).unwrap());
        assert_eq!(StoredToken::load(&dir).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn contexts_override_the_shared_keys() {
        let text = "gateway_url = \"http://shared\"\nredis_url = \"redis://shared\"\n\
                    current_context = \"staging\"\n\
                    [contexts.staging]\ngateway_url = \"https://staging\"\n\
                    [contexts.prod]\nredis_url = \"rediss://prod\"\n";
        let file = ConfigFile::parse(text).unwrap();
        assert_eq!(file.current_context.as_deref(), Some("staging"));
        let staging = file.clone().resolve(Some("staging")).unwrap();
        assert_eq!(staging.gateway_url.as_deref(), Some("https://staging"));
        assert_eq!(staging.redis_url.as_deref(), Some("redis://shared"));
        let prod = file.clone().resolve(Some("prod")).unwrap();
        assert_eq!(prod.gateway_url.as_deref(), Some("http://shared"));
        assert_eq!(prod.redis_url.as_deref(), Some("rediss://prod"));
        assert_eq!(file.clone().resolve(None).unwrap(), file.shared);
        let e = file.resolve(Some("nope")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("prod, staging"), "{e}");
    }

    #[test]
    fn use_context_keeps_the_file_and_refuses_unknown_names() {
        let dir = tmpdir();
        std::fs::create_dir_all(&dir).unwrap();
        let text = "# mine\ngateway_url = \"http://x\"\n[contexts.a]\nemail = \"a@x\"\n\
                    [contexts.b]\nemail = \"b@x\"\n";
        std::fs::write(config_path(&dir), text).unwrap();
        use_context(&dir, "b").unwrap();
        let after = std::fs::read_to_string(config_path(&dir)).unwrap();
        assert!(after.starts_with("# mine\n"), "{after}");
        let file = ConfigFile::parse(&after).unwrap();
        assert_eq!(file.current_context.as_deref(), Some("b"));
        assert_eq!(file.contexts.len(), 2, "{after}");
        use_context(&dir, "a").unwrap();
        let file = ConfigFile::load(&dir).unwrap();
        assert_eq!(file.current_context.as_deref(), Some("a"));
        assert_eq!(use_context(&dir, "c").unwrap_err().exit_code(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        let dir = tmpdir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), "gateway_url = \"http://x\"\n").unwrap();
        let c = FileConfig::load(&dir).unwrap();
        assert_eq!(c.gateway_url.as_deref(), Some("http://x"));
        std::fs::write(dir.join("config.toml"), "gatway = 1\n").unwrap();
        let e = FileConfig::load(&dir).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
