//! `promoctl events tail`: events from Kafka (a throwaway consumer group that
//! never commits, so no other group is disturbed) or straight from the outbox
//! tables.

use crate::cli::{Source, TailArgs};
use crate::config::{config_dir, pick, FileConfig};
use crate::error::{CtlError, CtlResult};
use crate::output::{color_wanted, Format};
use owo_colors::OwoColorize;
use promo_store::kafka::KafkaSecurity;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;
use uuid::Uuid;

/// Every topic the roles publish to (`promo-store/topics.txt`).
pub const TOPICS: &[&str] = promo_store::topics::ALL;

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// How an event is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One readable line.
    Text,
    /// The envelope as it was published, one per line (JSON Lines).
    Json,
    /// Each envelope a YAML document (`---` between them).
    Yaml,
}

impl From<Format> for Shape {
    fn from(f: Format) -> Shape {
        match f {
            Format::Json => Shape::Json,
            Format::Yaml => Shape::Yaml,
            Format::Table | Format::Wide | Format::Text => Shape::Text,
        }
    }
}

/// Which events to show and how.
#[derive(Debug, Clone)]
pub struct Filter {
    pub types: HashSet<String>,
    pub aggregate: Option<String>,
    pub user: Option<Uuid>,
    pub shape: Shape,
    /// Colours only on a terminal, and never with `NO_COLOR`.
    pub color: bool,
}

impl Filter {
    /// The line to print for one event, or `None` when it is filtered out.
    pub fn line(&self, topic: &str, payload: &str) -> Option<String> {
        let v: Option<Value> = serde_json::from_str(payload).ok();
        let field = |k: &str| {
            v.as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let kind = field("type").unwrap_or_else(|| topic.to_owned());
        if !self.types.is_empty() && !self.types.contains(&kind) {
            return None;
        }
        if let Some(u) = self.user {
            if field("user_id").and_then(|s| Uuid::parse_str(&s).ok()) != Some(u) {
                return None;
            }
        }
        if self.aggregate.is_some() && field("aggregate_id") != self.aggregate {
            return None;
        }
        match (self.shape, &v) {
            (Shape::Json, Some(v)) => return Some(v.to_string()),
            (Shape::Json, None) => return Some(payload.trim().to_owned()),
            (Shape::Yaml, Some(v)) => {
                let doc = serde_yaml_ng::to_string(v).unwrap_or_default();
                return Some(format!("---\n{}", doc.trim_end()));
            }
            _ => {}
        }
        let dash = || "-".to_owned();
        let data = v
            .as_ref()
            .and_then(|v| v.get("data"))
            .map(Value::to_string)
            .unwrap_or_else(|| payload.trim().to_owned());
        let color = self.color;
        let dim = |s: &str| {
            if color {
                s.dimmed().to_string()
            } else {
                s.to_owned()
            }
        };
        let head = format!("{kind:<22}");
        let head = if !color {
            head
        } else {
            match kind.split('.').next().unwrap_or("") {
                "coupon" => head.green().to_string(),
                "point" => head.yellow().to_string(),
                "order" | "timesale" => head.cyan().to_string(),
                _ => head.magenta().to_string(),
            }
        };
        Some(format!(
            "{} {head} {}={} {}={} {}={} {data}",
            dim(&field("occurred_at").unwrap_or_else(dash)),
            dim("aggregate"),
            field("aggregate_id").unwrap_or_else(dash),
            dim("user"),
            field("user_id").unwrap_or_else(dash),
            dim("id"),
            field("id").unwrap_or_else(dash),
        ))
    }
}

/// Where the tail stops: at the end of the topics (without follow), after
/// `count` printed events, or when stdout closes.
struct Printer {
    filter: Filter,
    left: Option<u64>,
}

impl Printer {
    /// Prints the event if it passes the filter; `false` once the tail is
    /// done (the count reached, or stdout closed).
    fn print(&mut self, topic: &str, payload: &str) -> CtlResult<bool> {
        if self.left == Some(0) {
            return Ok(false);
        }
        let Some(line) = self.filter.line(topic, payload) else {
            return Ok(true);
        };
        if !emit(&line)? {
            return Ok(false);
        }
        self.left = self.left.map(|n| n - 1);
        Ok(self.left != Some(0))
    }
}

/// `format` is the global `-o`: text unless json or yaml is asked for.
pub async fn tail(args: TailArgs, format: Option<Format>) -> CtlResult<()> {
    let topics: Vec<String> = if args.topics.is_empty() {
        TOPICS.iter().map(|t| t.to_string()).collect()
    } else {
        args.topics.clone()
    };
    let format = match (format, args.json) {
        (Some(f), _) => f,
        (None, true) => Format::Json,
        (None, false) => Format::Text,
    };
    let filter = Filter {
        types: args.types.iter().cloned().collect(),
        aggregate: args.aggregate.clone(),
        user: args.user,
        shape: format.into(),
        color: color_wanted(),
    };
    let mut printer = Printer {
        filter,
        left: args.count,
    };
    if printer.left == Some(0) {
        return Ok(());
    }
    let run = async {
        match args.source {
            Source::Kafka => kafka(&args, &topics, &mut printer).await,
            Source::Outbox => outbox(&args, &topics, &mut printer).await,
        }
    };
    tokio::select! {
        res = run => res,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Prints one line; `false` when stdout is closed (`| head`), which ends the
/// tail quietly.
fn emit(line: &str) -> CtlResult<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CtlError::other("cannot write", e)),
        Ok(()) => Ok(true),
    }
}

