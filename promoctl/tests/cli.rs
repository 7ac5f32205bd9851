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
    /// The service databases of the roles it runs (check's flags).
    stores: Vec<String>,
    shutdown: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_promod() -> App {
    spawn_promod_with("gateway,coupon").await
}

/// promod with `roles`, each on fresh databases and port 0.
async fn spawn_promod_with(roles: &str) -> App {
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
    for s in [&mut cfg.point.service, &mut cfg.timesale.service] {
        (s.http_addr, s.grpc_addr) = (any, any);
    }
    cfg.gateway.rate_limit.enabled = false;
    cfg.roles = roles.parse().unwrap();
    cfg.coupon.database_url = fresh_db("coupon").await;
    cfg.gateway.database_url = fresh_db("gateway").await;
    let mut stores = vec!["--coupon-db".to_owned(), cfg.coupon.database_url.clone()];
    if roles.contains("point") {
        cfg.point.service.database_url = fresh_db("point").await;
        stores.extend(["--point-db".into(), cfg.point.service.database_url.clone()]);
    }
    if roles.contains("timesale") {
        cfg.timesale.service.database_url = fresh_db("timesale").await;
        let url = cfg.timesale.service.database_url.clone();
        stores.extend(["--timesale-db".into(), url]);
    }
    stores.extend(["--redis-url".into(), cfg.redis_url.clone()]);
    let gateway_db = cfg.gateway.database_url.clone();
    let shutdown = CancellationToken::new();
    let (tasks, bound) = promod::server::start(cfg, shutdown.clone())
        .await
        .expect("promod starts");
    tokio::spawn(promod::server::join(tasks, shutdown.clone()));
    App {
        base: format!("http://{}", bound.gateway_http.expect("gateway bound")),
        gateway_db,
        stores,
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

/// promoctl with one config dir against one gateway.
struct Ctl<'a> {
    dir: PathBuf,
    base: &'a str,
}

impl Ctl<'_> {
    fn new(base: &str) -> Ctl<'_> {
        Ctl {
            dir: config_dir(),
            base,
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        promoctl(&self.dir, self.base, args).await
    }

    /// Exits 0; the answer as JSON (`-o json` is added).
    async fn json(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["-o", "json"]].concat()).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    }

    /// Exits 0; the table it printed.
    async fn table(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    }

    /// Exits with `code`, saying `said` on stderr.
    async fn fails(&self, args: &[&str], code: i32, said: &str) {
        let out = self.run(args).await;
        assert_eq!(out.code, code, "{}", out.stderr);
        assert!(out.stderr.contains(said), "{}", out.stderr);
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("token.json")
    }
}

impl Drop for Ctl<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_manage_policies_and_coupons() {
    // Every role: `audit list` reads every role's log.
    let app = spawn_promod_with("gateway,coupon,point,timesale").await;
    let ctl = Ctl::new(&app.base);
    logs_in(&ctl).await;
    let policy = manages_a_policy(&ctl).await;
    issues_uses_and_cancels(&ctl, &policy).await;
    // Not a uuid: refused before any request.
    ctl.fails(&["policy", "get", "not-a-uuid"], 2, "").await;
    refreshes_an_expired_token(&ctl, &policy).await;
    creates_users_and_admins(&ctl, &app, &policy).await;
}

async fn logs_in(ctl: &Ctl<'_>) {
    // Not logged in is a usage error.
    ctl.fails(&["policy", "list"], 2, "promoctl login").await;
    let login = |password| ["login", "--email", ADMIN_EMAIL, "--password", password];
    ctl.fails(&login("wrong-password"), 1, "UNAUTHORIZED").await;
    ctl.table(&login(ADMIN_PASSWORD)).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ctl.token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Creates a policy of two coupons and lists it; returns its id.
async fn manages_a_policy(ctl: &Ctl<'_>) -> String {
    let policy = ctl
        .json(&[
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
        ])
        .await;
    let id = policy["id"].as_str().expect("policy id").to_owned();
    assert_eq!(policy["total_quantity"], 2);
    assert_eq!(policy["discount_type"], "FIXED");
    let page = ctl.json(&["policy", "list"]).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], id.as_str());
    // The default table output names the policy.
    let table = ctl.table(&["policy", "list"]).await;
    assert!(
        table.contains(&id) && table.contains("ctl policy"),
        "{table}"
    );
    prints_like_kubectl(ctl, &id).await;
    id
}

