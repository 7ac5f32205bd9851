-- Point lots (API.md "Point lots and expiry"): every credit is a lot with
-- its own expiry; spending draws from lots soonest expiry first; the sweeper
-- turns an expired lot's remainder into one EXPIRE transaction. From this
-- migration on, a user's balance is the sum of the remainders of their lots.
-- See ARCHITECTURE.md, "Point lots".
CREATE TABLE point_lots (
    id                  uuid PRIMARY KEY,
    user_id             uuid        NOT NULL,
    -- The EARN (or the give-back CANCEL) that made the lot, whose id is also
    -- the lot's (so the primary key makes it one lot per earn, with no index
    -- of its own to maintain); NULL for the lots this migration backfills.
    earn_transaction_id uuid CHECK (earn_transaction_id IS NULL OR earn_transaction_id = id),
    amount              bigint      NOT NULL CHECK (amount > 0),
    remaining           bigint      NOT NULL,
    -- NULL: never expires.
    expires_at          timestamptz,
    earned_at           timestamptz NOT NULL,
    -- How many EXPIRE transactions the lot has had: a use cancelled after
    -- the lot expired gives points back that expire again, once more.
    expiries            integer     NOT NULL DEFAULT 0 CHECK (expiries >= 0),
    expired_at          timestamptz,
    -- The last line behind the draws decided under the balance row's lock.
    CONSTRAINT lot_within_amount CHECK (remaining BETWEEN 0 AND amount)
);
-- Spending: a user's live lots in spend order.
CREATE INDEX point_lots_spend ON point_lots (user_id, expires_at, earned_at) WHERE remaining > 0;
-- The sweeper's scan: live lots that expire, soonest first.
CREATE INDEX point_lots_due ON point_lots (expires_at)
    WHERE remaining > 0 AND expires_at IS NOT NULL;

ALTER TABLE point_transactions
    DROP CONSTRAINT point_transactions_type_check,
    ADD CONSTRAINT point_transactions_type_check
        CHECK (type IN ('EARN', 'USE', 'CANCEL', 'EXPIRE')),
    ADD COLUMN lot_id uuid,
    -- The lot's n-th expiry (its `expiries` after it).
    ADD COLUMN lot_expiry integer,
    -- What a debit (a USE, a capture, a CANCEL of a lot-less EARN) took
    -- from which lots, `[{"lot_id", "amount"}]`; a cancel of a use gives
    -- exactly these back. Kept in the ledger row, which is written anyway,
    -- rather than in rows of their own: one heap row and one index entry
    -- less per use.
    ADD COLUMN draws jsonb,
    ADD CONSTRAINT draws_only_on_debits CHECK (draws IS NULL OR delta < 0),
    ADD CONSTRAINT lot_only_on_expire CHECK ((type = 'EXPIRE') = (lot_id IS NOT NULL)),
    ADD CONSTRAINT lot_expiry_with_lot CHECK ((lot_id IS NULL) = (lot_expiry IS NULL)),
    ADD CONSTRAINT expire_debits CHECK (type <> 'EXPIRE' OR delta < 0);
-- Each lot expires at most once per expiry number, whatever the sweepers.
CREATE UNIQUE INDEX expired_once ON point_transactions (lot_id, lot_expiry)
    WHERE lot_id IS NOT NULL;

-- The two "at most once" uniques as partial indexes: as UNIQUE constraints
-- they indexed the NULL of every other ledger row too, two index entries
-- per earn, use and EXPIRE that nothing reads. Same names, so a violation
-- still names them.
ALTER TABLE point_transactions DROP CONSTRAINT cancelled_once, DROP CONSTRAINT captured_once;
CREATE UNIQUE INDEX cancelled_once ON point_transactions (cancelled_transaction_id)
    WHERE cancelled_transaction_id IS NOT NULL;
CREATE UNIQUE INDEX captured_once ON point_transactions (hold_id) WHERE hold_id IS NOT NULL;

-- Balances from before lots: one never-expiring lot each, so that
-- balance = sum of remainders holds from here on.
INSERT INTO point_lots (id, user_id, amount, remaining, earned_at)
SELECT gen_random_uuid(), user_id, balance, balance, now()
FROM point_balances WHERE balance > 0;
