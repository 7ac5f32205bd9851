CREATE TABLE products (
    id          uuid PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text,
    price       bigint      NOT NULL CHECK (price > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_created ON products (created_at DESC);

CREATE TABLE time_sales (
    id                 uuid PRIMARY KEY,
    product_id         uuid        NOT NULL REFERENCES products (id),
    total_quantity     bigint      NOT NULL CHECK (total_quantity > 0),
    -- Confirmed units, changed in the same transaction as the orders: with the
    -- CHECK below it is the last line of defence against overselling.
    sold_quantity      bigint      NOT NULL DEFAULT 0,
    -- A periodic copy of the live Redis stock, for reports; never decides.
    remaining_quantity bigint      NOT NULL,
    sale_price         bigint      NOT NULL CHECK (sale_price >= 0),
    per_user_limit     integer     NOT NULL DEFAULT 1 CHECK (per_user_limit > 0),
    start_at           timestamptz NOT NULL,
    end_at             timestamptz NOT NULL,
    -- SCHEDULED/ACTIVE/ENDED follow the clock and are recomputed on read;
    -- CANCELLED is sticky.
    status             text        NOT NULL DEFAULT 'SCHEDULED'
                       CHECK (status IN ('SCHEDULED', 'ACTIVE', 'ENDED', 'CANCELLED')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (start_at < end_at),
    CONSTRAINT sold_within_total CHECK (sold_quantity >= 0 AND sold_quantity <= total_quantity),
    CHECK (remaining_quantity >= 0 AND remaining_quantity <= total_quantity)
);
CREATE INDEX time_sales_window ON time_sales (start_at, end_at);

CREATE TABLE time_sale_orders (
    id           uuid PRIMARY KEY,
    time_sale_id uuid        NOT NULL REFERENCES time_sales (id),
    user_id      uuid        NOT NULL,
    quantity     bigint      NOT NULL CHECK (quantity > 0),
    unit_price   bigint      NOT NULL CHECK (unit_price >= 0),
    total_price  bigint      NOT NULL CHECK (total_price = unit_price * quantity),
    status       text        NOT NULL CHECK (status IN ('CONFIRMED', 'CANCELLED')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL))
);
CREATE INDEX time_sale_orders_user ON time_sale_orders (user_id, created_at DESC);
CREATE INDEX time_sale_orders_sale ON time_sale_orders (time_sale_id) WHERE status = 'CONFIRMED';

-- Confirmed units per user and sale, changed with the orders: the database
-- refuses a user above the limit even if Redis admitted them.
CREATE TABLE time_sale_user_totals (
    time_sale_id   uuid    NOT NULL REFERENCES time_sales (id),
    user_id        uuid    NOT NULL,
    quantity       bigint  NOT NULL,
    per_user_limit integer NOT NULL,
    PRIMARY KEY (time_sale_id, user_id),
    CONSTRAINT user_within_limit CHECK (quantity >= 0 AND quantity <= per_user_limit)
);
