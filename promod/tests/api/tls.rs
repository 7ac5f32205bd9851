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
