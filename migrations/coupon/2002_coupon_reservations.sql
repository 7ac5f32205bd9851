-- Checkout holds on coupons (API.md "Holds"): AVAILABLE -> RESERVED for one
-- order until reserved_until, then USED (confirmed) or AVAILABLE (released,
-- expired). Every resolution is a conditional UPDATE ... WHERE status =
-- 'RESERVED', so it happens once (ARCHITECTURE.md, "Holds resolve exactly once").
ALTER TABLE coupons
    ADD COLUMN reserved_order_id text,
    ADD COLUMN reserved_until    timestamptz,
    -- The order whose hold was resolved last (confirmed, released or
    -- expired), until the next reserve, direct use or undone use: its second
    -- or late confirm is ALREADY_RESOLVED, not a fresh use.
    ADD COLUMN released_order_id text;

ALTER TABLE coupons DROP CONSTRAINT coupons_status_check;
ALTER TABLE coupons ADD CONSTRAINT coupons_status_check
    CHECK (status IN ('AVAILABLE', 'USED', 'RESERVED'));

-- RESERVED exactly when an order and a deadline are attached.
ALTER TABLE coupons ADD CONSTRAINT reserved_has_order_and_deadline
    CHECK ((status = 'RESERVED') = (reserved_order_id IS NOT NULL AND reserved_until IS NOT NULL));

-- The sweeper's scan: due reservations only, oldest deadline first.
CREATE INDEX coupons_reserved_until ON coupons (reserved_until) WHERE status = 'RESERVED';
