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

    let (code, lines, err) = tail(&[&dbs[..], &["--from-beginning", "--json"]].concat()).await;
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
            &[
                "--from-beginning",
                "--user",
                &user.to_string(),
                "--type",
                "point.earned",
            ],
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

    // From the end, without --follow: nothing new, so nothing printed.
    let (code, lines, err) = tail(&dbs).await;
    assert_eq!(code, 0, "{err}");
    assert!(lines.is_empty(), "{lines:?}");
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
    let producer = promod::outbox::producer(&brokers).expect("kafka producer");
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
        "--json",
        "--user",
        &user.to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines.len(), 1, "{lines:?} {err}");
    assert_eq!(serde_json::from_str::<Event>(&lines[0]).unwrap(), e);
}
