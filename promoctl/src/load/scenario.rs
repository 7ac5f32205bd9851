//! Load scenarios: each creates its own fixtures through the gateway (an admin
//! session, the policy or sale, N users with tokens) and then yields the i-th
//! request of the run.

use crate::client::transport_error;
use crate::error::{CtlError, CtlResult};
use anyhow::{anyhow, Context};
use chrono::Utc;
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt};
use promo_domain::principal::Role;
use promo_store::auth::JwtKeys;
use reqwest::{Client, Method, RequestBuilder};
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
    /// Held orders on one hot sale: of every ten holds, eight are then
    /// confirmed, one cancelled and one left to expire (after 5 s).
    Checkout,
    /// Held orders left alone for ten minutes (a pile of holds for the
    /// sweeper: perf/bench.sh makes them due at once).
    Hold,
    /// All of the above, weighted 3:1:4:2 (issue:use:point:order).
    Mixed,
    /// GET /healthz: the generator's own ceiling, to compare with wrk.
    Health,
    /// Redeeming the single-use codes of one BATCH policy, generated for the
    /// run: a distinct code per request, from many users.
    Redeem,
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
    /// What to do with the created row once answered (a hold's second step).
    pub then: Option<Then>,
}

/// A follow-up request on the row a request created, sent after its answer
/// and counted as a request of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// POST /orders/{id}/confirm
    Confirm,
    /// POST /orders/{id}/cancel
    Cancel,
}

impl Then {
    /// The follow-up on row `id` of a request made with `token`.
    pub fn request(self, id: Uuid, token: &Arc<str>) -> Req {
        let (verb, route) = match self {
            Then::Confirm => ("confirm", "orders/confirm"),
            Then::Cancel => ("cancel", "orders/cancel"),
        };
        Req::post(
            format!("/api/v1/orders/{id}/{verb}"),
            token,
            json!({}),
            route,
        )
    }
}

/// How long the checkout scenario's holds last: short, so that the ones
/// left alone expire (and are swept) during the run.
const CHECKOUT_HOLD_SECONDS: i64 = 5;

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
    /// redeem: the BATCH codes generated for the run, one per request.
    pub codes: Vec<Box<str>>,
}

/// What a run will send, which its fixtures are sized for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plan {
    /// Requests of the run, the warm-up's included.
    pub requests: u64,
    /// `--stock`: the coupon total or the sale's stock.
    pub stock: Option<i64>,
    /// `--codes`: the codes to generate for `redeem`.
    pub codes: Option<u64>,
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
    ) -> CtlResult<Value> {
        let rb = self.request(method.clone(), path, token);
        self.send(rb, &method, path, body).await
    }

    /// `/api/v1{path}`, with a token when given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let rb = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends `rb` with `body`; the answer's JSON, or the server's refusal.
    pub async fn send(
        &self,
        mut rb: RequestBuilder,
        method: &Method,
        path: &str,
        body: Option<Value>,
    ) -> CtlResult<Value> {
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.map_err(|e| transport_error(self.base, e))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(anyhow!("{method} {path}: {status}: {v}").into());
        }
        Ok(v)
    }

    /// POSTs a new resource and returns its id.
    pub(super) async fn create(&self, path: &str, token: &str, body: Value) -> CtlResult<Uuid> {
        let v = self
            .call(Method::POST, path, Some(token), Some(body))
            .await?;
        id_of(&v)
    }

    async fn login(&self, email: String, password: String) -> CtlResult<String> {
        let body = json!({"email": email, "password": password});
        let v = self
            .call(Method::POST, "/auth/login", None, Some(body))
            .await?;
        Ok(v["access_token"].as_str().unwrap_or_default().to_owned())
    }

    /// Registers a user and logs it in.
    async fn register(&self, email: String) -> CtlResult<(Uuid, Arc<str>)> {
        let body = json!({"email": email, "password": "load-password", "name": "load"});
        let v = self
            .call(Method::POST, "/auth/register", None, Some(body))
            .await?;
        let token = self.login(email, "load-password".into()).await?;
        Ok((id_of(&v)?, Arc::from(token)))
    }
}

fn id_of(v: &Value) -> CtlResult<Uuid> {
    let id = v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no id in {v}"))?;
    Ok(id)
}

/// Admin and user tokens.
async fn sessions(api: &Api<'_>, auth: &Auth, users: usize) -> CtlResult<Fixtures> {
    let (admin, users) = match auth {
        Auth::Secret(keys) => minted(keys, users).map_err(anyhow::Error::from)?,
        Auth::Login { email, password } => {
            let admin = api.login(email.clone(), password.clone()).await?;
            (admin, registered(api, users).await?)
        }
    };
    Ok(Fixtures {
        admin: Arc::from(admin),
        users,
        policy: None,
        sale: None,
        coupons: Vec::new(),
        codes: Vec::new(),
    })
}

