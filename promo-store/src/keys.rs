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
}
