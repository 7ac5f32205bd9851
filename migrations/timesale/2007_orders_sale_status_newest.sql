-- no-transaction
-- One sale's orders of one status, newest first (see 2003): a rare status
-- of a sale with a million orders is found without walking the others.
CREATE INDEX CONCURRENTLY time_sale_orders_sale_status_newest
    ON time_sale_orders (time_sale_id, status, created_at DESC, id DESC);
