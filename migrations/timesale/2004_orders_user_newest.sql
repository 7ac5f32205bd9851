-- no-transaction
-- One user's orders, newest first (see 2003); replaces time_sale_orders_user,
-- which lacked the id that breaks ties in the order (dropped in 2008).
CREATE INDEX CONCURRENTLY time_sale_orders_user_newest
    ON time_sale_orders (user_id, created_at DESC, id DESC);