async fn kafka(args: &TailArgs, topics: &[String], printer: &mut Printer) -> CtlResult<()> {
    let follow = !args.no_follow;
    let file = FileConfig::load(&config_dir()?)?;
    let brokers = pick(
        args.brokers.as_deref(),
        file.kafka_brokers.as_deref(),
        DEFAULT_BROKERS,
    );
    let consumer = consumer(&brokers, &args.kafka.security(&file))?;
    let mut pending = assign(&consumer, &brokers, topics, args.from_beginning)?;
    if !follow && pending.is_empty() {
        return Ok(());
    }
    while let Some(msg) = next_message(&consumer, follow, pending.is_empty()).await? {
        let payload = msg
            .payload()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if !printer.print(msg.topic(), &payload)? {
            return Ok(());
        }
        if !follow {
            let key = (msg.topic().to_owned(), msg.partition());
            if pending
                .get(&key)
                .is_some_and(|end| msg.offset() + 1 >= *end)
            {
                pending.remove(&key);
            }
        }
    }
    Ok(())
}

/// A consumer of a throwaway group that never commits.
fn consumer(brokers: &str, security: &KafkaSecurity) -> CtlResult<StreamConsumer> {
    security
        .client(brokers)
        .set("group.id", format!("promoctl-tail-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3")
        .create()
        .map_err(|e| CtlError::usage(format!("cannot create a kafka consumer: {e}")))
}

/// Where each partition ended when we started: with --no-follow the tail
/// stops there.
type Ends = HashMap<(String, i32), i64>;

/// Assigns every partition of the topics that exist, at their start or end,
/// and returns the ends of those that hold events to read.
fn assign(
    consumer: &StreamConsumer,
    brokers: &str,
    topics: &[String],
    from_beginning: bool,
) -> CtlResult<Ends> {
    let timeout = Duration::from_secs(5);
    let unreachable = |e| CtlError::unreachable(format!("kafka at {brokers}"), e);
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(unreachable)?;
    let wanted: HashSet<&str> = topics.iter().map(String::as_str).collect();
    let offset = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    let mut pending = Ends::new();
    let mut found = HashSet::new();
    for t in md.topics().iter().filter(|t| wanted.contains(t.name())) {
        found.insert(t.name().to_owned());
        for p in t.partitions() {
            let (lo, hi) = consumer
                .fetch_watermarks(t.name(), p.id(), timeout)
                .map_err(unreachable)?;
            tpl.add_partition_offset(t.name(), p.id(), offset)
                .map_err(|e| CtlError::other("kafka", e))?;
            if from_beginning && hi > lo {
                pending.insert((t.name().to_owned(), p.id()), hi);
            }
        }
    }
    for t in topics.iter().filter(|t| !found.contains(*t)) {
        eprintln!("promoctl: topic {t} does not exist, skipped");
    }
    if tpl.count() == 0 {
        return Err(CtlError::usage("none of the topics exist"));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| CtlError::other("kafka", e))?;
    Ok(pending)
}

/// The next event, or `None` when a tail with --no-follow is done.
async fn next_message(
    consumer: &StreamConsumer,
    follow: bool,
    at_end: bool,
) -> CtlResult<Option<BorrowedMessage<'_>>> {
    loop {
        let msg = if follow {
            consumer.recv().await
        } else {
            // Past the watermarks taken at the start, keep reading until the
            // topics go quiet for a second: some brokers (Tansu) report a
            // high watermark short of what a fetch then returns.
            let idle = if at_end { 1 } else { 10 };
            match tokio::time::timeout(Duration::from_secs(idle), consumer.recv()).await {
                Ok(m) => m,
                Err(_) if at_end => return Ok(None),
                Err(_) => {
                    eprintln!("promoctl: no event for 10s before the end of the topics, stopping");
                    return Ok(None);
                }
            }
        };
        match msg {
            Ok(m) => return Ok(Some(m)),
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => return Err(CtlError::unreachable("kafka", e)),
        }
    }
}

