-- no-transaction
-- Replaced by coupons_user_newest (2006).
DROP INDEX CONCURRENTLY coupons_user;