/// Piped (as here), a table is plain aligned columns; `--no-headers` leaves
/// rows only, `wide` every field, `yaml` the answer.
async fn prints_like_kubectl(ctl: &Ctl<'_>, id: &str) {
    let table = ctl.table(&["policy", "list"]).await;
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("id  "), "{table}");
    assert!(!table.contains('│') && !table.contains('─'), "{table}");
    let rows = ctl.table(&["policy", "list", "--no-headers"]).await;
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert!(rows.starts_with(id), "{rows}");
    let narrow = header.split_whitespace().count();
    let wide = ctl.table(&["policy", "list", "-o", "wide"]).await;
    let wide_header = wide.lines().next().unwrap_or_default();
    assert!(wide_header.split_whitespace().count() > narrow, "{wide}");
    let yaml = ctl.table(&["policy", "get", id, "-o", "yaml"]).await;
    assert!(yaml.contains(&format!("id: {id}")), "{yaml}");
}

async fn issues_uses_and_cancels(ctl: &Ctl<'_>, policy: &str) {
    let coupon = ctl.json(&["coupon", "issue", "--policy", policy]).await;
    assert_eq!(coupon["status"], "AVAILABLE");
    assert_eq!(coupon["policy_id"], policy);
    // per_user_limit defaults to 1: the server refuses, exit 1 with its code.
    let again = ["coupon", "issue", "--policy", policy];
    ctl.fails(&again, 1, "LIMIT_EXCEEDED").await;

    // The same idempotency key replays the first answer instead of refusing.
    let (user, key) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let keyed = [
        "coupon",
        "issue",
        "--policy",
        policy,
        "--user",
        &user,
        "--idempotency-key",
        &key,
    ];
    let first = ctl.json(&keyed).await;
    assert_eq!(first["id"], ctl.json(&keyed).await["id"]);

    // Use, cancel the use, and a second cancel refused.
    let id = coupon["id"].as_str().expect("coupon id");
    let used = ctl
        .json(&[
            "coupon",
            "use",
            id,
            "--order-id",
            "order-1",
            "--order-amount",
            "10000",
        ])
        .await;
    assert_eq!(used["coupon"]["status"], "USED");
    assert_eq!(used["discount_amount"], 500);
    let cancelled = ctl.json(&["coupon", "cancel", id]).await;
    assert_eq!(cancelled["status"], "AVAILABLE");
    ctl.fails(&["coupon", "cancel", id], 1, "ALREADY_CANCELLED")
        .await;

    // Reserve for an order, refused twice, released by a cancel.
    let reserve = [
        "coupon",
        "reserve",
        id,
        "--order-id",
        "order-2",
        "--order-amount",
        "10000",
        "--hold-seconds",
        "60",
    ];
    let held = ctl.json(&reserve).await;
    assert_eq!(held["coupon"]["status"], "RESERVED");
    assert_eq!(held["coupon"]["reserved_order_id"], "order-2");
    assert_eq!(held["discount_amount"], 500);
    ctl.fails(&reserve, 1, "ALREADY_USED").await;
    let released = ctl.json(&["coupon", "cancel", id]).await;
    assert_eq!(released["status"], "AVAILABLE");
    let table = ctl.table(&["coupon", "list"]).await;
    assert!(table.contains(id) && table.contains("AVAILABLE"), "{table}");

    // An admin searches across users: the policy's coupons are the admin's
    // own and the one issued for `user`; --user narrows to theirs.
    let all = ctl.json(&["coupon", "list", "--policy", policy]).await;
    assert_eq!(all["total"], 2, "{all}");
    let theirs = ["coupon", "list", "--policy", policy, "--user", &user];
    let theirs = ctl.json(&theirs).await;
    assert_eq!(theirs["items"][0]["id"], first["id"], "{theirs}");
    assert_eq!(theirs["total"], 1, "{theirs}");
    let available = ["coupon", "list", "--user", &user, "--status", "available"];
    assert_eq!(ctl.json(&available).await["total"], 1);
}

