//! `promoctl events tail` from the outbox tables and from the broker.

mod common;

use common::{fresh_with_url, Schema};
use promod::outbox::Event;
use sqlx::PgPool;
use uuid::Uuid;

async fn append(pool: &PgPool, e: &Event, age_secs: f64) {
    sqlx::query(
        "INSERT INTO outbox (id, topic, aggregate_id, payload, created_at)
         VALUES ($1, $2, $3, $4, now() - make_interval(secs => $5))",
    )
    .bind(e.id)
    .bind(&e.event_type)
    .bind(&e.aggregate_id)
    .bind(serde_json::to_value(e).unwrap())
    .bind(age_secs)
    .execute(pool)
    .await
    .unwrap();
}

fn event(kind: &str, user: Uuid) -> Event {
    Event::new(
        kind,
        Uuid::new_v4(),
        Some(user),
        chrono::Utc::now(),
        serde_json::json!({"n": 1}),
    )
}

async fn tail(args: &[&str]) -> (i32, Vec<String>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_promoctl"))
        .args(["events", "tail"])
        .args(args)
        .env(
            "PROMOCTL_CONFIG_DIR",
            std::env::temp_dir().join(format!("promoctl-ev-{}", Uuid::new_v4())),
        )
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run promoctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn outbox_source_merges_the_three_databases_in_time_order() {
    let (coupon, coupon_url) = fresh_with_url(Schema::Coupon).await;
    let (point, point_url) = fresh_with_url(Schema::Point).await;
    let (_timesale, timesale_url) = fresh_with_url(Schema::Timesale).await;
    let user = Uuid::new_v4();
    let first = event("coupon.issued", user);
    let second = event("point.earned", user);
    let third = event("coupon.used", Uuid::new_v4());
    append(&coupon, &first, 30.0).await;
    append(&point, &second, 20.0).await;
    append(&coupon, &third, 10.0).await;
    let dbs = [
        "--source",
        "outbox",
        "--coupon-db",
        &coupon_url,
        "--point-db",
        &point_url,
        "--timesale-db",
        &timesale_url,
    ];

    let once = ["--from-beginning", "--no-follow"];
    let (code, lines, err) = tail(&[&dbs[..], &once, &["-o", "json"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    let ids: Vec<Uuid> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Event>(l)
                .expect("a json event per line")
                .id
        })
        .collect();
    assert_eq!(ids, vec![first.id, second.id, third.id]);

    let (code, lines, err) = tail(
        &[
            &dbs[..],
            &once,
            &["--user", &user.to_string(), "--type", "point.earned"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("point.earned") && lines[0].contains(&second.id.to_string()),
        "{lines:?}"
    );

    // -c stops after that many; --aggregate keeps one aggregate's events.
    let (code, lines, err) = tail(&[&dbs[..], &once, &["-c", "2", "-o", "json"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let agg = ["--aggregate", &third.aggregate_id];
    let (code, lines, err) = tail(&[&dbs[..], &once, &agg].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&third.id.to_string()), "{lines:?}");

    // From the end, with --no-follow: nothing new, so nothing printed.
    let (code, lines, err) = tail(&[&dbs[..], &["--no-follow"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    assert!(lines.is_empty(), "{lines:?}");
}

/// Like kcat, `events tail` follows by default: it prints what is written
/// after it started, and stops on Ctrl-C (or after `-c N`).
#[tokio::test]
async fn tail_follows_by_default_until_ctrl_c() {
    let (coupon, coupon_url) = fresh_with_url(Schema::Coupon).await;
    let (_point, point_url) = fresh_with_url(Schema::Point).await;
    let (_timesale, timesale_url) = fresh_with_url(Schema::Timesale).await;
    let spawn = |extra: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_promoctl"))
            .args(["events", "tail", "--source", "outbox", "-o", "json"])
            .args(["--coupon-database-url", &coupon_url])
            .args(["--point-database-url", &point_url])
            .args(["--timesale-database-url", &timesale_url])
            .args(extra)
            .env(
                "PROMOCTL_CONFIG_DIR",
                std::env::temp_dir().join("promoctl-ev-none"),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run promoctl")
    };
    let counted = spawn(&["-c", "1"]);
    let followed = spawn(&[]);
    // Both have read where the outbox ends before anything is written.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let e = event("coupon.issued", Uuid::new_v4());
    append(&coupon, &e, 0.0).await;

    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        counted.wait_with_output(),
    )
    .await
    .expect("-c 1 stops after one event")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serde_json::from_str::<Event>(text.trim()).unwrap().id, e.id);

    // The follower is still running: it saw the event, and stops on SIGINT.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let pid = followed.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(kill.unwrap().success());
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        followed.wait_with_output(),
    )
    .await
    .expect("Ctrl-C stops the tail")
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test]
async fn kafka_source_reads_from_the_beginning_and_stops_at_the_end() {
    let brokers = std::env::var("PROMO_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if std::env::var("PROMO_TEST_KAFKA").is_err() && std::net::TcpStream::connect(&brokers).is_err()
    {
        // The broker is optional locally (services.sh builds it once, slowly);
        // set PROMO_TEST_KAFKA to make its absence a failure.
        eprintln!("skipped: no kafka broker at {brokers}");
        return;
    }
    let producer = promod::outbox::producer(&brokers, &Default::default()).expect("kafka producer");
    let user = Uuid::new_v4();
    let e = event("coupon.issued", user);
    let body = serde_json::to_string(&e).unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to("coupon.issued")
                .key(&e.aggregate_id)
                .payload(&body),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("the broker takes the event");

    let (code, lines, err) = tail(&[
        "--brokers",
        &brokers,
        "--topic",
        "coupon.issued",
        "--from-beginning",
        "--no-follow",
        "--json",
        "--user",
        &user.to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 1, "{lines:?} {err}");
    assert_eq!(serde_json::from_str::<Event>(&lines[0]).unwrap(), e);
}
