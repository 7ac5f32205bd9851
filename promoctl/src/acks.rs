//! The acknowledgement log of a load run (`--acks FILE`): what every write
//! finally got back from the gateway, after retries. `promoctl check --acks`
//! compares it with the databases, so a fault run can show that nothing a
//! client saw succeed is missing and nothing it never saw succeed is present.
//!
//! JSON lines: the first holds the run's fixtures, every other one a write.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use uuid::Uuid;

/// The first line: what the writes of the run can touch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunFixtures {
    pub policy: Option<Uuid>,
    pub sale: Option<Uuid>,
    pub users: Vec<Uuid>,
    /// Coupons issued while setting up (coupon-use), acknowledged there.
    pub coupons: Vec<Uuid>,
}

/// One write's final answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ack {
    pub route: String,
    pub key: Option<String>,
    /// 0 when no answer came (transport error or timeout on the last try).
    pub status: u16,
    pub code: Option<String>,
    /// The id of what the write created or changed, from a 2xx body.
    pub id: Option<Uuid>,
    pub retries: u32,
}

impl Ack {
    /// The client saw it commit.
    pub fn acknowledged(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The client cannot know whether it committed: no answer, a 5xx, or
    /// its key still in flight (409 `CONFLICT`) after the last retry.
    pub fn unknown(&self) -> bool {
        self.status == 0 || self.status >= 500 || in_flight(self.status, self.code.as_deref())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Fixtures { fixtures: RunFixtures },
    Ack(Ack),
}

/// Whether an answer leaves the outcome unknown, so the same request (same
/// idempotency key) should be sent again.
pub fn retryable(status: Option<u16>, code: Option<&str>) -> bool {
    match status {
        None => true,
        Some(s) => s == 429 || s >= 500 || in_flight(s, code),
    }
}

/// 409 `CONFLICT` to a keyed write: an earlier attempt with the same key is
/// still running, so this one was not decided; ask again later.
fn in_flight(status: u16, code: Option<&str>) -> bool {
    status == 409 && code == Some("CONFLICT")
}

/// The id in a 2xx body: the created row, or the used coupon.
pub fn id_in(body: &serde_json::Value) -> Option<Uuid> {
    body["id"]
        .as_str()
        .or_else(|| body["coupon"]["id"].as_str())
        .and_then(|s| s.parse().ok())
}

pub struct AckLog {
    out: Mutex<BufWriter<std::fs::File>>,
}

impl AckLog {
    pub fn create(path: &Path, fixtures: RunFixtures) -> anyhow::Result<AckLog> {
        let file = std::fs::File::create(path)?;
        let log = AckLog {
            out: Mutex::new(BufWriter::new(file)),
        };
        log.write(&Line::Fixtures { fixtures })?;
        Ok(log)
    }

    pub fn record(&self, ack: Ack) -> anyhow::Result<()> {
        self.write(&Line::Ack(ack))
    }

    fn write(&self, line: &Line) -> anyhow::Result<()> {
        let mut out = self.out.lock().expect("ack log");
        serde_json::to_writer(&mut *out, line)?;
        out.write_all(b"\n")?;
        Ok(())
    }

    pub fn finish(&self) -> anyhow::Result<()> {
        Ok(self.out.lock().expect("ack log").flush()?)
    }
}

/// Reads an acknowledgement log back.
pub fn read(path: &Path) -> anyhow::Result<(RunFixtures, Vec<Ack>)> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut fixtures = None;
    let mut acks = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))? {
            Line::Fixtures { fixtures: f } if fixtures.is_none() => fixtures = Some(f),
            Line::Fixtures { .. } => anyhow::bail!("line {}: a second fixtures line", n + 1),
            Line::Ack(a) => acks.push(a),
        }
    }
    let fixtures = fixtures.ok_or_else(|| anyhow::anyhow!("no fixtures line"))?;
    Ok((fixtures, acks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_unknown_outcomes_are_retried() {
        assert!(retryable(None, None));
        assert!(retryable(Some(503), Some("SERVICE_UNAVAILABLE")));
        assert!(retryable(Some(500), None));
        assert!(retryable(Some(429), None));
        assert!(retryable(Some(409), Some("CONFLICT")));
        assert!(!retryable(Some(201), None));
        assert!(!retryable(Some(409), Some("SOLD_OUT")));
        assert!(!retryable(Some(400), Some("VALIDATION_ERROR")));
    }

    #[test]
    fn ids_come_from_the_row_or_the_used_coupon() {
        let a = Uuid::now_v7();
        assert_eq!(id_in(&json!({"id": a})), Some(a));
        assert_eq!(
            id_in(&json!({"coupon": {"id": a}, "discount_amount": 1})),
            Some(a)
        );
        assert_eq!(id_in(&json!({"error": {"code": "SOLD_OUT"}})), None);
    }

    #[test]
    fn a_log_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("acks-{}", Uuid::now_v7()));
        let f = RunFixtures {
            policy: Some(Uuid::now_v7()),
            users: vec![Uuid::now_v7()],
            ..Default::default()
        };
        let ack = Ack {
            route: "coupons/issue".into(),
            key: Some("k-1".into()),
            status: 201,
            code: None,
            id: Some(Uuid::now_v7()),
            retries: 2,
        };
        let log = AckLog::create(&dir, f.clone()).unwrap();
        log.record(ack.clone()).unwrap();
        log.finish().unwrap();
        let (got_f, got) = read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(got_f, f);
        assert_eq!(got, vec![ack]);
        assert!(got[0].acknowledged() && !got[0].unknown());
    }
}
