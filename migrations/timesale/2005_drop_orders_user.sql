-- no-transaction
-- Replaced by time_sale_orders_user_newest (2003).
DROP INDEX CONCURRENTLY time_sale_orders_user;
