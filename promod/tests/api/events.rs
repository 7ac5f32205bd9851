//! Issue 7: no committed change loses its event. Against real brokers (the
//! shared Tansu, private Tansu instances for outages) and, for the fatal
//! producer error, librdkafka's mock cluster.

use super::helpers::{free_port, fresh_db, spawn_app, spawn_app_with, TestApp, SECRET};
use promo_domain::principal::Role;
use promod::outbox::{self, Event, Relay, RelayConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The topics of `promo_store::topics::ALL` under the given prefixes.
fn topics_of(prefixes: &[&str]) -> Vec<&'static str> {
    promo_store::topics::ALL
        .iter()
        .copied()
        .filter(|t| prefixes.iter().any(|p| t.starts_with(p)))
        .collect()
}

/// The topics the coupon and point roles write.
fn coupon_and_point_topics() -> Vec<&'static str> {
    topics_of(&["coupon.", "point."])
}

fn shared_broker() -> String {
    std::env::var("PROMO_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The tansu binary `scripts/services.sh` installs (same cache folder rule).
fn tansu_bin() -> String {
    std::env::var("PROMO_TEST_TANSU").unwrap_or_else(|_| {
        let cache = std::env::var("PROMO_CACHE_DIR").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            format!("{home}/.cache/promo")
        });
        format!("{cache}/tansu/bin/tansu")
    })
}

/// A received message: topic, key and the parsed payload.
#[derive(Debug, Clone)]
struct Received {
    /// Position in the order of receipt; within one partition it is offset order.
    pos: usize,
    topic: String,
    key: String,
    body: Value,
}

/// Where each partition of the shared broker's topics ends, taken before a
/// test writes: a long-lived dev broker can hold millions of records from
/// earlier runs, more than a read from the beginning gets through in 30 s.
/// (Tansu's high watermarks can lag the true end, which only makes the read
/// start a little early.)
type LogEnds = HashMap<(String, i32), i64>;

async fn log_ends(brokers: &str) -> LogEnds {
    log_ends_of(brokers, &coupon_and_point_topics()).await
}

async fn log_ends_of(brokers: &str, topics: &[&'static str]) -> LogEnds {
    let brokers = brokers.to_owned();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer = test_consumer(&brokers);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ends = LogEnds::new();
        for topic in topics {
            for p in partitions(&consumer, topic, deadline) {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .expect("watermarks");
                ends.insert((topic.to_owned(), p), high);
            }
        }
        ends
    })
    .await
    .expect("watermark thread")
}

fn test_consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("promo-test-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3")
        .create()
        .expect("kafka consumer")
}

