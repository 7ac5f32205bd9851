-- no-transaction
-- One policy's coupons of one status, newest first (see 2005 and 2008): a
-- rare status of a policy with a million coupons is found without walking
-- the others.
CREATE INDEX CONCURRENTLY coupons_policy_status_newest
    ON coupons (policy_id, status, issued_at DESC, id DESC) INCLUDE (expires_at);
