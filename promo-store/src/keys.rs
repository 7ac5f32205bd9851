//! Redis key names, shared by promod and promoctl so that they never drift.
//! Keys touched by one script share a hash tag, so the scripts also run on
//! Redis Cluster.

use uuid::Uuid;

pub fn coupon_remaining(policy: Uuid) -> String {
    format!("{{coupon:policy:{policy}}}:remaining")
}

pub fn coupon_users(policy: Uuid) -> String {
    format!("{{coupon:policy:{policy}}}:users")
}

pub fn coupon_users_staging(policy: Uuid) -> String {
    format!("{{coupon:policy:{policy}}}:users:staging")
}

/// The journal of a policy's reservations not yet settled (admitted in Redis,
/// row not yet known to be stored): a sorted set by admission time.
pub fn coupon_journal(policy: Uuid) -> String {
    format!("{{coupon:policy:{policy}}}:journal")
}

pub fn point_balance(user: Uuid) -> String {
    format!("point:balance:{user}")
}

/// A user's points as cached at [`point_balance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedBalance {
    pub balance: i64,
    /// What pending holds reserve of it.
    pub held: i64,
    /// The balance row's version: its writers keep only the newest.
    pub version: i64,
}

impl CachedBalance {
    /// `"{balance}:{held}:{version}"`: the version last, where the cache's
    /// write script reads it.
    pub fn entry(&self) -> String {
        format!("{}:{}:{}", self.balance, self.held, self.version)
    }

    /// Reads [`CachedBalance::entry`]. A two-field `"{balance}:{version}"`
    /// was written before holds existed, when nothing could be held (any
    /// hold since moved the version on); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let n: Vec<i64> = s
            .split(':')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let (balance, held, version) = match n[..] {
            [b, v] => (b, 0, v),
            [b, h, v] => (b, h, v),
            _ => return None,
        };
        Some(CachedBalance {
            balance,
            held,
            version,
        })
    }
}

/// The stock of a sale, under the original's name, inside a hash tag.
pub fn timesale_inventory(sale: Uuid) -> String {
    format!("{{timesale:inventory:{sale}}}")
}

pub fn timesale_users(sale: Uuid) -> String {
    format!("{{timesale:inventory:{sale}}}:users")
}

pub fn timesale_users_staging(sale: Uuid) -> String {
    format!("{{timesale:inventory:{sale}}}:users:staging")
}

pub fn timesale_journal(sale: Uuid) -> String {
    format!("{{timesale:inventory:{sale}}}:journal")
}

/// Held while an admitted keyed reservation runs (`stock.rs`, `Claim`), in
/// its counter set's hash tag; keys are per user.
pub fn coupon_claim(policy: Uuid, actor: Uuid, key: &str) -> String {
    format!("{{coupon:policy:{policy}}}:claim:{actor}:{key}")
}

pub fn timesale_claim(sale: Uuid, actor: Uuid, key: &str) -> String {
    format!("{{timesale:inventory:{sale}}}:claim:{actor}:{key}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_of_one_script_share_a_hash_tag() {
        let id = uuid::Uuid::nil();
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(
            tag(&super::coupon_remaining(id)),
            tag(&super::coupon_users(id))
        );
        assert_eq!(
            tag(&super::coupon_remaining(id)),
            tag(&super::coupon_journal(id))
        );
        assert_eq!(
            tag(&super::coupon_remaining(id)),
            tag(&super::coupon_claim(id, id, "{other}"))
        );
        assert_eq!(
            tag(&super::timesale_inventory(id)),
            tag(&super::timesale_claim(id, id, "{other}"))
        );
        assert_eq!(
            tag(&super::timesale_inventory(id)),
            tag(&super::timesale_users(id))
        );
        assert_eq!(
            tag(&super::timesale_inventory(id)),
            tag(&super::timesale_journal(id))
        );
    }

    #[test]
    fn cached_balances_parse_with_or_without_held() {
        use super::CachedBalance;
        let c = CachedBalance {
            balance: 120,
            held: 20,
            version: 7,
        };
        assert_eq!(CachedBalance::parse(&c.entry()), Some(c));
        assert_eq!(
            CachedBalance::parse("120:7"),
            Some(CachedBalance { held: 0, ..c })
        );
        for bad in ["120", "x:1", "1:2:3:4", ""] {
            assert_eq!(CachedBalance::parse(bad), None, "{bad}");
        }
    }
}
