//! Where promoctl finds the gateway, credentials and stores: flags > env
//! (`PROMOCTL_*`, merged by clap) > `config.toml` in the config dir > defaults.
//! The config dir is `PROMOCTL_CONFIG_DIR`, else `~/.config/promoctl`.

use crate::error::{CtlError, CtlResult};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:4000";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub gateway_url: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub gateway_database_url: Option<String>,
    pub coupon_database_url: Option<String>,
    pub point_database_url: Option<String>,
    pub timesale_database_url: Option<String>,
    pub redis_url: Option<String>,
    pub kafka_brokers: Option<String>,
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

impl FileConfig {
    /// A missing file is an empty config; a malformed one is a usage error.
    pub fn load(dir: &Path) -> CtlResult<FileConfig> {
        let path = dir.join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
            Err(e) => {
                return Err(CtlError::usage(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        toml::from_str(&text)
            .map_err(|e| CtlError::usage(format!("malformed {}: {e}", path.display())))
    }
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
