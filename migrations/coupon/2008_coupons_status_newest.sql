-- no-transaction
-- Coupons of one status, newest first (see 2005). AVAILABLE and EXPIRED are
-- both stored as AVAILABLE and told apart by expires_at, which the index
-- carries so that their count stays an index-only scan.
CREATE INDEX CONCURRENTLY coupons_status_newest ON coupons (status, issued_at DESC, id DESC)
    INCLUDE (expires_at);
