-- no-transaction
-- One sale's orders, newest first (see 2003).
CREATE INDEX CONCURRENTLY time_sale_orders_sale_newest ON time_sale_orders (time_sale_id, id DESC);