/// An expired access token is refreshed with the stored refresh token.
async fn refreshes_an_expired_token(ctl: &Ctl<'_>, policy: &str) {
    let read = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(ctl.token_file()).unwrap()).unwrap()
    };
    let mut stored = read();
    let old_access = stored["access_token"].clone();
    stored["expires_at"] = 0.into();
    std::fs::write(ctl.token_file(), stored.to_string()).unwrap();
    let got = ctl.json(&["policy", "get", policy]).await;
    assert_eq!(got["issued_quantity"], 2);
    let stored = read();
    assert_ne!(stored["access_token"], old_access);
    assert!(stored["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp());
}

async fn creates_users_and_admins(ctl: &Ctl<'_>, app: &App, policy: &str) {
    let user = |email| {
        [
            "user",
            "create",
            "--email",
            email,
            "--password",
            "long-enough",
            "--name",
            "Someone",
        ]
    };
    let created = ctl.json(&user("someone@ctl.test")).await;
    assert_eq!(created["role"], "user");
    // A second admin, promoted in gateway_db, can act as one.
    let admin = [
        &user("boss@ctl.test")[..],
        &["--admin", "--database-url", &app.gateway_db],
    ]
    .concat();
    let promoted = ctl.json(&admin).await;
    assert_eq!(promoted["role"], "admin");
    let boss = Ctl::new(ctl.base);
    let login = [
        "login",
        "--email",
        "boss@ctl.test",
        "--password",
        "long-enough",
    ];
    boss.table(&login).await;
    let update = ["policy", "update", policy, "--total-quantity", "3"];
    assert_eq!(boss.json(&update).await["total_quantity"], 3);
    audits_the_admins(&boss, policy, promoted["id"].as_str().unwrap()).await;
}

/// `audit list` shows who did what: the promotion by promoctl (no actor),
/// then the boss's update of the policy with its before and after.
async fn audits_the_admins(boss: &Ctl<'_>, policy: &str, boss_id: &str) {
    let roles = boss
        .json(&["audit", "list", "--action", "user.role_changed"])
        .await;
    let items = roles["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the bootstrap admin and the boss: {roles}");
    assert_eq!(items[0]["actor_id"], Value::Null);
    assert_eq!(items[0]["before"]["role"], "user");
    let history = boss
        .json(&["audit", "list", "--target", policy, "--since", "-1h"])
        .await;
    let actions: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["coupon_policy.updated", "coupon_policy.created"]);
    let update = &history["items"][0];
    assert_eq!(update["actor_id"], boss_id);
    assert_eq!(
        (
            update["before"]["total_quantity"].as_i64(),
            update["after"]["total_quantity"].as_i64()
        ),
        (Some(2), Some(3))
    );
    let table = boss.table(&["audit", "list", "--target", policy]).await;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("at ") && header.contains("action"),
        "{table}"
    );
    boss.fails(&["audit", "list", "--since", "yesterday"], 2, "")
        .await;
}

