//! Load scenarios: each creates its own fixtures through the gateway (an admin
//! session, the policy or sale, N users with tokens) and then yields the i-th
//! request of the run.

use anyhow::{bail, Context};
use chrono::Utc;
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt};
use promo_domain::principal::Role;
use promo_store::auth::JwtKeys;
use reqwest::{Client, Method};
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One hot policy, many distinct users issuing.
    CouponIssue,
    /// Using pre-issued coupons, one use each.
    CouponUse,
    /// Earn and use spread over N users.
    Point,
    /// One hot sale, through its sold-out phase.
    TimesaleOrder,
    /// All of the above, weighted 3:1:4:2 (issue:use:point:order).
    Mixed,
    /// GET /healthz: the generator's own ceiling, to compare with wrk.
    Health,
}

/// One request of the run.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub token: Arc<str>,
    pub body: Option<Value>,
    /// Route label for per-route numbers.
    pub route: &'static str,
}

/// How the run gets tokens.
pub enum Auth {
    /// Mint tokens with the gateway's signing secret (fast; same trust domain).
    Secret(Box<JwtKeys>),
    /// Log in as the admin and register users through the API.
    Login { email: String, password: String },
}

pub struct Fixtures {
    pub admin: Arc<str>,
    pub users: Vec<(Uuid, Arc<str>)>,
    pub policy: Option<Uuid>,
    pub sale: Option<Uuid>,
    /// coupon-use: (coupon id, owner's token), one per request.
    pub coupons: Vec<(Uuid, Arc<str>)>,
}

/// A thin REST helper for fixtures: errors carry the server's answer.
pub struct Api<'a> {
    pub client: &'a Client,
    pub base: &'a str,
}

impl Api<'_> {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}/api/v1{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status}: {v}");
        }
        Ok(v)
    }
}

fn id_of(v: &Value) -> anyhow::Result<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no id in {v}"))
}

