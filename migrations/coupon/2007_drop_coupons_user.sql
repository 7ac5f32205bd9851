-- no-transaction
-- Replaced by coupons_user_newest (2005).
DROP INDEX CONCURRENTLY coupons_user;