/// `policy create` with a code mode, then a BATCH policy's codes generated
/// (and downloaded), listed, exported and redeemed, and a SHARED code
/// redeemed by two users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_codes_generate_list_export_and_redeem() {
    let app = spawn_promod().await;
    let ctl = Ctl::new(&app.base);
    logs_in(&ctl).await;
    let batch = create_policy(&ctl, &["--code-mode", "batch", "--stackable"], "30030").await;
    assert_eq!(batch["code_mode"], "BATCH");
    assert_eq!(batch["stackable"], true);
    let id = batch["id"].as_str().expect("policy id").to_owned();
    let codes = generates_and_downloads(&ctl, &id).await;
    redeems_a_batch_code(&ctl, &id, &codes[0]).await;
    exports(&ctl, &id, &codes).await;
    refuses_what_the_server_refuses(&ctl, &id).await;
    redeems_a_shared_code(&ctl).await;
}

/// A policy of `total` coupons created with `extra` flags.
async fn create_policy(ctl: &Ctl<'_>, extra: &[&str], total: &str) -> Value {
    #[rustfmt::skip]
    let create = [
        "policy", "create", "--name", "codes", "--discount-type", "fixed",
        "--discount-value", "500", "--total-quantity", total, "--per-user-limit", "3",
        "--valid-from", "-1m", "--valid-until", "+1d",
    ];
    ctl.json(&[&create[..], extra].concat()).await
}

/// Lines of a CSV export, without the header (checked).
fn csv_lines(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("code,status"), "{csv}");
    lines
        .map(|l| {
            let (code, status) = l.split_once(',').expect("code,status");
            (code.to_owned(), status.to_owned())
        })
        .collect()
}

/// 20 codes, downloaded into a file as they are generated; their codes.
async fn generates_and_downloads(ctl: &Ctl<'_>, policy: &str) -> Vec<String> {
    let out = ctl.dir.join("codes.csv");
    let path = out.to_str().unwrap();
    #[rustfmt::skip]
    let generate = ["code", "generate", "--policy", policy, "--count", "20", "--prefix", "TEST", "--out", path];
    let v = ctl.json(&generate).await;
    assert_eq!(
        (v["generated"].as_i64(), v["total_codes"].as_i64()),
        (Some(20), Some(20)),
        "{v}"
    );
    assert_eq!(
        (v["exported"].as_i64(), v["out"].as_str()),
        (Some(20), Some(path)),
        "{v}"
    );
    assert!(
        !ctl.dir.join("codes.csv.part").exists(),
        "the part file is renamed"
    );
    let lines = csv_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(lines.len(), 20);
    assert!(
        lines
            .iter()
            .all(|(c, s)| c.starts_with("TEST") && s == "UNREDEEMED"),
        "{lines:?}"
    );
    let page = ctl
        .json(&["code", "list", "--policy", policy, "--size", "5"])
        .await;
    assert_eq!(
        (
            page["total"].as_i64(),
            page["items"].as_array().map(Vec::len)
        ),
        (Some(20), Some(5))
    );
    lines.into_iter().map(|(c, _)| c).collect()
}

/// Typed in lower case with a hyphen, once; a second time is refused.
async fn redeems_a_batch_code(ctl: &Ctl<'_>, policy: &str, code: &str) {
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let coupon = ctl.json(&["coupon", "redeem", "--code", &typed]).await;
    assert_eq!(coupon["policy_id"], policy);
    assert_eq!(coupon["status"], "AVAILABLE");
    ctl.fails(&["coupon", "redeem", "--code", code], 1, "ALREADY_REDEEMED")
        .await;
    let page = ctl
        .json(&["code", "list", "--policy", policy, "--status", "redeemed"])
        .await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["code"], code);
    assert_eq!(page["items"][0]["coupon_id"], coupon["id"]);
    let table = ctl
        .table(&["code", "list", "--policy", policy, "--status", "REDEEMED"])
        .await;
    assert!(
        table.contains(code) && table.contains("REDEEMED"),
        "{table}"
    );
}

