//! The real `promoctl` binary against a promod started in process (gateway
//! and coupon roles, fresh databases, port 0), and against a closed port.

mod common;

use common::fresh_db;

use promod::config::Config;
use secrecy::SecretString;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "test-secret-test-secret-test-secret!";
const ADMIN_EMAIL: &str = "admin@ctl.test";
const ADMIN_PASSWORD: &str = "admin-password";

struct App {
    base: String,
    gateway_db: String,
    shutdown: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_promod() -> App {
    let mut cfg = Config {
        jwt_secret: SecretString::from(SECRET.to_owned()),
        redis_url: std::env::var("PROMO_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        bootstrap_admin_email: Some(ADMIN_EMAIL.into()),
        bootstrap_admin_password: Some(SecretString::from(ADMIN_PASSWORD.to_owned())),
        ..Config::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    cfg.gateway.http_addr = any;
    cfg.coupon.http_addr = any;
    cfg.coupon.grpc_addr = any;
    cfg.gateway.rate_limit.enabled = false;
    cfg.roles = "gateway,coupon".parse().unwrap();
    cfg.coupon.database_url = fresh_db("coupon").await;
    cfg.gateway.database_url = fresh_db("gateway").await;
    let gateway_db = cfg.gateway.database_url.clone();
    let shutdown = CancellationToken::new();
    let (tasks, bound) = promod::server::start(cfg, shutdown.clone())
        .await
        .expect("promod starts");
    tokio::spawn(promod::server::join(tasks, shutdown.clone()));
    App {
        base: format!("http://{}", bound.gateway_http.expect("gateway bound")),
        gateway_db,
        shutdown,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not json ({e}): {}", self.stdout))
    }
}

fn config_dir() -> PathBuf {
    std::env::temp_dir().join(format!("promoctl-test-{}", Uuid::new_v4()))
}

async fn promoctl(dir: &Path, gateway: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_promoctl"))
        .args(args)
        .env("PROMOCTL_CONFIG_DIR", dir)
        .env("PROMOCTL_GATEWAY_URL", gateway)
        .env_remove("PROMOCTL_EMAIL")
        .env_remove("PROMOCTL_PASSWORD")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run promoctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_manage_policies_and_coupons() {
    let app = spawn_promod().await;
    let dir = config_dir();
    let run = |args: &'static [&'static str]| promoctl(&dir, &app.base, args);

    let out = run(&["policy", "list"]).await;
    assert_eq!(
        out.code, 2,
        "not logged in is a usage error: {}",
        out.stderr
    );
    assert!(out.stderr.contains("promoctl login"), "{}", out.stderr);

    let out = run(&[
        "login",
        "--email",
        ADMIN_EMAIL,
        "--password",
        "wrong-password",
    ])
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("UNAUTHORIZED"), "{}", out.stderr);

    let out = run(&[
        "login",
        "--email",
        ADMIN_EMAIL,
        "--password",
        ADMIN_PASSWORD,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token_file = dir.join("token.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = promoctl(
        &dir,
        &app.base,
        &[
            "policy",
            "create",
            "--name",
            "ctl policy",
            "--discount-type",
            "fixed",
            "--discount-value",
            "500",
            "--total-quantity",
            "2",
            "--valid-from",
            "-1m",
            "--valid-until",
            "+1d",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let policy = out.json();
    let id = policy["id"].as_str().expect("policy id").to_owned();
    assert_eq!(policy["total_quantity"], 2);
    assert_eq!(policy["discount_type"], "FIXED");

    let out = run(&["policy", "list", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let page = out.json();
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], id.as_str());

    // The default table output names the policy.
    let out = run(&["policy", "list"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("ctl policy"),
        "{}",
        out.stdout
    );

    let out = promoctl(
        &dir,
        &app.base,
        &["coupon", "issue", "--policy", &id, "-o", "json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let coupon = out.json();
    assert_eq!(coupon["status"], "AVAILABLE");
    assert_eq!(coupon["policy_id"], id.as_str());

    // per_user_limit defaults to 1: the server refuses, exit 1 with its code.
    let out = promoctl(&dir, &app.base, &["coupon", "issue", "--policy", &id]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("LIMIT_EXCEEDED"), "{}", out.stderr);

    // The same idempotency key replays the first answer instead of refusing.
    let key = Uuid::new_v4().to_string();
    let args = [
        "coupon",
        "issue",
        "--policy",
        &id,
        "--user",
        &Uuid::new_v4().to_string(),
        "--idempotency-key",
        &key,
        "-o",
        "json",
    ];
    let first = promoctl(&dir, &app.base, &args).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = promoctl(&dir, &app.base, &args).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(first.json()["id"], again.json()["id"]);

    // Use, cancel the use, and a second cancel refused.
    let coupon_id = coupon["id"].as_str().expect("coupon id").to_owned();
    let out = promoctl(
        &dir,
        &app.base,
        &[
            "coupon",
            "use",
            &coupon_id,
            "--order-id",
            "order-1",
            "--order-amount",
            "10000",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let used = out.json();
    assert_eq!(used["coupon"]["status"], "USED");
    assert_eq!(used["discount_amount"], 500);
    let out = promoctl(
        &dir,
        &app.base,
        &["coupon", "cancel", &coupon_id, "-o", "json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["status"], "AVAILABLE");
    let out = promoctl(&dir, &app.base, &["coupon", "cancel", &coupon_id]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("ALREADY_CANCELLED"), "{}", out.stderr);
    let out = run(&["coupon", "list"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&coupon_id) && out.stdout.contains("AVAILABLE"),
        "{}",
        out.stdout
    );

    let out = run(&["policy", "get", "not-a-uuid"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    // An expired access token is refreshed with the stored refresh token.
    let mut stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&token_file).unwrap()).unwrap();
    let old_access = stored["access_token"].clone();
    stored["expires_at"] = 0.into();
    std::fs::write(&token_file, stored.to_string()).unwrap();
    let out = promoctl(&dir, &app.base, &["policy", "get", &id, "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["issued_quantity"], 2);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&token_file).unwrap()).unwrap();
    assert_ne!(stored["access_token"], old_access);
    assert!(stored["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp());

    let out = run(&[
        "user",
        "create",
        "--email",
        "someone@ctl.test",
        "--password",
        "long-enough",
        "--name",
        "Someone",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["role"], "user");

    // A second admin, promoted in gateway_db, can act as one.
    let out = promoctl(
        &dir,
        &app.base,
        &[
            "user",
            "create",
            "--email",
            "boss@ctl.test",
            "--password",
            "long-enough",
            "--name",
            "Boss",
            "--admin",
            "--database-url",
            &app.gateway_db,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["role"], "admin");
    let boss = config_dir();
    let out = promoctl(
        &boss,
        &app.base,
        &[
            "login",
            "--email",
            "boss@ctl.test",
            "--password",
            "long-enough",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = promoctl(
        &boss,
        &app.base,
        &[
            "policy",
            "update",
            &id,
            "--total-quantity",
            "3",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["total_quantity"], 3);
    let _ = std::fs::remove_dir_all(&boss);

    let _ = std::fs::remove_dir_all(&dir);
}

/// A scenario file drives the run, a flag overrides it, and the warm-up's
/// requests are sent but left out of the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_from_a_file_measures_after_the_warmup() {
    let app = spawn_promod().await;
    let dir = config_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scenario.toml");
    std::fs::write(
        &file,
        "scenario = \"coupon-issue\"\nrate = 100.0\nduration = \"1s\"\nwarmup = \"1s\"\n\
         users = 5\n\n[thresholds]\nerror_rate_max = 0.0\n",
    )
    .unwrap();
    let report = dir.join("report.json");
    let out = promoctl(
        &dir,
        &app.base,
        &[
            "load",
            "--file",
            file.to_str().unwrap(),
            "--rate",
            "40",
            "--jwt-secret",
            SECRET,
            "--report",
            report.to_str().unwrap(),
            "--quiet",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["scenario"], "coupon-issue");
    assert_eq!(r["mode"], "open loop, 40 req/s");
    assert_eq!(r["users"], 5);
    // 1 s at 40/s measured; the warm-up's 40 were sent but not counted.
    assert_eq!(r["summary"]["attempted"], 40, "{r}");
    assert_eq!(r["summary"]["succeeded"], 40, "{r}");
    assert_eq!(r["thresholds"]["error_rate_max"], 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_closed_port_exits_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = config_dir();
    let base = format!("http://127.0.0.1:{port}");
    let out = promoctl(
        &dir,
        &base,
        &["login", "--email", "a@b.c", "--password", "whatever1"],
    )
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    let out = promoctl(
        &dir,
        &base,
        &[
            "check",
            "--point",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
        ],
    )
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
}

#[tokio::test]
async fn help_shows_examples_and_exit_codes() {
    let out = promoctl(&config_dir(), "http://127.0.0.1:1", &["--help"]).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("Examples:") && out.stdout.contains("Exit codes"),
        "{}",
        out.stdout
    );
    let out = promoctl(
        &config_dir(),
        "http://127.0.0.1:1",
        &["policy", "frobnicate"],
    )
    .await;
    assert_eq!(out.code, 2);
}
