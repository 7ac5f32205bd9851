-- no-transaction
-- One user's coupons, newest first (see 2005); replaces coupons_user, which
-- lacked the id that breaks ties in the order (dropped in 2010).
CREATE INDEX CONCURRENTLY coupons_user_newest ON coupons (user_id, issued_at DESC, id DESC);
