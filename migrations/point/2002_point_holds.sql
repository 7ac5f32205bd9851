-- Point holds (API.md "Holds"): part of a balance reserved for a checkout,
-- then captured, voided or expired, exactly once. See ARCHITECTURE.md,
-- "Point holds".
CREATE TABLE point_holds (
    id              uuid PRIMARY KEY,
    user_id         uuid        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    status          text        NOT NULL
                    CHECK (status IN ('PENDING', 'CAPTURED', 'VOIDED', 'EXPIRED')),
    reference       text,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    -- What a capture spent; the rest of the hold was released.
    captured_amount bigint,
    CHECK ((status = 'PENDING') = (resolved_at IS NULL)),
    CHECK ((status = 'CAPTURED') = (captured_amount IS NOT NULL)),
    CHECK (captured_amount IS NULL OR captured_amount BETWEEN 1 AND amount)
);
-- The sweeper's scan: only pending holds, soonest expiry first.
CREATE INDEX point_holds_due ON point_holds (expires_at) WHERE status = 'PENDING';

-- The sum of the user's pending holds, moved in the same transaction as each
-- hold's status. available = balance - held >= 0 is this CHECK: the last line
-- behind the decisions made under the balance row's lock.
ALTER TABLE point_balances
    ADD COLUMN held bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT held_within_balance CHECK (held >= 0 AND held <= balance);

-- A capture's USE names its hold; at most one per hold, whatever the races.
ALTER TABLE point_transactions
    ADD COLUMN hold_id uuid CONSTRAINT captured_once UNIQUE REFERENCES point_holds (id),
    ADD CONSTRAINT hold_only_on_use CHECK (hold_id IS NULL OR type = 'USE');
