//! Human-friendly times for flags: `now`, `+5m`, `-1h`, `2h` (from now) or
//! RFC 3339; and durations in scenario files.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn parse_time_at(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => (1, s),
    };
    let d = humantime::parse_duration(rest.trim()).map_err(|e| {
        format!("`{s}` is neither RFC 3339 nor a duration like +5m or 2h: {e}").to_lowercase()
    })?;
    let d = chrono::Duration::from_std(d).map_err(|_| format!("`{s}` is too far away"))?;
    let t = if sign > 0 {
        now.checked_add_signed(d)
    } else {
        now.checked_sub_signed(d)
    };
    t.ok_or_else(|| format!("`{s}` is too far away"))
}

/// The clap value parser.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time_at(s, Utc::now())
}

/// A humantime string ("25ms", "30s") in a file, as on the command line.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn relative_times_count_from_now() {
        let n = now();
        assert_eq!(parse_time_at("now", n).unwrap(), n);
        assert_eq!(
            parse_time_at("+5m", n).unwrap(),
            n + chrono::Duration::minutes(5)
        );
        assert_eq!(
            parse_time_at("2h", n).unwrap(),
            n + chrono::Duration::hours(2)
        );
        assert_eq!(
            parse_time_at("-1day", n).unwrap(),
            n - chrono::Duration::days(1)
        );
        assert_eq!(
            parse_time_at("1h 30m", n).unwrap(),
            n + chrono::Duration::minutes(90)
        );
    }

    #[test]
    fn rfc3339_is_taken_as_is_and_converted_to_utc() {
        let t = parse_time_at("2026-03-01T10:00:00+02:00", now()).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = parse_time_at("tomorrow-ish", now()).unwrap_err();
        assert!(e.contains("neither rfc 3339 nor a duration"), "{e}");
        assert!(parse_time_at("", now()).is_err());
        assert!(parse_time_at("+", now()).is_err());
    }
}
