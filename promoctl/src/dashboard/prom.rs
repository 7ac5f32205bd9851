//! The Prometheus text exposition format, as far as the dashboard needs it:
//! samples with labels, deltas between two scrapes, and quantiles from
//! histogram buckets. Hand-written because the format is small and the
//! crates.io parsers are either unmaintained or pull in far more than this.

use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ParseError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
}

/// A series: the metric name and its labels, sorted so that equal series
/// compare equal whatever order the exporter wrote them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Series {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One scrape: every series with its value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub values: BTreeMap<Series, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Scrape, ParseError> {
        let mut values = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = parse_line(line).map_err(|reason| ParseError::Line {
                line: i + 1,
                reason,
            })?;
            values.insert(series, value);
        }
        Ok(Scrape { values })
    }

    /// The samples of one metric.
    pub fn metric<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Series, f64)> + 'a {
        self.values
            .iter()
            .filter(move |(s, _)| s.name == name)
            .map(|(s, v)| (s, *v))
    }

    /// How much every series of `self` grew since `prev`. A series that went
    /// down was reset (a restart), so its whole value is the growth; a series
    /// new since `prev` grew from zero.
    pub fn delta(&self, prev: &Scrape) -> Scrape {
        let values = self
            .values
            .iter()
            .map(|(s, &v)| {
                let d = match prev.values.get(s) {
                    Some(&p) if p <= v => v - p,
                    _ => v,
                };
                (s.clone(), d)
            })
            .collect();
        Scrape { values }
    }
}

fn parse_line(line: &str) -> Result<(Series, f64), &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(r)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value; the dashboard times scrapes itself.
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value).ok_or("bad value")?;
    labels.sort();
    Ok((
        Series {
            name: name.to_owned(),
            labels,
        },
        value,
    ))
}

type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without value")?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The `q` quantile of a histogram given as (upper bound, cumulative count)
/// pairs, interpolated inside the bucket as Prometheus' `histogram_quantile`
/// does. None when the histogram is empty.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &b {
        if count >= rank {
            if le.is_infinite() {
                // Above the largest finite bound all we know is that bound.
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE promo_http_requests_total counter
promo_http_requests_total{role="gateway",method="GET",route="/a",status="200"} 10
promo_http_requests_total{route="/a",status="500",role="gateway",method="GET"} 2

# TYPE promo_circuit_state gauge
promo_circuit_state{service="coupon"} 1
promo_outbox_published_total 7 1700000000000
weird{msg="a \"quoted\" \\ value, with {braces}"} +Inf
"#;

    #[test]
    fn parses_samples_labels_escapes_and_timestamps() {
        let s = Scrape::parse(TEXT).unwrap();
        assert_eq!(s.values.len(), 5);
        let reqs: Vec<_> = s.metric("promo_http_requests_total").collect();
        assert_eq!(reqs.len(), 2);
        let err = reqs
            .iter()
            .find(|(s, _)| s.label("status") == Some("500"))
            .unwrap();
        assert_eq!(err.1, 2.0);
        assert_eq!(err.0.label("role"), Some("gateway"));
        assert_eq!(
            s.metric("promo_outbox_published_total").next().unwrap().1,
            7.0
        );
        let (w, v) = s.metric("weird").next().unwrap();
        assert_eq!(w.label("msg"), Some(r#"a "quoted" \ value, with {braces}"#));
        assert!(v.is_infinite());
    }

    #[test]
    fn rejects_a_broken_line_with_its_number() {
        let err = Scrape::parse("ok 1\nbroken{a=\"x} 1\n").unwrap_err();
        assert_eq!(
            err,
            ParseError::Line {
                line: 2,
                reason: "unterminated label value"
            }
        );
        assert!(Scrape::parse("novalue\n").is_err());
        assert!(Scrape::parse("x{a=\"1\"} abc\n").is_err());
    }

    #[test]
    fn rate_from_two_scrapes_handles_new_series_and_resets() {
        let a = Scrape::parse("c{k=\"a\"} 10\nc{k=\"b\"} 50\n").unwrap();
        let b = Scrape::parse("c{k=\"a\"} 40\nc{k=\"b\"} 5\nc{k=\"c\"} 3\n").unwrap();
        let d = b.delta(&a);
        let by = |k: &str| {
            d.metric("c")
                .find(|(s, _)| s.label("k") == Some(k))
                .unwrap()
                .1
        };
        assert_eq!(by("a"), 30.0);
        // b restarted: everything it has now is new.
        assert_eq!(by("b"), 5.0);
        assert_eq!(by("c"), 3.0);
        assert!(Scrape::default().delta(&a).values.is_empty());
        let per_sec: f64 = d.metric("c").map(|(_, v)| v).sum::<f64>() / 2.0;
        assert_eq!(per_sec, 19.0);
    }

    #[test]
    fn p99_and_p50_from_bucket_deltas() {
        let before = "h_bucket{le=\"0.01\"} 100\nh_bucket{le=\"0.1\"} 100\nh_bucket{le=\"1\"} 100\nh_bucket{le=\"+Inf\"} 100\n";
        // 100 new requests: 90 under 10ms, 9 in 10-100ms, 1 in 100ms-1s.
        let after = "h_bucket{le=\"0.01\"} 190\nh_bucket{le=\"0.1\"} 199\nh_bucket{le=\"1\"} 200\nh_bucket{le=\"+Inf\"} 200\n";
        let d = Scrape::parse(after)
            .unwrap()
            .delta(&Scrape::parse(before).unwrap());
        let buckets: Vec<(f64, f64)> = d
            .metric("h_bucket")
            .map(|(s, v)| (parse_value(s.label("le").unwrap()).unwrap(), v))
            .collect();
        let p50 = quantile(0.5, &buckets).unwrap();
        let p99 = quantile(0.99, &buckets).unwrap();
        assert!((p50 - 0.01 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        assert!((p99 - 0.1).abs() < 1e-9, "{p99}");
        assert!(quantile(0.999, &buckets).unwrap() > 0.1);
    }

    #[test]
    fn quantile_of_nothing_is_none_and_above_the_last_bound_is_that_bound() {
        assert_eq!(quantile(0.99, &[]), None);
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 100.0)]),
            Some(0.1)
        );
    }
}
