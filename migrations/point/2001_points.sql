-- The point ledger. Rows of point_transactions are immutable: a correction is
-- a CANCEL row. The balance row is a materialized sum of the ledger, changed
-- in the same statement as the ledger row that explains it.
CREATE TABLE point_balances (
    user_id    uuid PRIMARY KEY,
    balance    bigint      NOT NULL CONSTRAINT balance_not_negative CHECK (balance >= 0),
    -- Bumped by every change; the Redis cache keeps only the newest version.
    version    bigint      NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE point_transactions (
    id                       uuid PRIMARY KEY,
    user_id                  uuid        NOT NULL,
    type                     text        NOT NULL CHECK (type IN ('EARN', 'USE', 'CANCEL')),
    -- The magnitude, as requested.
    amount                   bigint      NOT NULL CHECK (amount > 0),
    -- The signed effect on the balance; the balance is the sum of these.
    delta                    bigint      NOT NULL CHECK (delta = amount OR delta = -amount),
    balance_after            bigint      NOT NULL CHECK (balance_after >= 0),
    reference                text,
    description              text,
    -- At most one CANCEL per transaction, whatever the concurrency.
    cancelled_transaction_id uuid CONSTRAINT cancelled_once UNIQUE REFERENCES point_transactions (id),
    created_at               timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'CANCEL') = (cancelled_transaction_id IS NOT NULL)),
    CHECK (type <> 'EARN' OR delta > 0),
    CHECK (type <> 'USE' OR delta < 0)
);
CREATE INDEX point_transactions_user ON point_transactions (user_id, created_at DESC, id DESC);
