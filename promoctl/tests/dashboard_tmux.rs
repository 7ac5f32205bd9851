//! Drives the real `promoctl dashboard` in tmux, the way a person would see
//! it: against a promod started in this process, then against nothing at all.
//! Each tmux server runs on its own socket, so nothing here touches another
//! user's sessions.

mod common;

use common::fresh_db;

use promo_domain::principal::Role;
use promo_store::auth::JwtKeys;
use promod::config::Config;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "test-secret-test-secret-test-secret!";
/// A Redis database of its own, so the stock of other test runs sharing this
/// Redis does not crowd out the policy made here.
const REDIS_DB: u8 = 13;

fn redis_url() -> String {
    let base =
        std::env::var("PROMO_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    format!("{}/{REDIS_DB}", base.trim_end_matches('/'))
}

fn etcd_url() -> String {
    std::env::var("PROMO_TEST_ETCD").unwrap_or_else(|_| "http://127.0.0.1:2379".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmux_missing() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return false;
    }
    eprintln!("skipping: tmux is not installed (apt-get install -y tmux)");
    true
}

/// A tmux server of its own with one session; killed on drop, pass or fail.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        let id = Uuid::new_v4().simple().to_string();
        let t = Tmux {
            socket: format!("promoctl-test-{id}"),
            session: format!("dash-{id}"),
        };
        let (w, h) = (width.to_string(), height.to_string());
        t.run(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        // Keep the pane after the program exits, to see what it left behind.
        t.run(&["set-option", "-t", &t.session, "remain-on-exit", "on"]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    fn pane(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", &self.session, format])
            .trim()
            .to_owned()
    }

    /// Polls the screen until `ok` holds, or fails with the last screen.
    async fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < within,
                "no {what} within {within:?}:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for the program to exit and returns its exit status (None when
    /// tmux could not tell) and whether it left the alternate screen on.
    async fn wait_exit(&self) -> (Option<String>, bool) {
        let start = Instant::now();
        let mut dead_since = None;
        loop {
            let dead = self.pane("#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}");
            if let Some(rest) = dead.strip_prefix("1:") {
                let since = *dead_since.get_or_insert_with(Instant::now);
                // tmux marks the pane dead when the pty closes and learns the
                // status when it reaps the process; now and then it never
                // does (seen with 3.3a), which says nothing about the program.
                if rest != ":" || since.elapsed() > Duration::from_secs(1) {
                    let alternate = self.pane("#{alternate_on}") == "1";
                    let status = (rest != ":").then(|| rest.trim_end_matches(':').to_owned());
                    return (status, alternate);
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the dashboard did not exit ({dead}):\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

struct Promod {
    gateway: String,
    coupon: String,
    point: String,
    etcd_prefix: String,
    shutdown: CancellationToken,
}

impl Drop for Promod {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// gateway, coupon and point in this process, on fixed ports the dashboard
/// is told about, registered in etcd under a prefix of their own.
async fn start_promod() -> Promod {
    let mut cfg = Config {
        jwt_secret: SecretString::from(SECRET.to_owned()),
        redis_url: redis_url(),
        ..Config::default()
    };
    let at = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let (gw, cp, pt) = (free_port(), free_port(), free_port());
    cfg.roles = "gateway,coupon,point".parse().unwrap();
    cfg.gateway.http_addr = at(gw);
    cfg.coupon.http_addr = at(cp);
    cfg.coupon.grpc_addr = at(0);
    cfg.point.service.http_addr = at(pt);
    cfg.point.service.grpc_addr = at(0);
    cfg.gateway.rate_limit.enabled = false;
    cfg.etcd_endpoints = vec![etcd_url()];
    cfg.etcd_prefix = format!("/promoctl-test-{}/services", Uuid::new_v4().simple());
    cfg.coupon.database_url = fresh_db("coupon").await;
    cfg.point.service.database_url = fresh_db("point").await;
    cfg.gateway.database_url = fresh_db("gateway").await;
    let etcd_prefix = cfg.etcd_prefix.clone();
    let shutdown = CancellationToken::new();
    let (tasks, _bound) = promod::server::start(cfg, shutdown.clone())
        .await
        .expect("promod starts");
    tokio::spawn(promod::server::join(tasks, shutdown.clone()));
    Promod {
        gateway: format!("http://127.0.0.1:{gw}"),
        coupon: format!("http://127.0.0.1:{cp}"),
        point: format!("http://127.0.0.1:{pt}"),
        etcd_prefix,
        shutdown,
    }
}

/// The shared Redis outlives this test: its policy's keys go, pass or fail.
struct ForgetPolicy(Uuid);

impl Drop for ForgetPolicy {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(promo_store::keys::coupon_remaining(self.0))
                .arg(promo_store::keys::coupon_users(self.0))
                .query(&mut c);
        }
    }
}

/// The row of `role` in the roles pane, or "" when it has none. Only the
/// roles pane's own lines count, and only from the screen's left edge: the
/// breakers pane beside it lists services by the same names (with no
/// timesale role in process, the gateway keeps a "timesale" breaker, on the
/// line of the roles header), and the routes pane below starts its rows
/// with role names too.
fn roles_row(screen: &str, role: &str) -> String {
    let start = format!("│{role} ");
    screen
        .lines()
        .skip_while(|l| !l.starts_with("┌ roles "))
        .take_while(|l| !l.starts_with('└'))
        .find(|l| l.starts_with(&start))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_role_row_comes_from_the_roles_pane_only() {
    let screen = "\
┌ roles ──────────────┐┌ breakers · rate limit ┐
│role     status  etc ││timesale  closed       │
│gateway  up      -   ││rate limited  none     │
│timesale down    0   ││                       │
└─────────────────────┘└───────────────────────┘
┌ routes ──────────────────────────────────────┐
│coupon   GET /coupon-policies  1.0            │
└──────────────────────────────────────────────┘
";
    assert!(roles_row(screen, "timesale").contains(" down "));
    assert!(roles_row(screen, "gateway").contains(" up "));
    assert_eq!(roles_row(screen, "coupon"), "");
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_live_promod_and_restores_the_terminal_on_q() {
    if tmux_missing() {
        return;
    }
    let app = start_promod().await;
    let keys = JwtKeys::new(&SecretString::from(SECRET.to_owned()), 900);
    let admin = keys.issue(Uuid::new_v4(), Role::Admin).unwrap();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now();
    let policy = post(
        &http,
        format!("{}/api/v1/coupon-policies", app.gateway),
        &admin,
        json!({
            "name": "dashboard test",
            "discount_type": "PERCENTAGE",
            "discount_value": 10,
            "max_discount_amount": 5000,
            "min_order_amount": 1000,
            "total_quantity": 777,
            "per_user_limit": 1,
            "valid_from": now - chrono::Duration::minutes(1),
            "valid_until": now + chrono::Duration::days(1),
        }),
    )
    .await;
    let policy: Uuid = policy["id"].as_str().unwrap().parse().unwrap();
    let _forget = ForgetPolicy(policy);
    let user = keys.issue(Uuid::new_v4(), Role::User).unwrap();
    post(
        &http,
        format!("{}/api/v1/coupons/issue", app.gateway),
        &user,
        json!({"policy_id": policy}),
    )
    .await;

    let down = format!("http://127.0.0.1:{}", free_port());
    let cmd = format!(
        "{} dashboard --gateway {} --coupon {} --point {} --timesale {down} \
         --redis {} --etcd {} --etcd-prefix {}",
        env!("CARGO_BIN_EXE_promoctl"),
        app.gateway,
        app.coupon,
        app.point,
        redis_url(),
        etcd_url(),
        app.etcd_prefix,
    );
    let tmux = Tmux::start(120, 40, &cmd);
    // Traffic between scrapes, so that the rates have something to show.
    let traffic = {
        let (http, gateway, admin) = (http.clone(), app.gateway.clone(), admin.clone());
        tokio::spawn(async move {
            // Until aborted: a slow start of the dashboard must still see traffic.
            for _ in 0..600 {
                let _ = http
                    .get(format!("{gateway}/api/v1/coupon-policies"))
                    .bearer_auth(&admin)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let tail: String = policy.to_string().chars().skip(28).collect();
    let screen = tmux
        .wait_for("live numbers", Duration::from_secs(15), |s| {
            // The gateway's row of the traffic below, with a rate above zero
            // and latencies: two scrapes of the gateway with requests between.
            let routes_live = s.lines().any(|l| {
                l.starts_with("│gateway  GET /coupon-policies ")
                    && !l.contains(" -  ")
                    && l.split_whitespace()
                        .nth(3)
                        .and_then(|r| r.parse::<f64>().ok())
                        .is_some_and(|r| r > 0.0)
            });
            roles_row(s, "gateway").contains(" up ")
                && roles_row(s, "timesale").contains(" down ")
                && s.lines().any(|l| l.contains(&tail) && l.contains(" 776 "))
                && routes_live
        })
        .await;
    traffic.abort();
    // Registered in etcd under the test's prefix: one instance each.
    let coupon = roles_row(&screen, "coupon");
    assert!(
        // The etcd column: after the border, the role's 8 and the status's 7.
        coupon.contains(" up ")
            && coupon.chars().skip(18).take(4).collect::<String>().trim() == "1",
        "{screen}"
    );
    assert!(screen.contains("kafka events"), "{screen}");
    assert!(screen.contains("point ops"), "{screen}");

    tmux.run(&["send-keys", "-t", &tmux.session, "p"]);
    tmux.wait_for("the pause mark", Duration::from_secs(5), |s| {
        s.lines().next().unwrap_or_default().contains("PAUSED")
    })
    .await;
    tmux.run(&["send-keys", "-t", &tmux.session, "?"]);
    tmux.wait_for("the help overlay", Duration::from_secs(5), |s| {
        s.contains("pause or resume refreshing")
    })
    .await;
    tmux.run(&["send-keys", "-t", &tmux.session, "q"]);
    let (status, alternate) = tmux.wait_exit().await;
    assert!(matches!(status.as_deref(), None | Some("0")), "{status:?}");
    assert!(!alternate, "left in the alternate screen");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_down_shows_no_data_and_ctrl_c_restores_the_terminal() {
    if tmux_missing() {
        return;
    }
    let nowhere = |_| format!("http://127.0.0.1:{}", free_port());
    let urls: Vec<String> = (0..4).map(nowhere).collect();
    let cmd = format!(
        "{} dashboard --gateway {} --coupon {} --point {} --timesale {} --redis '' --etcd ''",
        env!("CARGO_BIN_EXE_promoctl"),
        urls[0],
        urls[1],
        urls[2],
        urls[3],
    );
    let tmux = Tmux::start(80, 24, &cmd);
    let screen = tmux
        .wait_for("four roles down", Duration::from_secs(10), |s| {
            s.matches(" down ").count() == 4
        })
        .await;
    assert!(screen.contains("no data (gateway down)"), "{screen}");
    assert!(screen.contains("point ops  no data"), "{screen}");
    tmux.run(&["send-keys", "-t", &tmux.session, "C-c"]);
    let (status, alternate) = tmux.wait_exit().await;
    assert!(matches!(status.as_deref(), None | Some("0")), "{status:?}");
    assert!(!alternate, "left in the alternate screen");
}
