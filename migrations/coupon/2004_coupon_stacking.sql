-- Coupon stacking (API.md "Coupon codes", last paragraph): one user's order
-- may carry several coupons if all are stackable, all name one
-- order_amount, and their discounts sum to at most it. Writes that put a
-- coupon on an order decide under a per-order advisory lock; see
-- ARCHITECTURE.md, "Coupon stacking".

-- The order_amount a coupon was used or reserved with, set while it is on
-- an order (USED, or RESERVED with its discount_amount now kept too) and
-- cleared with discount_amount when it leaves (undone use, release,
-- expiry). A coupon used or reserved before this migration has none;
-- store::on_order reads it as naming the newcomer's amount and taking
-- nothing. Its policy is not stackable (unless one was made stackable
-- between 2003 and this migration), so it refuses any company anyway.
ALTER TABLE coupons
    ADD COLUMN order_amount bigint CHECK (order_amount >= 0),
    ADD CONSTRAINT discount_within_order CHECK (discount_amount <= order_amount);

-- A user's coupons on one order, read by every use and reserve after it
-- takes the order's lock (store::on_order spells the same expression and
-- predicate, so the planner can match it).
CREATE INDEX coupons_on_order ON coupons (user_id, (coalesce(order_id, reserved_order_id)))
    WHERE status IN ('USED', 'RESERVED');
