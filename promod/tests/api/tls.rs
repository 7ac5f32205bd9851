//! promod reaches PostgreSQL over TLS (rustls), trusting only the server's
//! own self-signed certificate: on Debian the cluster serves the snakeoil
//! certificate, which is world-readable and stands as its own root.

use super::helpers::{fresh_db, pg_base, test_config};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The server's certificate file when it serves TLS and we can read it.
async fn server_certificate(admin: &PgPool) -> Option<String> {
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(admin)
        .await
        .unwrap();
    let cert: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(admin)
        .await
        .unwrap();
    (ssl == "on" && std::fs::metadata(&cert).is_ok()).then_some(cert)
}

/// Connections to `db` by whether they are encrypted: (tls, plain).
async fn connections(admin: &PgPool, db: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promod_reaches_postgresql_over_tls_trusting_a_self_signed_certificate() {
    let admin = PgPool::connect(&format!("{}/postgres", pg_base()))
        .await
        .unwrap();
    let Some(cert) = server_certificate(&admin).await else {
        assert!(
            std::env::var("PROMO_TEST_TLS").is_err(),
            "PROMO_TEST_TLS is set but PostgreSQL serves no readable certificate"
        );
        eprintln!("skipped: PostgreSQL at {} has ssl off", pg_base());
        return;
    };
    // verify-full: the snakeoil certificate names `localhost`. (sqlx 0.8's
    // verify-ca, which should skip the name, does not recognise the name
    // error of rustls 0.23.26+ and fails the same way against 127.0.0.1.)
    let tls = |url: String, root: &str| {
        let url = url.replacen("@127.0.0.1:", "@localhost:", 1);
        format!("{url}?sslmode=verify-full&sslrootcert={root}")
    };
    let mut cfg = test_config();
    cfg.roles = "gateway,coupon".parse().unwrap();
    cfg.coupon.database_url = tls(fresh_db("coupon").await, &cert);
    cfg.gateway.database_url = tls(fresh_db("gateway").await, &cert);
    let coupon_db = db_name(&cfg.coupon.database_url);
    let gateway_db = db_name(&cfg.gateway.database_url);

    // Another root: the server's certificate is not trusted, nothing starts.
    let mut wrong = cfg.clone();
    wrong.coupon.database_url = tls(
        fresh_db("coupon").await,
        "/etc/ssl/certs/ca-certificates.crt",
    );
    wrong.roles = "coupon".parse().unwrap();
    let Err(e) = promod::server::start(wrong, CancellationToken::new()).await else {
        panic!("an untrusted certificate must fail the start");
    };
    assert!(
        format!("{e:#}").contains("cannot connect to postgres"),
        "{e:#}"
    );

    let shutdown = CancellationToken::new();
    let (tasks, bound) = promod::server::start(cfg, shutdown.clone())
        .await
        .expect("promod starts over tls");
    let running = tokio::spawn(promod::server::join(tasks, shutdown.clone()));
    let base = format!("http://{}", bound.gateway_http.unwrap());
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "{}",
        ready.text().await.unwrap_or_default()
    );
    for db in [&coupon_db, &gateway_db] {
        let (encrypted, plain) = connections(&admin, db).await;
        assert!(encrypted >= 1, "{db}: no tls connection");
        assert_eq!(plain, 0, "{db}: {plain} connection(s) in the clear");
    }
    shutdown.cancel();
    let _ = running.await;
}

fn db_name(url: &str) -> String {
    let path = url.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_owned()
}

/// A redis-server that speaks only TLS (`--port 0`), on a spare port, with a
/// self-signed certificate for `localhost`; killed when dropped.
struct TlsRedis {
    _child: tokio::process::Child,
    dir: std::path::PathBuf,
    url: String,
    ca: std::path::PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsRedis {
    /// `None` when this machine has no redis-server to start.
    async fn start() -> Option<TlsRedis> {
        let dir = std::env::temp_dir().join(format!("promo-tls-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (ca, key) = (dir.join("ca.pem"), dir.join("key.pem"));
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let port = super::helpers::free_port();
        let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        let spawned = tokio::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path(&ca), "--tls-key-file", &path(&key)])
            .args(["--tls-ca-cert-file", &path(&ca), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--dir", &path(&dir)])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let url = format!("rediss://localhost:{port}");
        let redis = TlsRedis {
            _child: child,
            dir,
            url,
            ca,
        };
        redis.connect().await;
        Some(redis)
    }

    /// A connection trusting the server's certificate, once it listens.
    async fn connect(&self) -> promo_store::cache::Redis {
        let target = promo_store::cache::Target::new(&self.url, Some(&self.ca));
        for _ in 0..50 {
            if let Ok(c) = promo_store::cache::connect(target).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("redis-server with tls did not come up at {}", self.url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promod_admits_through_redis_over_tls_trusting_its_ca_file() {
    let Some(redis) = TlsRedis::start().await else {
        assert!(
            std::env::var("PROMO_TEST_TLS").is_err(),
            "PROMO_TEST_TLS is set but there is no redis-server"
        );
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    // The system's roots do not hold the certificate: no connection.
    let untrusted = promo_store::cache::connect(redis.url.as_str()).await;
    assert!(
        untrusted.is_err(),
        "a self-signed redis must not be trusted"
    );
    let mut wrong = test_config();
    wrong.roles = "coupon".parse().unwrap();
    wrong.coupon.database_url = fresh_db("coupon").await;
    wrong.redis_url = redis.url.clone();
    let Err(e) = promod::server::start(wrong, CancellationToken::new()).await else {
        panic!("an untrusted redis certificate must fail the start");
    };
    assert!(format!("{e:#}").contains("redis"), "{e:#}");

    let (url, ca) = (redis.url.clone(), redis.ca.clone());
    let app = super::helpers::spawn_app_with(move |c| {
        c.redis_url = url;
        c.redis_ca_file = Some(ca);
    })
    .await;
    let policy = app.create_policy(5, 1).await;
    let (_, token) = app.user_token();
    let (status, body) = app
        .post(
            "/coupons/issue",
            &token,
            serde_json::json!({"policy_id": policy}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The admission counter lives on the TLS-only server.
    let mut conn = redis.connect().await;
    let remaining: i64 = redis::cmd("GET")
        .arg(promo_store::keys::coupon_remaining(policy))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(remaining, 4);
}
