//! The REST client of the gateway: base URL, bearer token, an idempotency key
//! per invocation, and the error body of API.md turned into `CtlError`.

use crate::config::StoredToken;
use crate::error::{ApiErrorBody, CtlError, CtlResult};
use reqwest::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole-request deadline of a streamed GET: in effect none, the idle
/// deadline of `crate::stream` does the work (reqwest can only override a
/// client's deadline per request, not remove it).
pub const NO_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    idempotency_key: String,
    /// Overrides the client's 30 s deadline for every request (`with_timeout`).
    timeout: Option<Duration>,
}

/// An http client builder that trusts, besides the system's roots, the CA
/// certificates in `ca` (PEM): an https gateway with a private CA.
pub fn http_builder(ca: Option<&Path>) -> CtlResult<reqwest::ClientBuilder> {
    let builder = reqwest::Client::builder();
    let Some(path) = ca else {
        return Ok(builder);
    };
    let pem = std::fs::read(path).map_err(|e| {
        CtlError::usage(format!(
            "cannot read the certificate authority {}: {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| CtlError::usage(format!("no pem certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(CtlError::usage(format!(
            "no pem certificate in {}",
            path.display()
        )));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, cert| b.add_root_certificate(cert)))
}

impl Client {
    pub fn new(
        base: &str,
        idempotency_key: Option<String>,
        ca: Option<&Path>,
    ) -> CtlResult<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::usage(format!(
                "gateway url `{base}` must start with http:// or https://"
            )));
        }
        let http = http_builder(ca)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CtlError::other("cannot build the http client", e))?;
        Ok(Client {
            http,
            base,
            token: None,
            // One key per invocation: a retry of the same command line with
            // `--idempotency-key` replays instead of acting twice.
            idempotency_key: idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            timeout: None,
        })
    }

    /// The same client with a deadline of `t` per request: a bulk write
    /// (code generation) answers only once all of it is committed, which may
    /// take minutes.
    pub fn with_timeout(mut self, t: Duration) -> Client {
        self.timeout = Some(t);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> CtlResult<Value> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> CtlResult<Value> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> CtlResult<Value> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    /// Sends `/api/v1{path}`; an empty answer (204) is `Value::Null`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> CtlResult<Value> {
        let mut req = self.request(method.clone(), path);
        if !query.is_empty() {
            req = req.query(query);
        }
        if matches!(method, Method::POST | Method::PATCH) && self.token.is_some() {
            req = req.header("Idempotency-Key", &self.idempotency_key);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .map_err(|e| CtlError::other("the gateway answered invalid json", e));
        }
        Err(CtlError::Refused(parse_error(status.as_u16(), &text)))
    }

    /// `/api/v1{path}` with the token and the deadline of this client.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(t) = self.timeout {
            req = req.timeout(t);
        }
        req
    }

    /// GETs `/api/v1{path}` for a body to stream (the codes export): the
    /// response once its status is a success, its body unread. A million
    /// lines may take longer than any whole-request deadline on a slow link,
    /// so this one has none; `crate::stream` reads each chunk within an idle
    /// deadline instead.
    pub async fn get_stream(&self, path: &str) -> CtlResult<reqwest::Response> {
        let resp = self
            .request(Method::GET, path)
            .timeout(NO_DEADLINE)
            .send()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(CtlError::Refused(parse_error(status.as_u16(), &text)))
    }
}

/// A request that got no answer: the gateway is unreachable when the
/// connection or the wait failed, anything else is a failure of its own.
pub fn transport_error(base: &str, e: reqwest::Error) -> CtlError {
    let what = format!("gateway at {base}");
    if e.is_connect() || e.is_timeout() || e.is_request() {
        CtlError::unreachable(what, e)
    } else {
        CtlError::other(what, e)
    }
}

/// `{"error":{"code","message","field"}}`, or whatever the body was when a
/// proxy answered instead of the gateway.
pub fn parse_error(status: u16, body: &str) -> ApiErrorBody {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let s = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ApiErrorBody {
        status,
        code: s("code").unwrap_or_else(|| format!("HTTP_{status}")),
        message: s("message").unwrap_or_else(|| {
            let t = body.trim();
            if t.is_empty() {
                "no error body".to_owned()
            } else {
                t.chars().take(200).collect()
            }
        }),
        field: s("field"),
    }
}

/// A logged-in session: refreshes the stored access token when it expired.
pub struct Session {
    pub dir: PathBuf,
    pub gateway_url: String,
    pub email: Option<String>,
    pub password: Option<String>,
}

impl Session {
    pub async fn login(
        &self,
        client: &Client,
        email: &str,
        password: &str,
    ) -> CtlResult<StoredToken> {
        let v = client
            .post(
                "/auth/login",
                serde_json::json!({"email": email, "password": password}),
            )
            .await?;
        let t = token_from(&self.gateway_url, &v)?;
        t.save(&self.dir)?;
        Ok(t)
    }

    /// A client with a valid access token: the stored one, refreshed, or a
    /// new login when credentials are configured.
    pub async fn authed(&self, client: Client) -> CtlResult<Client> {
        let stored = StoredToken::load(&self.dir)?.filter(|t| t.gateway_url == self.gateway_url);
        let now = chrono::Utc::now().timestamp();
        if let Some(t) = &stored {
            if !t.is_expired(now) {
                return Ok(client.with_token(t.access_token.clone()));
            }
            let refreshed = client
                .post(
                    "/auth/refresh",
                    serde_json::json!({"refresh_token": t.refresh_token}),
                )
                .await;
            match refreshed {
                Ok(v) => {
                    let t = token_from(&self.gateway_url, &v)?;
                    t.save(&self.dir)?;
                    return Ok(client.with_token(t.access_token));
                }
                // A revoked or expired refresh token: fall through to a login.
                Err(CtlError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match (&self.email, &self.password) {
            (Some(e), Some(p)) => {
                let t = self.login(&client, e, p).await?;
                Ok(client.with_token(t.access_token))
            }
            _ => Err(CtlError::usage(format!(
                "not logged in to {}: run `promoctl login` (or set PROMOCTL_EMAIL and PROMOCTL_PASSWORD)",
                self.gateway_url
            ))),
        }
    }
}

fn token_from(gateway_url: &str, v: &Value) -> CtlResult<StoredToken> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CtlError::Other(anyhow::anyhow!("the login answer has no `{k}`")))
    };
    let expires_in = v.get("expires_in").and_then(Value::as_i64).unwrap_or(0);
    Ok(StoredToken {
        gateway_url: gateway_url.to_owned(),
        access_token: s("access_token")?,
        refresh_token: s("refresh_token")?,
        expires_at: chrono::Utc::now().timestamp() + expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_parsed_or_summarised() {
        let e = parse_error(
            409,
            r#"{"error":{"code":"SOLD_OUT","message":"no coupons left","field":"policy_id"}}"#,
        );
        assert_eq!(e.code, "SOLD_OUT");
        assert_eq!(e.message, "no coupons left");
        assert_eq!(e.field.as_deref(), Some("policy_id"));
        let e = parse_error(502, "<html>bad gateway</html>");
        assert_eq!(e.code, "HTTP_502");
        assert_eq!(e.message, "<html>bad gateway</html>");
        assert_eq!(parse_error(500, "").message, "no error body");
    }

    #[test]
    fn bad_base_urls_are_usage_errors() {
        let e = Client::new("localhost:4000", None, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let c = Client::new("http://h:1/", Some("k".into()), None).unwrap();
        assert_eq!(c.base(), "http://h:1");
        assert_eq!(c.idempotency_key(), "k");
    }
}