/// To stdout, and into a file with the policy's count as the bar's length;
/// a second batch of 30,000 spans many chunks of the stream.
async fn exports(ctl: &Ctl<'_>, policy: &str, codes: &[String]) {
    let out = ctl.table(&["code", "export", "--policy", policy]).await;
    let lines = csv_lines(&out);
    assert_eq!(lines.len(), 20);
    let redeemed: Vec<_> = lines.iter().filter(|(_, s)| s == "REDEEMED").collect();
    assert_eq!(redeemed.len(), 1);
    assert_eq!(redeemed[0].0, codes[0]);
    #[rustfmt::skip]
    let more = ["code", "generate", "--policy", policy, "--count", "30000"];
    assert_eq!(ctl.json(&more).await["total_codes"], 30_020);
    let file = ctl.dir.join("all.csv");
    let path = file.to_str().unwrap();
    let v = ctl
        .json(&["code", "export", "--policy", policy, "--out", path])
        .await;
    assert_eq!(v["exported"], 30_020, "{v}");
    let all = csv_lines(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(all.len(), 30_020);
    let unique: std::collections::HashSet<_> = all.iter().map(|(c, _)| c).collect();
    assert_eq!(unique.len(), 30_020);
}

async fn refuses_what_the_server_refuses(ctl: &Ctl<'_>, policy: &str) {
    // More codes than coupons left (30,030 - 30,020).
    let over = ["code", "generate", "--policy", policy, "--count", "11"];
    ctl.fails(&over, 1, "VALIDATION_ERROR").await;
    ctl.fails(&["coupon", "redeem", "--code", "NOPE-NOPE"], 1, "")
        .await;
    // Codes are for BATCH policies; issue is for GENERATED ones.
    let plain = create_policy(ctl, &[], "5").await;
    let plain = plain["id"].as_str().unwrap();
    ctl.fails(
        &["code", "generate", "--policy", plain, "--count", "1"],
        1,
        "CONFLICT",
    )
    .await;
    ctl.fails(&["coupon", "issue", "--policy", policy], 1, "CONFLICT")
        .await;
    // A shared policy needs its code: refused before any request.
    ctl.fails(
        &[
            "policy",
            "create",
            "--name",
            "x",
            "--discount-type",
            "fixed",
            "--discount-value",
            "1",
            "--total-quantity",
            "1",
            "--valid-until",
            "+1d",
            "--code-mode",
            "shared",
        ],
        2,
        "--shared-code",
    )
    .await;
}

async fn redeems_a_shared_code(ctl: &Ctl<'_>) {
    let shared = create_policy(
        ctl,
        &["--code-mode", "shared", "--shared-code", "spring-10"],
        "5",
    )
    .await;
    assert_eq!(
        (shared["code_mode"].as_str(), shared["shared_code"].as_str()),
        (Some("SHARED"), Some("SPRING-10"))
    );
    let mine = ctl.json(&["coupon", "redeem", "--code", "spring 10"]).await;
    assert_eq!(mine["code"], "SPRING-10");
    let user = Uuid::new_v4().to_string();
    let theirs = ctl
        .json(&["coupon", "redeem", "--code", "SPRING10", "--user", &user])
        .await;
    assert_eq!(
        (theirs["user_id"].as_str(), theirs["code"].as_str()),
        (Some(user.as_str()), Some("SPRING-10"))
    );
    let got = ctl
        .json(&["policy", "get", shared["id"].as_str().unwrap()])
        .await;
    assert_eq!(got["issued_quantity"], 2);
}

/// `load redeem` generates its codes, redeems each once, and `--check`
/// then finds every invariant holding on promod's own stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_redeem_redeems_each_code_once_and_checks() {
    let app = spawn_promod_with("gateway,coupon,point,timesale").await;
    let ctl = Ctl::new(&app.base);
    let report = ctl.dir.join("report.json");
    std::fs::create_dir_all(&ctl.dir).unwrap();
    #[rustfmt::skip]
    let load = [
        "load", "redeem", "--rate", "100", "--duration", "2s", "--users", "7",
        "--jwt-secret", SECRET, "--quiet", "--check", "--report", report.to_str().unwrap(),
    ];
    let args = [
        &load[..],
        &app.stores.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat();
    let out = ctl.run(&args).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("coupon.codes_redeemed_once"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("all invariants hold"), "{}", out.stdout);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["scenario"], "redeem");
    assert_eq!(r["summary"]["attempted"], 200, "{r}");
    assert_eq!(r["summary"]["succeeded"], 200, "{r}");

    // Fewer codes than requests: the reused ones are failures.
    #[rustfmt::skip]
    let short = [
        "load", "redeem", "--rate", "20", "--duration", "1s", "--users", "3", "--codes", "15",
        "--jwt-secret", SECRET, "--quiet", "--report", report.to_str().unwrap(),
    ];
    let out = ctl.run(&short).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["summary"]["succeeded"], 15, "{r}");
    assert_eq!(r["summary"]["failed"], 5, "{r}");
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

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_closed_port_exits_3() {
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let ctl = Ctl::new(&base);
    let login = ["login", "--email", "a@b.c", "--password", "whatever1"];
    ctl.fails(&login, 3, "unreachable").await;
    let redis = format!("redis://127.0.0.1:{port}");
    ctl.fails(
        &["check", "--point", "--redis-url", &redis],
        3,
        "unreachable: redis",
    )
    .await;
}

