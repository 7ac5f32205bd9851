-- no-transaction
-- Orders of one status, newest first (see 2003).
CREATE INDEX CONCURRENTLY time_sale_orders_status_newest
    ON time_sale_orders (status, created_at DESC, id DESC);
