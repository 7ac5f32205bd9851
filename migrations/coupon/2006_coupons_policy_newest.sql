-- no-transaction
-- One policy's coupons, newest first (see 2005).
CREATE INDEX CONCURRENTLY coupons_policy_newest ON coupons (policy_id, id DESC);