type Sessions = (String, Vec<(Uuid, Arc<str>)>);

fn minted(keys: &JwtKeys, users: usize) -> promo_domain::DomainResult<Sessions> {
    let admin = keys.issue(Uuid::now_v7(), Role::Admin)?;
    let users = (0..users)
        .map(|_| {
            let id = Uuid::now_v7();
            keys.issue(id, Role::User).map(|t| (id, Arc::from(t)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((admin, users))
}

async fn registered(api: &Api<'_>, users: usize) -> CtlResult<Vec<(Uuid, Arc<str>)>> {
    let run = Uuid::now_v7().simple().to_string();
    let mut out = Vec::with_capacity(users);
    // Registration hashes passwords (argon2): a few at a time.
    for chunk in (0..users).collect::<Vec<_>>().chunks(8) {
        let batch = chunk
            .iter()
            .map(|i| api.register(format!("load-{run}-{i}@load.promo.local")));
        out.extend(futures::future::try_join_all(batch).await?);
    }
    Ok(out)
}

impl Scenario {
    fn needs(self) -> (bool, bool, bool) {
        // (policy, sale, pre-issued coupons)
        match self {
            Scenario::CouponIssue => (true, false, false),
            Scenario::CouponUse => (true, false, true),
            Scenario::Point => (false, false, false),
            Scenario::TimesaleOrder | Scenario::Checkout | Scenario::Hold => (false, true, false),
            Scenario::Mixed => (true, true, true),
            // Its BATCH policy and codes are fixtures of their own (`codes.rs`).
            Scenario::Health | Scenario::Redeem => (false, false, false),
        }
    }

    /// Creates the fixtures of a run as `plan` describes it.
    pub async fn setup(
        self,
        api: &Api<'_>,
        auth: &Auth,
        users: usize,
        plan: Plan,
    ) -> CtlResult<Fixtures> {
        let Plan {
            requests: planned,
            stock,
            ..
        } = plan;
        let mut f = sessions(api, auth, users.max(1)).await?;
        let (policy, sale, coupons) = self.needs();
        let per_user = (planned / users.max(1) as u64 + 2).min(1000) as i64;
        let total = stock.unwrap_or((planned as i64 * 2).max(100));
        if self == Scenario::Redeem {
            let n = plan.codes.unwrap_or_else(|| super::codes::enough(planned));
            let (id, codes) = super::codes::fixture(api, &f.admin, n, per_user, stock).await?;
            (f.policy, f.codes) = (Some(id), codes);
        }
        if policy {
            f.policy = Some(create_policy(api, &f.admin, total, per_user).await?);
        }
        if sale {
            let stock = stock.unwrap_or(1000);
            f.sale = Some(create_sale(api, &f.admin, stock, per_user.min(10)).await?);
        }
        if coupons {
            // Requests beyond this reuse coupons (ALREADY_USED refusals).
            // Mixed also issues during the run, so it leaves half the stock.
            let n = if self == Scenario::Mixed {
                (planned / 10 + 1).min(total as u64 / 2)
            } else {
                planned
            }
            .min(20_000);
            f.coupons = issue_coupons(api, &f, n).await?;
        }
        Ok(f)
    }

    /// The i-th request of the run.
    pub fn request(self, f: &Fixtures, i: u64) -> Req {
        let user = &f.users[i as usize % f.users.len()];
        match self {
            Scenario::CouponIssue => Req::post(
                "/api/v1/coupons/issue".into(),
                &user.1,
                json!({"policy_id": f.policy}),
                "coupons/issue",
            ),
            Scenario::CouponUse => {
                let (id, token) = &f.coupons[i as usize % f.coupons.len()];
                Req::post(
                    format!("/api/v1/coupons/{id}/use"),
                    token,
                    json!({"order_id": format!("load-{i}"), "order_amount": 20_000}),
                    "coupons/use",
                )
            }
            Scenario::Point => point_request(f, i),
            Scenario::TimesaleOrder => Req::post(
                format!("/api/v1/time-sales/{}/orders", f.sale.unwrap_or_default()),
                &user.1,
                json!({"quantity": 1}),
                "time-sales/orders",
            ),
            Scenario::Checkout => {
                let mut r = hold(f, &user.1, CHECKOUT_HOLD_SECONDS);
                r.then = match i % 10 {
                    0..=7 => Some(Then::Confirm),
                    8 => Some(Then::Cancel),
                    _ => None,
                };
                r
            }
            Scenario::Hold => hold(f, &user.1, 600),
            Scenario::Health => Req {
                method: Method::GET,
                path: "/healthz".into(),
                token: user.1.clone(),
                body: None,
                route: "healthz",
                then: None,
            },
            Scenario::Mixed => {
                let (pick, j) = mixed(i);
                pick.request(f, j)
            }
            Scenario::Redeem => Req::post(
                "/api/v1/coupons/redeem".into(),
                &user.1,
                json!({"code": &*f.codes[i as usize % f.codes.len()]}),
                "coupons/redeem",
            ),
        }
    }
}

impl Req {
    fn post(path: String, token: &Arc<str>, body: Value, route: &'static str) -> Req {
        Req {
            method: Method::POST,
            path,
            token: token.clone(),
            body: Some(body),
            route,
            then: None,
        }
    }
}

/// One unit of the sale, held for `secs`.
fn hold(f: &Fixtures, token: &Arc<str>, secs: i64) -> Req {
    Req::post(
        format!("/api/v1/time-sales/{}/orders", f.sale.unwrap_or_default()),
        token,
        json!({"quantity": 1, "hold": true, "hold_seconds": secs}),
        "time-sales/orders (hold)",
    )
}

/// Pairs: earn for a user, then that user spends most of it.
fn point_request(f: &Fixtures, i: u64) -> Req {
    let (id, token) = &f.users[(i / 2) as usize % f.users.len()];
    if i.is_multiple_of(2) {
        Req::post(
            "/api/v1/points/earn".into(),
            &f.admin,
            json!({"user_id": id, "amount": 100}),
            "points/earn",
        )
    } else {
        Req::post(
            "/api/v1/points/use".into(),
            token,
            json!({"amount": 60}),
            "points/use",
        )
    }
}

/// The kind of the i-th request of the mix (3:1:4:2 over a cycle of ten) and
/// its index among the requests of that kind, so that each kind walks through
/// every user (by `i` alone, orders would only ever come from the users whose
/// index ends in 8 or 9).
fn mixed(i: u64) -> (Scenario, u64) {
    match i % 10 {
        0..=2 => (Scenario::CouponIssue, i / 10 * 3 + i % 10),
        3 => (Scenario::CouponUse, i / 10),
        4..=7 => (Scenario::Point, i / 10 * 4 + (i % 10 - 4)),
        _ => (Scenario::TimesaleOrder, i / 10 * 2 + (i % 10 - 8)),
    }
}

async fn create_policy(api: &Api<'_>, admin: &str, total: i64, per_user: i64) -> CtlResult<Uuid> {
    api.create("/coupon-policies", admin, policy_body(total, per_user))
        .await
}

/// A load test policy of `total` coupons, valid for a day.
pub(super) fn policy_body(total: i64, per_user: i64) -> Value {
    let now = Utc::now();
    json!({
        "name": "load test policy", "discount_type": "PERCENTAGE",
        "discount_value": 10, "max_discount_amount": 5000,
        "total_quantity": total, "per_user_limit": per_user,
        "valid_from": now - chrono::Duration::minutes(1),
        "valid_until": now + chrono::Duration::days(1),
    })
}

async fn create_sale(api: &Api<'_>, admin: &str, stock: i64, per_user: i64) -> CtlResult<Uuid> {
    let body = json!({"name": "load test product", "price": 10_000});
    let product = api.create("/products", admin, body).await?;
    let now = Utc::now();
    let body = json!({
        "product_id": product, "total_quantity": stock,
        "sale_price": 5_000, "per_user_limit": per_user,
        "start_at": now - chrono::Duration::seconds(1),
        "end_at": now + chrono::Duration::hours(1),
    });
    api.create("/time-sales", admin, body).await
}

/// `n` coupons of the policy, issued round-robin to the users.
async fn issue_coupons(api: &Api<'_>, f: &Fixtures, n: u64) -> CtlResult<Vec<(Uuid, Arc<str>)>> {
    let policy = f.policy.expect("policy fixture");
    // A bounded number at a time: 20,000 requests at once made the
    // server's memory peak at the fixtures, not under the load.
    futures::stream::iter((0..n).map(|i| {
        let (_, token) = f.users[i as usize % f.users.len()].clone();
        async move {
            let body = json!({"policy_id": policy});
            let id = api.create("/coupons/issue", &token, body).await?;
            Ok::<_, CtlError>((id, token))
        }
    }))
    .buffered(64)
    .try_collect()
    .await
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
            codes: Vec::new(),
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
