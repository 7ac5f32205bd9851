//! The `redeem` scenario's fixture: a BATCH policy, its codes generated
//! through the REST route and read back through the streamed export, the
//! way an operator hands codes out.

use super::scenario::{policy_body, Api};
use crate::error::{CtlError, CtlResult};
use anyhow::anyhow;
use promo_domain::code::MAX_BATCH;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// How long one generation may take: the server answers once a batch of
/// up to a million codes is committed (10-20 s on a small host), far past
/// a load request's timeout.
const GENERATE_TIMEOUT: Duration = Duration::from_secs(6 * 60);

/// Codes for a run of `requests`: one each, and a margin for a closed loop
/// that sends more than it planned (a code used twice is a failure).
pub fn enough(requests: u64) -> u64 {
    requests + requests / 20 + 100
}

/// A BATCH policy with `n` fresh codes (its total is `n`, or `stock` when
/// larger), and the codes, read back from its export.
pub async fn fixture(
    api: &Api<'_>,
    admin: &str,
    n: u64,
    per_user: i64,
    stock: Option<i64>,
) -> CtlResult<(Uuid, Vec<Box<str>>)> {
    let n = n.max(1);
    let total = stock.unwrap_or(0).max(n as i64);
    let mut body = policy_body(total, per_user);
    body["code_mode"] = "BATCH".into();
    let policy = api.create("/coupon-policies", admin, body).await?;
    eprintln!("generating {n} codes");
    generate(api, admin, policy, n).await?;
    let codes = read_back(api, admin, policy, n).await?;
    Ok((policy, codes))
}

/// `n` codes, in calls of at most `MAX_BATCH`.
async fn generate(api: &Api<'_>, admin: &str, policy: Uuid, n: u64) -> CtlResult<()> {
    let path = format!("/coupon-policies/{policy}/codes");
    let mut left = n;
    while left > 0 {
        let count = left.min(MAX_BATCH as u64);
        let rb = api
            .request(Method::POST, &path, Some(admin))
            .timeout(GENERATE_TIMEOUT);
        let body = json!({ "count": count, "prefix": "LOAD" });
        api.send(rb, &Method::POST, &path, Some(body)).await?;
        left -= count;
    }
    Ok(())
}

/// The policy's unredeemed codes from its export, streamed: every one of
/// the `n` just generated, or an error.
async fn read_back(api: &Api<'_>, admin: &str, policy: Uuid, n: u64) -> CtlResult<Vec<Box<str>>> {
    let path = format!("/coupon-policies/{policy}/codes/export");
    let resp = api
        .request(Method::GET, &path, Some(admin))
        .timeout(crate::client::NO_DEADLINE)
        .send()
        .await
        .map_err(|e| crate::client::transport_error(api.base, e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(anyhow!("GET {path}: {status}: {text}").into());
    }
    let mut codes = Vec::with_capacity(n as usize);
    crate::stream::for_each_line(resp, api.base, |line| {
        if let Some(code) = unredeemed(line) {
            codes.push(Box::from(code));
        }
        Ok(())
    })
    .await?;
    if codes.len() as u64 != n {
        return Err(CtlError::Other(anyhow!(
            "the export of policy {policy} has {} unredeemed codes, not the {n} generated",
            codes.len()
        )));
    }
    Ok(codes)
}

/// The code of an export line `CODE,UNREDEEMED`; None for the header and
/// a redeemed code.
fn unredeemed(line: &str) -> Option<&str> {
    match line.split_once(',') {
        Some((code, "UNREDEEMED")) => Some(code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unredeemed_lines_are_codes() {
        assert_eq!(unredeemed("code,status"), None);
        assert_eq!(
            unredeemed("LOADK7QMX4TP2ZR,UNREDEEMED"),
            Some("LOADK7QMX4TP2ZR")
        );
        assert_eq!(unredeemed("LOADK7QMX4TP2ZR,REDEEMED"), None);
        assert_eq!(unredeemed(""), None);
    }

    #[test]
    fn a_run_gets_a_code_per_request_and_a_margin() {
        assert_eq!(enough(0), 100);
        assert_eq!(enough(10_000), 10_600);
    }
}
