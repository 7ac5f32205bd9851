//! Event topic names, listed once in `topics.txt` (one per line). The same
//! file is read by `scripts/services.sh`, which creates the topics on Tansu;
//! `docs/events.md` documents each. Tests fail if either drifts.

/// The file as included, one topic per line.
pub const FILE: &str = include_str!("../topics.txt");

/// Every topic the roles publish to, in the order of `topics.txt`.
pub const ALL: &[&str] = &split();

// Each name is looked up in the file at compile time: a name missing from
// `topics.txt` fails the build, so the file stays the one list.
pub const COUPON_ISSUED: &str = find("coupon.issued");
pub const COUPON_USED: &str = find("coupon.used");
pub const COUPON_USE_CANCELLED: &str = find("coupon.use_cancelled");
pub const COUPON_RESERVED: &str = find("coupon.reserved");
pub const COUPON_RESERVATION_RELEASED: &str = find("coupon.reservation_released");
pub const COUPON_POLICY_CREATED: &str = find("coupon.policy_created");
pub const COUPON_POLICY_UPDATED: &str = find("coupon.policy_updated");
pub const COUPON_CODES_GENERATED: &str = find("coupon.codes_generated");
pub const POINT_EARNED: &str = find("point.earned");
pub const POINT_USED: &str = find("point.used");
pub const POINT_CANCELLED: &str = find("point.cancelled");
pub const POINT_HELD: &str = find("point.held");
pub const POINT_HOLD_CAPTURED: &str = find("point.hold_captured");
pub const POINT_HOLD_VOIDED: &str = find("point.hold_voided");
pub const POINT_HOLD_EXPIRED: &str = find("point.hold_expired");
pub const POINT_EXPIRED: &str = find("point.expired");
pub const ORDER_CREATED: &str = find("order.created");
pub const ORDER_CANCELLED: &str = find("order.cancelled");
pub const ORDER_CONFIRMED: &str = find("order.confirmed");
pub const ORDER_EXPIRED: &str = find("order.expired");
pub const TIMESALE_PRODUCT_CREATED: &str = find("timesale.product_created");
pub const TIMESALE_SALE_CREATED: &str = find("timesale.sale_created");
pub const TIMESALE_SALE_UPDATED: &str = find("timesale.sale_updated");

const COUNT: usize = {
    let mut n = 0;
    let mut rest = FILE;
    while let Some((line, tail)) = next_line(rest) {
        if !line.is_empty() {
            n += 1;
        }
        rest = tail;
    }
    n
};

/// The first line of `s` (without its newline) and what follows it.
const fn next_line(s: &str) -> Option<(&str, &str)> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    let (line, tail) = s.split_at(i);
    let tail = if tail.is_empty() {
        tail
    } else {
        tail.split_at(1).1
    };
    Some((line.trim_ascii(), tail))
}

const fn split() -> [&'static str; COUNT] {
    let mut out = [""; COUNT];
    let mut n = 0;
    let mut rest = FILE;
    while let Some((line, tail)) = next_line(rest) {
        if !line.is_empty() {
            out[n] = line;
            n += 1;
        }
        rest = tail;
    }
    out
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn find(name: &str) -> &'static str {
    let mut i = 0;
    while i < ALL.len() {
        if same(ALL[i], name) {
            return ALL[i];
        }
        i += 1;
    }
    panic!("topic missing from promo-store/topics.txt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_one_topic_and_none_repeats() {
        let lines: Vec<&str> = FILE.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(ALL, lines.as_slice());
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "a topic is listed twice");
        for t in ALL {
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{t:?} is not a topic name"
            );
        }
    }

    #[test]
    fn named_topics_are_in_the_list() {
        assert!(ALL.contains(&TIMESALE_PRODUCT_CREATED));
        assert_eq!(COUPON_ISSUED, "coupon.issued");
    }
}