/// One row of an outbox table.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    seq: i64,
    topic: String,
    payload: Value,
    created_at: chrono::DateTime<chrono::Utc>,
}

async fn outbox(args: &TailArgs, topics: &[String], printer: &mut Printer) -> CtlResult<()> {
    let urls = crate::check::store_urls(&args.stores)?;
    let mut dbs: Vec<(PgPool, i64)> = Vec::new();
    for url in [&urls.coupon, &urls.point, &urls.timesale] {
        let pool = crate::check::connect_pg(url).await?;
        let start: i64 = if args.from_beginning {
            0
        } else {
            sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM outbox")
                .fetch_one(&pool)
                .await
                .map_err(|e| CtlError::postgres("outbox", e))?
        };
        dbs.push((pool, start));
    }
    loop {
        match drain_outbox(&mut dbs, topics, printer).await? {
            Drain::More => {}
            Drain::Closed => return Ok(()),
            Drain::Done if args.no_follow => return Ok(()),
            Drain::Done => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

enum Drain {
    More,
    Done,
    Closed,
}

/// Prints the next rows of every database, merged by creation time.
async fn drain_outbox(
    dbs: &mut [(PgPool, i64)],
    topics: &[String],
    printer: &mut Printer,
) -> CtlResult<Drain> {
    const BATCH: i64 = 1000;
    let mut rows = Vec::new();
    let mut drained = true;
    for (pool, after) in dbs.iter_mut() {
        let batch: Vec<Row> = sqlx::query_as(
            "SELECT seq, topic, payload, created_at FROM outbox
             WHERE seq > $1 AND topic = ANY($2) ORDER BY seq LIMIT $3",
        )
        .bind(*after)
        .bind(topics)
        .bind(BATCH)
        .fetch_all(&*pool)
        .await
        .map_err(|e| CtlError::postgres("outbox", e))?;
        if batch.len() as i64 == BATCH {
            drained = false;
        }
        if let Some(last) = batch.last() {
            *after = last.seq;
        }
        rows.extend(batch);
    }
    rows.sort_by_key(|r| r.created_at);
    for r in rows {
        if !printer.print(&r.topic, &r.payload.to_string())? {
            return Ok(Drain::Closed);
        }
    }
    Ok(if drained { Drain::Done } else { Drain::More })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, user: Uuid) -> String {
        serde_json::json!({
            "id": Uuid::nil(), "type": kind, "version": 1, "aggregate_id": "agg-1",
            "user_id": user, "occurred_at": "2026-01-01T00:00:00Z", "data": {"n": 1}
        })
        .to_string()
    }

    #[test]
    fn filters_by_type_and_user() {
        let u = Uuid::new_v4();
        let mut f = Filter {
            types: ["coupon.issued".to_owned()].into(),
            aggregate: None,
            user: Some(u),
            shape: Shape::Json,
            color: false,
        };
        let e = event("coupon.issued", u);
        let line = f.line("coupon.issued", &e).expect("passes");
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            serde_json::from_str::<Value>(&e).unwrap()
        );
        assert!(!line.contains('\n'), "one envelope per line: {line}");
        assert!(f.line("coupon.used", &event("coupon.used", u)).is_none());
        assert!(f
            .line("coupon.issued", &event("coupon.issued", Uuid::new_v4()))
            .is_none());
        f.aggregate = Some("agg-2".into());
        assert!(f.line("coupon.issued", &e).is_none());
        f.aggregate = Some("agg-1".into());
        assert!(f.line("coupon.issued", &e).is_some());
        f.shape = Shape::Yaml;
        let doc = f.line("coupon.issued", &e).unwrap();
        assert!(
            doc.starts_with("---\n") && doc.contains("type: coupon.issued"),
            "{doc}"
        );
    }

    #[test]
    fn human_lines_name_the_event() {
        let f = Filter {
            types: HashSet::new(),
            aggregate: None,
            user: None,
            shape: Shape::Text,
            color: false,
        };
        let line = f
            .line("point.earned", &event("point.earned", Uuid::nil()))
            .unwrap();
        assert!(
            line.contains("point.earned") && line.contains("agg-1"),
            "{line}"
        );
        assert!(line.contains("{\"n\":1}"), "{line}");
        assert!(
            !line.contains('\u{1b}'),
            "no colours off a terminal: {line}"
        );
        let raw = f.line("x", "not json").unwrap();
        assert!(raw.contains("not json"));
    }

    #[test]
    fn default_topics_match_the_api() {
        for t in [
            "coupon.issued",
            "coupon.used",
            "coupon.use_cancelled",
            "point.earned",
            "point.used",
            "point.cancelled",
            "order.created",
            "order.cancelled",
            "timesale.product_created",
        ] {
            assert!(TOPICS.contains(&t), "{t}");
        }
    }
}
