CREATE TABLE coupon_policies (
    id                  uuid PRIMARY KEY,
    name                text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description         text,
    discount_type       text        NOT NULL CHECK (discount_type IN ('FIXED', 'PERCENTAGE')),
    discount_value      bigint      NOT NULL CHECK (discount_value > 0),
    min_order_amount    bigint      NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
    max_discount_amount bigint      CHECK (max_discount_amount >= 0),
    total_quantity      bigint      NOT NULL CHECK (total_quantity > 0),
    issued_quantity     bigint      NOT NULL DEFAULT 0,
    per_user_limit      integer     NOT NULL DEFAULT 1 CHECK (per_user_limit > 0),
    valid_from          timestamptz NOT NULL,
    valid_until         timestamptz NOT NULL,
    active              boolean     NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from < valid_until),
    -- The last line of defence against overselling.
    CONSTRAINT issued_within_total CHECK (issued_quantity >= 0 AND issued_quantity <= total_quantity),
    CHECK (discount_type <> 'PERCENTAGE' OR discount_value <= 100)
);
CREATE INDEX coupon_policies_created ON coupon_policies (created_at DESC);

CREATE TABLE coupons (
    id              uuid PRIMARY KEY,
    code            text        NOT NULL UNIQUE,
    policy_id       uuid        NOT NULL REFERENCES coupon_policies (id),
    user_id         uuid        NOT NULL,
    -- The n-th coupon of this user for this policy, 1..per_user_limit: with the
    -- unique key below, no user can ever hold more than the limit.
    user_seq        integer     NOT NULL,
    per_user_limit  integer     NOT NULL,
    status          text        NOT NULL CHECK (status IN ('AVAILABLE', 'USED')),
    order_id        text,
    discount_amount bigint      CHECK (discount_amount >= 0),
    used_at         timestamptz,
    expires_at      timestamptz NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupons_user_seq_unique UNIQUE (policy_id, user_id, user_seq),
    CONSTRAINT user_seq_within_limit CHECK (user_seq BETWEEN 1 AND per_user_limit),
    -- USED exactly when an order is attached.
    CHECK ((status = 'USED') = (order_id IS NOT NULL AND used_at IS NOT NULL AND discount_amount IS NOT NULL))
);
CREATE INDEX coupons_user ON coupons (user_id, issued_at DESC);