/// Admin and user tokens.
async fn sessions(api: &Api<'_>, auth: &Auth, users: usize) -> anyhow::Result<Fixtures> {
    let (admin, users) = match auth {
        Auth::Secret(keys) => {
            let admin = keys.issue(Uuid::now_v7(), Role::Admin)?;
            let users = (0..users)
                .map(|_| {
                    let id = Uuid::now_v7();
                    keys.issue(id, Role::User).map(|t| (id, Arc::from(t)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (admin, users)
        }
        Auth::Login { email, password } => {
            let login = |e: String, p: String| async move {
                api.call(
                    Method::POST,
                    "/auth/login",
                    None,
                    Some(json!({"email": e, "password": p})),
                )
                .await
                .map(|v| v["access_token"].as_str().unwrap_or_default().to_owned())
            };
            let admin = login(email.clone(), password.clone()).await?;
            let run = Uuid::now_v7().simple().to_string();
            let mut out = Vec::with_capacity(users);
            // Registration hashes passwords (argon2): a few at a time.
            for chunk in (0..users).collect::<Vec<_>>().chunks(8) {
                let batch = chunk.iter().map(|i| {
                    let email = format!("load-{run}-{i}@load.promo.local");
                    async move {
                        let v = api
                            .call(
                                Method::POST,
                                "/auth/register",
                                None,
                                Some(json!({"email": email, "password": "load-password", "name": "load"})),
                            )
                            .await?;
                        let token = login(email, "load-password".into()).await?;
                        anyhow::Ok((id_of(&v)?, Arc::from(token)))
                    }
                });
                out.extend(futures::future::try_join_all(batch).await?);
            }
            (admin, out)
        }
    };
    Ok(Fixtures {
        admin: Arc::from(admin),
        users,
        policy: None,
        sale: None,
        coupons: Vec::new(),
    })
}

impl Scenario {
    fn needs(self) -> (bool, bool, bool) {
        // (policy, sale, pre-issued coupons)
        match self {
            Scenario::CouponIssue => (true, false, false),
            Scenario::CouponUse => (true, false, true),
            Scenario::Point => (false, false, false),
            Scenario::TimesaleOrder => (false, true, false),
            Scenario::Mixed => (true, true, true),
            Scenario::Health => (false, false, false),
        }
    }

    /// Creates the fixtures of a run of `planned` requests.
    pub async fn setup(
        self,
        api: &Api<'_>,
        auth: &Auth,
        users: usize,
        planned: u64,
        stock: Option<i64>,
    ) -> anyhow::Result<Fixtures> {
        let mut f = sessions(api, auth, users.max(1)).await?;
        let (policy, sale, coupons) = self.needs();
        let now = Utc::now();
        let admin = f.admin.clone();
        let per_user = (planned / users.max(1) as u64 + 2).min(1000) as i64;
        let total = stock.unwrap_or((planned as i64 * 2).max(100));
        if policy {
            let v = api
                .call(
                    Method::POST,
                    "/coupon-policies",
                    Some(&admin),
                    Some(json!({
                        "name": "load test policy", "discount_type": "PERCENTAGE",
                        "discount_value": 10, "max_discount_amount": 5000,
                        "total_quantity": total, "per_user_limit": per_user,
                        "valid_from": now - chrono::Duration::minutes(1),
                        "valid_until": now + chrono::Duration::days(1),
                    })),
                )
                .await?;
            f.policy = Some(id_of(&v)?);
        }
        if sale {
            let p = api
                .call(
                    Method::POST,
                    "/products",
                    Some(&admin),
                    Some(json!({"name": "load test product", "price": 10_000})),
                )
                .await?;
            let v = api
                .call(
                    Method::POST,
                    "/time-sales",
                    Some(&admin),
                    Some(json!({
                        "product_id": id_of(&p)?, "total_quantity": stock.unwrap_or(1000),
                        "sale_price": 5_000, "per_user_limit": per_user.min(10),
                        "start_at": now - chrono::Duration::seconds(1),
                        "end_at": now + chrono::Duration::hours(1),
                    })),
                )
                .await?;
            f.sale = Some(id_of(&v)?);
        }
        if coupons {
            let policy = f.policy.expect("policy fixture");
            // Requests beyond this reuse coupons (ALREADY_USED refusals).
            // Mixed also issues during the run, so it leaves half the stock.
            let n = if self == Scenario::Mixed {
                (planned / 10 + 1).min(total as u64 / 2)
            } else {
                planned
            }
            .min(20_000);
            let users = f.users.clone();
            // A bounded number at a time: 20,000 requests at once made the
            // server's memory peak at the fixtures, not under the load.
            let issued = futures::stream::iter((0..n).map(|i| {
                let (_, token) = users[i as usize % users.len()].clone();
                async move {
                    let v = api
                        .call(
                            Method::POST,
                            "/coupons/issue",
                            Some(&token),
                            Some(json!({"policy_id": policy})),
                        )
                        .await?;
                    anyhow::Ok((id_of(&v)?, token))
                }
            }))
            .buffered(64)
            .try_collect()
            .await?;
            f.coupons = issued;
        }
        Ok(f)
    }

    /// The i-th request of the run.
    pub fn request(self, f: &Fixtures, i: u64) -> Req {
        let user = &f.users[i as usize % f.users.len()];
        match self {
            Scenario::CouponIssue => Req {
                method: Method::POST,
                path: "/api/v1/coupons/issue".into(),
                token: user.1.clone(),
                body: Some(json!({"policy_id": f.policy})),
                route: "coupons/issue",
            },
            Scenario::CouponUse => {
                let (id, token) = &f.coupons[i as usize % f.coupons.len()];
                Req {
                    method: Method::POST,
                    path: format!("/api/v1/coupons/{id}/use"),
                    token: token.clone(),
                    body: Some(json!({"order_id": format!("load-{i}"), "order_amount": 20_000})),
                    route: "coupons/use",
                }
            }
            // Pairs: earn for a user, then that user spends most of it.
            Scenario::Point => {
                let (id, token) = &f.users[(i / 2) as usize % f.users.len()];
                if i.is_multiple_of(2) {
                    Req {
                        method: Method::POST,
                        path: "/api/v1/points/earn".into(),
                        token: f.admin.clone(),
                        body: Some(json!({"user_id": id, "amount": 100})),
                        route: "points/earn",
                    }
                } else {
                    Req {
                        method: Method::POST,
                        path: "/api/v1/points/use".into(),
                        token: token.clone(),
                        body: Some(json!({"amount": 60})),
                        route: "points/use",
                    }
                }
            }
            Scenario::TimesaleOrder => Req {
                method: Method::POST,
                path: format!("/api/v1/time-sales/{}/orders", f.sale.unwrap_or_default()),
                token: user.1.clone(),
                body: Some(json!({"quantity": 1})),
                route: "time-sales/orders",
            },
            Scenario::Health => Req {
                method: Method::GET,
                path: "/healthz".into(),
                token: user.1.clone(),
                body: None,
                route: "healthz",
            },
            Scenario::Mixed => {
                // 3:1:4:2 over a cycle of ten.
                let pick = match i % 10 {
                    0..=2 => Scenario::CouponIssue,
                    3 => Scenario::CouponUse,
                    4..=7 => Scenario::Point,
                    _ => Scenario::TimesaleOrder,
                };
                // The kind's own running index, so that each kind walks
                // through every user (by `i` alone, orders would only ever
                // come from the users whose index ends in 8 or 9).
                let j = match pick {
                    Scenario::CouponIssue => i / 10 * 3 + i % 10,
                    Scenario::CouponUse => i / 10,
                    Scenario::Point => i / 10 * 4 + (i % 10 - 4),
                    _ => i / 10 * 2 + (i % 10 - 8),
                };
                pick.request(f, j)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn every_kind_of_the_mix_reaches_every_user() {
        let users: Vec<(Uuid, Arc<str>)> = (0..100)
            .map(|n| (Uuid::new_v4(), Arc::from(format!("user-{n}"))))
            .collect();
        let f = Fixtures {
            admin: Arc::from("admin"),
            users: users.clone(),
            policy: Some(Uuid::new_v4()),
            sale: Some(Uuid::new_v4()),
            coupons: users.clone(),
        };
        let mut seen: HashMap<&str, HashSet<Arc<str>>> = HashMap::new();
        for i in 0..2_000 {
            let r = Scenario::Mixed.request(&f, i);
            seen.entry(r.route).or_default().insert(r.token);
        }
        for route in [
            "coupons/issue",
            "coupons/use",
            "points/use",
            "time-sales/orders",
        ] {
            assert_eq!(
                seen[route].len(),
                100,
                "{route} reached {} users",
                seen[route].len()
            );
        }
    }
}
