//! The little of etcd that promoctl reads (the keys under a prefix, for the
//! dashboard's instance counts), over etcd's JSON gateway (`/v3/kv/range`,
//! etcd 3.4 and later) with the HTTP client promoctl already has. The gRPC
//! client crate would link tonic and axum into the CLI for this one call.
//! The names follow that crate's, so callers read the same.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
}

impl ConnectOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    prefix: bool,
    keys_only: bool,
}

impl GetOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_prefix(mut self) -> Self {
        self.prefix = true;
        self
    }

    pub fn with_keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct GetResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

impl GetResponse {
    pub fn kvs(&self) -> &[KeyValue] {
        &self.kvs
    }
}

#[derive(Debug, Deserialize)]
pub struct KeyValue {
    #[serde(deserialize_with = "from_b64")]
    key: Vec<u8>,
}

impl KeyValue {
    pub fn key_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.key)
    }
}

fn from_b64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(serde::de::Error::custom)
}

impl Client {
    /// Uses the first endpoint; a url without a scheme is taken as http.
    pub async fn connect<S: AsRef<str>>(
        endpoints: impl IntoIterator<Item = S>,
        opts: Option<ConnectOptions>,
    ) -> anyhow::Result<Client> {
        let endpoint = endpoints
            .into_iter()
            .next()
            .context("no etcd endpoint given")?;
        let endpoint = endpoint.as_ref().trim_end_matches('/');
        let base = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let opts = opts.unwrap_or_default();
        let mut http = reqwest::Client::builder();
        if let Some(t) = opts.connect_timeout {
            http = http.connect_timeout(t);
        }
        if let Some(t) = opts.timeout {
            http = http.timeout(t);
        }
        Ok(Client {
            http: http.build().context("cannot build the etcd http client")?,
            base,
        })
    }

    pub async fn get(
        &mut self,
        key: impl AsRef<[u8]>,
        opts: Option<GetOptions>,
    ) -> anyhow::Result<GetResponse> {
        let key = key.as_ref();
        let opts = opts.unwrap_or_default();
        let mut body = serde_json::json!({ "key": B64.encode(key) });
        if opts.prefix {
            body["range_end"] = B64.encode(prefix_end(key)).into();
        }
        if opts.keys_only {
            body["keys_only"] = true.into();
        }
        let url = format!("{}/v3/kv/range", self.base);
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("etcd at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!("etcd at {} answered {status}: {text}", self.base);
        }
        resp.json()
            .await
            .with_context(|| format!("unreadable answer from etcd at {}", self.base))
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its
/// last byte below 0xff incremented (what etcd's own clients send).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or none): to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_like_etcds_clients() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[tokio::test]
    async fn lists_the_keys_under_a_prefix_only() {
        let url =
            std::env::var("PROMO_TEST_ETCD").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
        let prefix = format!("/promoctl-etcd-test-{}/", uuid::Uuid::new_v4().simple());
        let http = reqwest::Client::new();
        for k in ["a/1", "a/2", "b/1"] {
            let body = serde_json::json!({
                "key": B64.encode(format!("{prefix}{k}")),
                "value": B64.encode("x"),
            });
            let r = http
                .post(format!("{url}/v3/kv/put"))
                .json(&body)
                .send()
                .await
                .expect("etcd answers (PROMO_TEST_ETCD)");
            assert!(r.status().is_success());
        }
        // A sibling whose name extends the prefix's last segment.
        let sibling = format!("{}x/1", prefix.trim_end_matches('/'));
        let body = serde_json::json!({"key": B64.encode(&sibling), "value": B64.encode("x")});
        http.post(format!("{url}/v3/kv/put"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let opts = ConnectOptions::new().with_timeout(Duration::from_secs(3));
        let mut c = Client::connect([url.as_str()], Some(opts)).await.unwrap();
        let resp = c
            .get(
                format!("{prefix}a/"),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        let mut keys: Vec<&str> = resp.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        keys.sort_unstable();
        assert_eq!(keys, [format!("{prefix}a/1"), format!("{prefix}a/2")]);
        let all = c
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(all.kvs().len(), 3, "the sibling is not under the prefix");
        let none = c
            .get(
                format!("{prefix}zzz/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        assert!(none.kvs().is_empty());
        // Clean up, range delete of the prefix and the sibling.
        for k in [prefix.clone(), sibling] {
            let body = serde_json::json!({
                "key": B64.encode(&k),
                "range_end": B64.encode(prefix_end(k.as_bytes())),
            });
            http.post(format!("{url}/v3/kv/deleterange"))
                .json(&body)
                .send()
                .await
                .ok();
        }
    }
}