/// A freshly created topic can take a moment to show its partitions.
fn partitions(consumer: &BaseConsumer, topic: &str, deadline: Instant) -> Vec<i32> {
    loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(3))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            })
            .filter(|p| !p.is_empty());
        if let Some(p) = found {
            return p;
        }
        assert!(Instant::now() < deadline, "no metadata for topic {topic}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `topics` from `from` (the beginning where it has no entry) and
/// returns the messages whose envelope id is in `want`, in order of receipt
/// (offset order within a partition). It stops a second after the last
/// wanted id showed up (so duplicates are seen too), or after 30 s with what
/// it found.
async fn consume(
    brokers: &str,
    from: &LogEnds,
    want: &HashSet<Uuid>,
) -> HashMap<Uuid, Vec<Received>> {
    consume_topics(brokers, &coupon_and_point_topics(), from, want).await
}

fn sorted_topics(rows: &[Row]) -> Vec<&str> {
    let mut topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
    topics.sort_unstable();
    topics
}

fn ids(rows: &[Row]) -> HashSet<Uuid> {
    rows.iter().map(|r| r.id).collect()
}

/// Every row was received exactly once, as stored.
fn assert_each_once(rows: &[Row], got: &HashMap<Uuid, Vec<Received>>) {
    for row in rows {
        let msgs = got.get(&row.id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            msgs.len(),
            1,
            "event {} ({}) received {} times",
            row.id,
            row.topic,
            msgs.len()
        );
        assert_envelope(row, &msgs[0]);
    }
}

async fn consume_topics(
    brokers: &str,
    topics: &[&'static str],
    from: &LogEnds,
    want: &HashSet<Uuid>,
) -> HashMap<Uuid, Vec<Received>> {
    let brokers = brokers.to_owned();
    let topics = topics.to_vec();
    let from = from.clone();
    let want = want.clone();
    tokio::task::spawn_blocking(move || consume_blocking(&brokers, &topics, &from, &want))
        .await
        .expect("consumer thread")
}

fn consume_blocking(
    brokers: &str,
    topics: &[&str],
    from: &LogEnds,
    want: &HashSet<Uuid>,
) -> HashMap<Uuid, Vec<Received>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer = test_consumer(brokers);
    let mut assignment = TopicPartitionList::new();
    for &topic in topics {
        for p in partitions(&consumer, topic, deadline) {
            let offset = from
                .get(&(topic.to_owned(), p))
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            assignment.add_partition_offset(topic, p, offset).unwrap();
        }
    }
    consumer.assign(&assignment).expect("assign partitions");
    let mut got: HashMap<Uuid, Vec<Received>> = HashMap::new();
    let mut pos = 0;
    // A record delivered twice at one offset is the consumer re-reading (Tansu,
    // fetching from mid-log), not a second event in the log.
    let mut offsets = HashSet::new();
    let mut all_seen: Option<Instant> = None;
    while Instant::now() < deadline {
        if all_seen.is_none() && got.len() == want.len() {
            all_seen = Some(Instant::now());
        }
        // Every event was acknowledged before this read began, so a duplicate
        // is already in the log: read on a little past the last wanted id.
        // (Tansu's high watermarks were seen to undercount multi-record batches, so they
        // cannot tell where the log ends.)
        if all_seen.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg.expect("consume");
        if !offsets.insert((msg.topic().to_owned(), msg.partition(), msg.offset())) {
            eprintln!(
                "re-delivered: {} [{}] @{}",
                msg.topic(),
                msg.partition(),
                msg.offset()
            );
            continue;
        }
        let Some(body) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
        else {
            continue;
        };
        let Some(id) = body["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
            continue;
        };
        if want.contains(&id) {
            pos += 1;
            got.entry(id).or_default().push(Received {
                pos,
                topic: msg.topic().to_owned(),
                key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
                body,
            });
        }
    }
    got
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    topic: String,
    aggregate_id: String,
    payload: Value,
}

async fn outbox_rows(pool: &PgPool, only_pending: bool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, topic, aggregate_id, payload FROM outbox
         WHERE published_at IS NULL OR NOT $1 ORDER BY seq",
    )
    .bind(only_pending)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn pending(pool: &PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

/// Polls until no outbox row of these pools is unpublished.
async fn drained(pools: &[&PgPool], within: Duration) {
    let start = Instant::now();
    loop {
        let mut left = 0;
        for p in pools {
            left += pending(p).await;
        }
        if left == 0 {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{left} outbox rows still unpublished after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the envelope of API.md and that the message is the stored row.
fn assert_envelope(row: &Row, got: &Received) {
    let b = &got.body;
    let keys: HashSet<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    let allowed: HashSet<&str> = [
        "id",
        "type",
        "version",
        "aggregate_id",
        "user_id",
        "occurred_at",
        "data",
    ]
    .into();
    assert!(keys.is_subset(&allowed), "unexpected fields: {b}");
    for k in [
        "id",
        "type",
        "version",
        "aggregate_id",
        "occurred_at",
        "data",
    ] {
        assert!(keys.contains(k), "missing {k}: {b}");
    }
    assert_eq!(b["id"], json!(row.id));
    assert_eq!(b["type"], json!(row.topic));
    assert_eq!(
        got.topic, row.topic,
        "published to the topic named by its type"
    );
    assert_eq!(b["version"], 1);
    assert_eq!(b["aggregate_id"], json!(row.aggregate_id));
    assert_eq!(
        got.key, row.aggregate_id,
        "keyed by aggregate for per-key order"
    );
    assert!(b["data"].is_object(), "{b}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(b["occurred_at"].as_str().unwrap()).is_ok(),
        "{b}"
    );
    assert_eq!(b, &row.payload, "the message is the stored outbox payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_change_publishes_exactly_one_event() {
    let brokers = shared_broker();
    let start = log_ends(&brokers).await;
    let app = spawn_app_with(|c| {
        c.kafka_brokers = brokers.clone();
        c.outbox.poll_interval_ms = 50;
    })
    .await;
    let (user, token) = app.user_token();

    let policy = app.create_policy(10, 2).await;
    let (s, b) = app
        .call(
            Method::PATCH,
            &format!("/coupon-policies/{policy}"),
            Some(&app.admin),
            Some(json!({"total_quantity": 20})),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut coupons = Vec::new();
    for _ in 0..2 {
        let (s, c) = app
            .post("/coupons/issue", &token, json!({"policy_id": policy}))
            .await;
        assert_eq!(s, 201, "{c}");
        coupons.push(c["id"].as_str().unwrap().to_owned());
    }
    let (s, b) = app
        .post(
            &format!("/coupons/{}/use", coupons[0]),
            &token,
            json!({"order_id": "order-7", "order_amount": 20000}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app
        .post(
            &format!("/coupons/{}/cancel", coupons[0]),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // A refused change commits nothing and so publishes nothing.
    let (s, _) = app
        .post(
            &format!("/coupons/{}/cancel", coupons[0]),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(s, 409);

    let earned = app.earn(user, 500).await;
    let (s, used) = app
        .post(
            "/points/use",
            &token,
            json!({"amount": 120, "reference": "order-7"}),
        )
        .await;
    assert_eq!(s, 201, "{used}");
    let (s, cancelled) = app
        .post(
            &format!(
                "/points/transactions/{}/cancel",
                used["id"].as_str().unwrap()
            ),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{cancelled}");
    let (s, _) = app
        .post("/points/use", &token, json!({"amount": 10_000}))
        .await;
    assert_eq!(s, 409, "an insufficient balance commits nothing");

    drained(&[&app.coupon_db, &app.point_db], Duration::from_secs(30)).await;
    let mut rows = outbox_rows(&app.coupon_db, false).await;
    rows.extend(outbox_rows(&app.point_db, false).await);
    assert_eq!(
        sorted_topics(&rows),
        [
            "coupon.issued",
            "coupon.issued",
            "coupon.policy_created",
            "coupon.policy_updated",
            "coupon.use_cancelled",
            "coupon.used",
            "point.cancelled",
            "point.earned",
            "point.used",
        ],
        "one outbox row per committed change"
    );

    let got = consume(&brokers, &start, &ids(&rows)).await;
    assert_each_once(&rows, &got);

    let data = |t: &str| -> Vec<&Value> {
        rows.iter()
            .filter(|r| r.topic == t)
            .map(|r| &got[&r.id][0].body)
            .collect()
    };
    let user_s = json!(user);
    let created = data("coupon.policy_created")[0];
    assert_eq!(created["aggregate_id"], json!(policy.to_string()));
    assert!(
        created.get("user_id").is_none(),
        "a policy has no user: {created}"
    );
    assert_eq!(
        (&created["data"]["id"], &created["data"]["total_quantity"]),
        (&json!(policy), &json!(10))
    );
    let updated = data("coupon.policy_updated")[0];
    assert_eq!(updated["data"]["total_quantity"], 20);
    let issued = data("coupon.issued");
    for e in &issued {
        assert_eq!(e["user_id"], user_s);
        assert_eq!(e["data"]["policy_id"], json!(policy));
        assert_eq!(e["data"]["coupon_id"], e["aggregate_id"]);
        assert!(e["data"]["code"].is_string() && e["data"]["expires_at"].is_string());
    }
    let mut issued_ids: Vec<&str> = issued
        .iter()
        .map(|e| e["data"]["coupon_id"].as_str().unwrap())
        .collect();
    issued_ids.sort_unstable();
    let mut want_ids: Vec<&str> = coupons.iter().map(String::as_str).collect();
    want_ids.sort_unstable();
    assert_eq!(issued_ids, want_ids);
    let use_ev = data("coupon.used")[0];
    assert_eq!(use_ev["aggregate_id"], json!(coupons[0]));
    assert_eq!(
        (
            &use_ev["data"]["order_id"],
            &use_ev["data"]["order_amount"],
            &use_ev["data"]["discount_amount"],
            &use_ev["data"]["user_id"],
        ),
        (&json!("order-7"), &json!(20000), &json!(2000), &user_s)
    );
    let unuse = data("coupon.use_cancelled")[0];
    assert_eq!(
        (&unuse["data"]["coupon_id"], &unuse["data"]["order_id"]),
        (&json!(coupons[0]), &json!("order-7"))
    );

    let earn_ev = data("point.earned")[0];
    assert_eq!(earn_ev["aggregate_id"], user_s);
    assert_eq!(earn_ev["user_id"], user_s);
    assert_eq!(
        (
            &earn_ev["data"]["transaction_id"],
            &earn_ev["data"]["amount"],
            &earn_ev["data"]["delta"],
            &earn_ev["data"]["balance_after"],
        ),
        (&earned["id"], &json!(500), &json!(500), &json!(500))
    );
    let use_pt = data("point.used")[0];
    assert_eq!(
        (
            &use_pt["data"]["transaction_id"],
            &use_pt["data"]["amount"],
            &use_pt["data"]["delta"],
            &use_pt["data"]["balance_after"],
            &use_pt["data"]["reference"],
        ),
        (
            &used["id"],
            &json!(120),
            &json!(-120),
            &json!(380),
            &json!("order-7")
        )
    );
    let cancel_pt = data("point.cancelled")[0];
    assert_eq!(
        (
            &cancel_pt["data"]["transaction_id"],
            &cancel_pt["data"]["cancelled_transaction_id"],
            &cancel_pt["data"]["amount"],
            &cancel_pt["data"]["balance_after"],
        ),
        (&cancelled["id"], &used["id"], &json!(120), &json!(500))
    );
}

/// A private Tansu broker on a port of the test's own, so stopping it
/// disturbs nobody. Memory storage: a restarted broker starts empty.
struct Tansu {
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    async fn start(port: u16) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({}): {e}", tansu_bin()));
        let t = Tansu {
            port,
            child: Some(child),
        };
        t.create_topics().await;
        t
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Tansu does not auto-create topics; it also takes a moment after its
    /// port opens before it answers, so each create is retried briefly.
    async fn create_topics(&self) {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let start = Instant::now();
        for topic in coupon_and_point_topics() {
            loop {
                let out = tokio::process::Command::new(tansu_bin())
                    .args(["topic", "create", topic, "--broker", &broker])
                    .args(["--partitions", "3"])
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .expect("run tansu topic create");
                let text = String::from_utf8_lossy(&out.stderr).to_lowercase()
                    + &String::from_utf8_lossy(&out.stdout).to_lowercase();
                if out.status.success() || text.contains("already exists") {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "cannot create topic {topic}: {text}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestApp {
    async fn earn_n(&self, user: Uuid, n: usize) {
        for _ in 0..n {
            self.earn(user, 10).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_delays_events_but_loses_none() {
    let mut broker = Tansu::start(free_port()).await;
    let brokers = broker.brokers();
    let app = spawn_app_with(|c| {
        c.kafka_brokers = brokers.clone();
        c.outbox.poll_interval_ms = 50;
    })
    .await;
    let (user, _) = app.user_token();
    app.earn_n(user, 3).await;
    app.create_policy(5, 1).await;
    drained(&[&app.coupon_db, &app.point_db], Duration::from_secs(20)).await;
    let all_rows = || async {
        let mut v = outbox_rows(&app.point_db, false).await;
        v.extend(outbox_rows(&app.coupon_db, false).await);
        v
    };
    let before = ids(&all_rows().await);
    assert_eq!(before.len(), 4);

    broker.kill();
    // The request path never touches Kafka, so writes go on.
    app.earn_n(user, 5).await;
    let policy = app.create_policy(5, 1).await;
    let (s, b) = app
        .post(
            "/coupons/issue",
            &app.admin,
            json!({"policy_id": policy, "user_id": user}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let mut outage = outbox_rows(&app.point_db, true).await;
    outage.extend(outbox_rows(&app.coupon_db, true).await);
    assert_eq!(
        outage.len(),
        7,
        "the backlog holds every change made during the outage"
    );
    app.earn_n(user, 2).await;
    assert_eq!(pending(&app.point_db).await, 7, "the backlog grows");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("promo_outbox_backlog{service=\"point\"}")
            && metrics.contains("promo_outbox_oldest_age_seconds{service=\"point\"}"),
        "backlog gauges labelled by service"
    );

    // A new broker on the same address. Its memory storage starts empty: what
    // the old one held is gone, which is the broker's durability, not ours;
    // the outbox's promise is that every row reaches a broker that acknowledges it.
    let broker = Tansu::start(broker.port).await;
    drained(&[&app.coupon_db, &app.point_db], Duration::from_secs(40)).await;
    let during: Vec<Row> = all_rows()
        .await
        .into_iter()
        .filter(|r| !before.contains(&r.id))
        .collect();
    assert_eq!(during.len(), 9);
    let want = ids(&during);
    let got = consume(&broker.brokers(), &LogEnds::new(), &want).await;
    let metrics = app.metrics().await;
    for name in [
        "promo_outbox_publish_failures_total{service=\"point\"}",
        "promo_outbox_published_total{service=\"point\"}",
        "promo_outbox_producer_recreated_total{",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let missing: Vec<&Row> = during.iter().filter(|r| !got.contains_key(&r.id)).collect();
    assert!(missing.is_empty(), "events lost in the outage: {missing:?}");
    for row in &during {
        // At least once: a batch cut by the outage may have been sent twice.
        assert_envelope(row, &got[&row.id][0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_before_kill_9_are_published_after_restart() {
    let start = log_ends(&shared_broker()).await;
    let point_db = fresh_db("events_point").await;
    let gateway_db = fresh_db("events_gateway").await;
    let spawn = |kafka: Option<String>| {
        let gw = free_port();
        let mut c = Command::new(env!("CARGO_BIN_EXE_promod"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PROMO_JWT_SECRET", SECRET)
            .env("PROMO_REDIS_URL", super::helpers::redis_url())
            .env("PROMO_LOG__LEVEL", "warn")
            .env("PROMO_ROLES", "gateway,point")
            .env("PROMO_GATEWAY__HTTP_ADDR", format!("127.0.0.1:{gw}"))
            .env("PROMO_GATEWAY__DATABASE_URL", &gateway_db)
            .env("PROMO_GATEWAY__RATE_LIMIT__ENABLED", "false")
            .env(
                "PROMO_POINT__HTTP_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "PROMO_POINT__GRPC_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("PROMO_POINT__DATABASE_URL", &point_db)
            .env("PROMO_OUTBOX__POLL_INTERVAL_MS", "50")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(k) = kafka {
            c.env("PROMO_KAFKA_BROKERS", k);
        }
        (
            c.spawn().expect("spawn promod"),
            format!("http://127.0.0.1:{gw}"),
        )
    };
    let client = reqwest::Client::new();
    let up = |base: String| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            while !client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "promod did not start"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let keys =
        promo_store::auth::JwtKeys::new(&secrecy::SecretString::from(SECRET.to_owned()), 900);
    let admin = keys.issue(Uuid::new_v4(), Role::Admin).unwrap();
    let user = Uuid::new_v4();

    let (first, base) = spawn(None);
    let mut first = KillOnDrop(Some(first));
    up(base.clone()).await;
    for amount in [100, 200, 300] {
        let r = client
            .post(format!("{base}/api/v1/points/earn"))
            .bearer_auth(&admin)
            .json(&json!({"user_id": user, "amount": amount}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = client
        .post(format!("{base}/api/v1/points/use"))
        .bearer_auth(&admin)
        .json(&json!({"user_id": user, "amount": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // std's kill is SIGKILL: no drain, no final publish, no flush.
    let mut child = first.0.take().unwrap();
    child.kill().expect("kill -9");
    child.wait().unwrap();

    let pool = PgPool::connect(&point_db).await.unwrap();
    let rows = outbox_rows(&pool, true).await;
    assert_eq!(rows.len(), 4, "committed, not published");

    let (second, base) = spawn(Some(shared_broker()));
    let _guard = KillOnDrop(Some(second));
    up(base).await;
    drained(&[&pool], Duration::from_secs(30)).await;
    let got = consume(&shared_broker(), &start, &ids(&rows)).await;
    assert_each_once(&rows, &got);
    let balances: Vec<i64> = rows
        .iter()
        .map(|r| {
            got[&r.id][0].body["data"]["balance_after"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(balances, [100, 300, 600, 550]);
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn relay_config(service: &'static str, brokers: String, batch_size: i64) -> RelayConfig {
    RelayConfig {
        service,
        brokers,
        security: Default::default(),
        batch_size,
        poll_interval: Duration::from_millis(20),
    }
}

pub async fn append_earned(pool: &PgPool, key: Uuid, n: usize) -> Vec<Uuid> {
    let mut tx = pool.begin().await.unwrap();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            Event::new(
                "point.earned",
                key,
                Some(key),
                chrono::Utc::now(),
                json!({"n": i}),
            )
        })
        .collect();
    outbox::append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    events.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_outbox_publish_each_event_once_in_key_order() {
    let start = log_ends(&shared_broker()).await;
    // The app's own relay has no brokers: it only observes, so the two below
    // are the only publishers.
    let app = spawn_app().await;
    let pool = app.point_db.clone();
    let writing = tokio_util::sync::CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            let writing = writing.clone();
            tokio::spawn(async move {
                let mut relay =
                    Relay::new(pool.clone(), relay_config("point", shared_broker(), 25));
                let mut published = 0;
                loop {
                    let done = writing.is_cancelled();
                    published += relay.publish_once().await.expect("publish");
                    if done && pending(&pool).await == 0 {
                        return published;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let keys: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut order: HashMap<String, Vec<Uuid>> = HashMap::new();
    for round in 0..40 {
        let key = keys[round % keys.len()];
        let ids = append_earned(&pool, key, 1 + round % 3).await;
        order.entry(key.to_string()).or_default().extend(ids);
    }
    writing.cancel();
    let mut total = 0;
    for r in relays {
        total += tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .expect("relays finish")
            .unwrap();
    }
    let want: HashSet<Uuid> = order.values().flatten().copied().collect();
    assert_eq!(
        total,
        want.len(),
        "published counts add up to the events written"
    );

    let got = consume(&shared_broker(), &start, &want).await;
    for id in &want {
        let n = got.get(id).map_or(0, Vec::len);
        assert_eq!(n, 1, "event {id} received {n} times");
    }
    // One key, one partition: the order received is the order written.
    for (key, ids) in &order {
        let mut received = ids.clone();
        received.sort_by_key(|id| got[id][0].pos);
        assert_eq!(&received, ids, "order of key {key}");
    }
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_recreates_the_producer_and_loses_nothing() {
    // librdkafka's mock broker can answer a produce request with a sequence
    // desynchronisation, which an idempotent producer treats as fatal: the
    // state a real broker restart that lost its producer state can cause.
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("point.earned", 1, 1).unwrap();
    let app = spawn_app().await;
    let pool = app.point_db.clone();
    let mut relay = Relay::new(
        pool.clone(),
        relay_config("point", mock.bootstrap_servers(), 100),
    );
    let key = Uuid::new_v4();
    let mut ids = append_earned(&pool, key, 3).await;
    assert_eq!(relay.publish_once().await.unwrap(), 3);

    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    ids.extend(append_earned(&pool, key, 3).await);
    let err = relay
        .publish_once()
        .await
        .expect_err("the broker refused the batch");
    assert!(
        relay.producer().is_none(),
        "a fatally failed producer is dropped: {err}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("promo_outbox_producer_recreated_total")
                && l.contains("reason=\"fatal\"")),
        "the producer was replaced for its fatal error, not for a mere failure"
    );
    assert_eq!(pending(&pool).await, 3, "nothing unacknowledged is marked");

    assert_eq!(
        relay.publish_once().await.unwrap(),
        3,
        "a fresh producer goes on"
    );
    assert_eq!(pending(&pool).await, 0);
    let want: HashSet<Uuid> = ids.iter().copied().collect();
    let got = consume_topics(
        &mock.bootstrap_servers(),
        &["point.earned"],
        &LogEnds::new(),
        &want,
    )
    .await;
    let mut received = ids.clone();
    received.retain(|id| got.contains_key(id));
    assert_eq!(received, ids, "every event arrives");
    let mut by_pos = ids.clone();
    by_pos.sort_by_key(|id| got[id][0].pos);
    assert_eq!(by_pos, ids, "in key order");
    drop(app);
}

/// The topics the time-sale role writes.
fn timesale_topics() -> Vec<&'static str> {
    topics_of(&["timesale.", "order."])
}

/// Pin (issue 17): time-sale and order events reach the broker, one message
/// per committed change, as the stored outbox row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_sale_and_order_changes_publish_exactly_one_event() {
    let brokers = shared_broker();
    let start = log_ends_of(&brokers, &timesale_topics()).await;
    let app = super::helpers::spawn_all_roles_with(|c| {
        c.kafka_brokers = brokers.clone();
        c.outbox.poll_interval_ms = 50;
    })
    .await;
    let db = app.timesale_db.clone().expect("timesale role");
    let (user, token) = app.user_token();

    let (product, sale) = app.product_on_sale(5, 2).await;
    let now = chrono::Utc::now();
    let sale_id = sale["id"].as_str().unwrap().to_owned();
    let new_end = now + chrono::Duration::days(2);
    let (s, patched) = app
        .call(
            Method::PATCH,
            &format!("/time-sales/{sale_id}"),
            Some(&app.admin),
            Some(json!({"end_at": new_end})),
            None,
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    let (s, order) = app
        .post(
            &format!("/time-sales/{sale_id}/orders"),
            &token,
            json!({"quantity": 2}),
        )
        .await;
    assert_eq!(s, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .post(&format!("/orders/{order_id}/cancel"), &token, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    // A refused change commits nothing and so publishes nothing.
    let (s, _) = app
        .post(&format!("/orders/{order_id}/cancel"), &token, json!({}))
        .await;
    assert_eq!(s, 409);
    // Holds: one confirmed, one left to expire (by the app's clock).
    let hold = |secs: i64| {
        let (app, token, sale_id) = (&app, &token, &sale_id);
        async move {
            let body = json!({"quantity": 1, "hold": true, "hold_seconds": secs});
            let (s, b) = app
                .post(&format!("/time-sales/{sale_id}/orders"), token, body)
                .await;
            assert_eq!(s, 201, "{b}");
            b["id"].as_str().unwrap().to_owned()
        }
    };
    let confirmed = hold(60).await;
    let (s, b) = app
        .post(&format!("/orders/{confirmed}/confirm"), &token, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let expiring = hold(1).await;
    app.clock.advance(chrono::Duration::seconds(2));
    super::helpers::eventually("the hold expires", || async {
        let (_, o) = app.get(&format!("/orders/{expiring}"), &token).await;
        o["status"] == "EXPIRED"
    })
    .await;

    drained(&[&db], Duration::from_secs(30)).await;
    let rows = outbox_rows(&db, false).await;
    assert_eq!(
        sorted_topics(&rows),
        [
            "order.cancelled",
            "order.confirmed",
            "order.created",
            "order.created",
            "order.created",
            "order.expired",
            "timesale.product_created",
            "timesale.sale_created",
            "timesale.sale_updated",
        ],
        "one outbox row per committed change"
    );
    let got = consume_topics(&brokers, &timesale_topics(), &start, &ids(&rows)).await;
    assert_each_once(&rows, &got);
    let data = |t: &str| -> &Value {
        let row = rows.iter().find(|r| r.topic == t).unwrap();
        &got[&row.id][0].body
    };
    assert_eq!(
        data("timesale.product_created")["data"]["id"],
        product["id"]
    );
    assert_eq!(data("timesale.sale_created")["data"]["id"], json!(sale_id));
    let updated = &data("timesale.sale_updated")["data"];
    assert_eq!(updated["id"], json!(sale_id));
    assert_eq!(updated["end_at"], patched["end_at"], "{updated}");
    let user_s = json!(user);
    for t in ["order.created", "order.cancelled"] {
        let e = data(t);
        assert_eq!(e["aggregate_id"], json!(order_id), "{t}: {e}");
        assert_eq!(e["user_id"], user_s, "{t}: {e}");
        assert_eq!(
            (&e["data"]["time_sale_id"], &e["data"]["quantity"]),
            (&json!(sale_id), &json!(2)),
            "{t}: {e}"
        );
    }
    assert_eq!(data("order.cancelled")["data"]["status"], "CANCELLED");
    assert_eq!(data("order.confirmed")["aggregate_id"], json!(confirmed));
    assert_eq!(data("order.confirmed")["data"]["status"], "CONFIRMED");
    assert_eq!(data("order.expired")["aggregate_id"], json!(expiring));
    assert_eq!(data("order.expired")["data"]["status"], "EXPIRED");
}