/// `load --check` runs the checks in this process, on the stores given to
/// the load: one it cannot reach fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_check_runs_the_checks_on_the_loads_stores() {
    let app = spawn_promod().await;
    let ctl = Ctl::new(&app.base);
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    #[rustfmt::skip]
    let load = [
        "load", "health", "--rate", "10", "--duration", "1s", "--users", "1",
        "--jwt-secret", SECRET, "--quiet",
    ];
    ctl.table(&load).await;
    // A broken threshold has its own exit code, 4.
    let slow = [&load[..], &["--min-rps", "1000000"]].concat();
    let out = ctl.run(&slow).await;
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("threshold  FAILED"), "{}", out.stdout);
    let json = ctl.run(&[&slow[..], &["-o", "json"]].concat()).await;
    assert_eq!(json.code, 4, "{}", json.stderr);
    assert_eq!(json.json()["violations"].as_array().map(Vec::len), Some(1));
    let checked = [&load[..], &["--check", "--redis-url", &redis]].concat();
    let out = ctl.run(&checked).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("unreachable: redis at {redis}"))
            && out.stderr.contains("promoctl check failed after the load"),
        "{}",
        out.stderr
    );
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

/// A TLS front for `backend`, as a load balancer puts before a real gateway,
/// with a self-signed certificate for `localhost`: its port and the
/// certificate's PEM file.
async fn tls_front(backend: SocketAddr) -> (u16, PathBuf) {
    use std::sync::Arc;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let pem = config_dir().with_extension("pem");
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gateway_is_reached_trusting_the_named_certificate_authority() {
    let app = spawn_promod().await;
    let (port, ca) = tls_front(app.base.trim_start_matches("http://").parse().unwrap()).await;
    let https = format!("https://localhost:{port}");
    let ctl = Ctl::new(&https);
    let login = [
        "login",
        "--email",
        ADMIN_EMAIL,
        "--password",
        ADMIN_PASSWORD,
    ];
    // The system's roots do not hold a self-signed certificate.
    let out = ctl.run(&login).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    let missing = ["--certificate-authority", "/nonexistent.pem"];
    ctl.fails(&[&missing[..], &login].concat(), 2, "/nonexistent.pem")
        .await;

    let flag = ["--certificate-authority", ca.to_str().unwrap()];
    ctl.table(&[&flag[..], &login].concat()).await;
    // The config file's key does the same for every later command.
    std::fs::write(
        ctl.dir.join("config.toml"),
        format!("certificate_authority = {:?}\n", ca.to_str().unwrap()),
    )
    .unwrap();
    let page = ctl.json(&["policy", "list"]).await;
    assert_eq!(page["total"], 0, "{page}");
    let _ = std::fs::remove_file(&ca);
}
