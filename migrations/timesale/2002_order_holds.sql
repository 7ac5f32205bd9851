-- Checkout holds: an order may be PENDING (its units taken until it is
-- confirmed, cancelled or expires) and end EXPIRED. `sold_quantity` and the
-- users' totals count PENDING and CONFIRMED units alike, so the CHECKs that
-- refuse overselling hold with holds too.
ALTER TABLE time_sale_orders
    DROP CONSTRAINT time_sale_orders_status_check,
    ADD CONSTRAINT time_sale_orders_status_check
        CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    ADD COLUMN expires_at  timestamptz,
    ADD COLUMN resolved_at timestamptz,
    -- A hold always has its deadline; only a hold can expire.
    ADD CONSTRAINT hold_has_deadline CHECK (status <> 'PENDING' OR expires_at IS NOT NULL),
    ADD CONSTRAINT only_holds_expire CHECK (status <> 'EXPIRED' OR expires_at IS NOT NULL),
    -- A hold that left PENDING says when.
    ADD CONSTRAINT resolved_when CHECK (
        expires_at IS NULL OR (status = 'PENDING') = (resolved_at IS NULL));

-- The sweeper's scan: due holds only.
CREATE INDEX time_sale_orders_due ON time_sale_orders (expires_at) WHERE status = 'PENDING';

-- Counter rebuilds read the units still taken.
DROP INDEX time_sale_orders_sale;
CREATE INDEX time_sale_orders_sale ON time_sale_orders (time_sale_id)
    WHERE status IN ('PENDING', 'CONFIRMED');
