//! The real promod binary as child processes, for the tests that run roles
//! apart: service roles and a gateway that find each other through etcd under
//! a prefix of the test's own.

use super::helpers::{etcd_url, free_port, fresh_db, redis_url, SECRET};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A promod child process, killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary with `envs` on top of the test secret and Redis, and nothing
/// of the test's own environment.
pub fn promod(envs: &[(&str, String)], args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_promod"));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROMO_JWT_SECRET", SECRET)
        .env("PROMO_REDIS_URL", redis_url())
        .env("PROMO_LOG__LEVEL", "warn")
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// `promod` started, its own logs on the test's stderr.
pub fn spawn_process(envs: &[(&str, String)]) -> Proc {
    Proc(
        promod(envs, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn promod"),
    )
}

pub async fn wait_http(url: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up");
}

/// The env of a `coupon` or `timesale` role on `db`, serving HTTP on `http`,
/// registered in etcd under `prefix` with a short lease (so a killed one
/// leaves soon).
pub fn etcd_role_env(role: &str, prefix: &str, db: &str, http: u16) -> Vec<(&'static str, String)> {
    let (http_addr, grpc_addr, database_url) = match role {
        "coupon" => (
            "PROMO_COUPON__HTTP_ADDR",
            "PROMO_COUPON__GRPC_ADDR",
            "PROMO_COUPON__DATABASE_URL",
        ),
        "timesale" => (
            "PROMO_TIMESALE__HTTP_ADDR",
            "PROMO_TIMESALE__GRPC_ADDR",
            "PROMO_TIMESALE__DATABASE_URL",
        ),
        other => panic!("no etcd env for role {other}"),
    };
    vec![
        ("PROMO_ROLES", role.to_string()),
        ("PROMO_ETCD_ENDPOINTS", format!("[\"{}\"]", etcd_url())),
        ("PROMO_ETCD_PREFIX", prefix.to_string()),
        ("PROMO_ETCD_LEASE_TTL_SECS", "2".to_string()),
        (http_addr, format!("127.0.0.1:{http}")),
        (grpc_addr, format!("127.0.0.1:{}", free_port())),
        (database_url, db.to_string()),
    ]
}

/// A gateway that finds its roles through etcd under `prefix`, once it is up:
/// the process and its base url.
pub async fn etcd_gateway(prefix: &str) -> (Proc, String) {
    let port = free_port();
    let gateway = spawn_process(&[
        ("PROMO_ROLES", "gateway".to_string()),
        ("PROMO_ETCD_ENDPOINTS", format!("[\"{}\"]", etcd_url())),
        ("PROMO_ETCD_PREFIX", prefix.to_string()),
        ("PROMO_GATEWAY__HTTP_ADDR", format!("127.0.0.1:{port}")),
        (
            "PROMO_GATEWAY__DATABASE_URL",
            fresh_db("split_gateway").await,
        ),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/healthz")).await;
    (gateway, base)
}
