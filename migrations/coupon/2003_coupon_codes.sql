-- Coupon codes (API.md "Coupon codes"): a policy hands its coupons out by
-- id (GENERATED), by one public code (SHARED) or by single-use codes
-- generated ahead (BATCH). See ARCHITECTURE.md, "Coupon codes".
ALTER TABLE coupon_policies
    ADD COLUMN code_mode text NOT NULL DEFAULT 'GENERATED'
        CHECK (code_mode IN ('GENERATED', 'SHARED', 'BATCH')),
    -- A SHARED policy's code as given (upper case, hyphens kept).
    ADD COLUMN shared_code text,
    ADD COLUMN stackable boolean NOT NULL DEFAULT false,
    ADD COLUMN codes_generated bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT shared_has_code CHECK ((code_mode = 'SHARED') = (shared_code IS NOT NULL)),
    -- Every generated code can be redeemed: never more codes than coupons.
    ADD CONSTRAINT codes_within_total
        CHECK (codes_generated >= 0 AND codes_generated <= total_quantity
               AND (code_mode = 'BATCH' OR codes_generated = 0));

-- Every redeemable code, BATCH and SHARED alike, in one key space: a code
-- names one policy. `code` is normalized (upper case, no hyphens or
-- spaces). No foreign key to the policy: a batch of a million rows is
-- written under the policy's row lock, and policies are never deleted;
-- `promoctl check` counts each policy's codes against `codes_generated`.
CREATE TABLE coupon_codes (
    code       text        PRIMARY KEY CHECK (code ~ '^[A-Z0-9]{4,32}$'),
    policy_id  uuid        NOT NULL,
    shared     boolean     NOT NULL,
    created_at timestamptz NOT NULL
);
-- Listing and export, by policy in code order.
CREATE INDEX coupon_codes_policy ON coupon_codes (policy_id, code);

-- The code a coupon was redeemed with (normalized), and whether it was a
-- shared one. A shared code's coupons show the shared code itself, so codes
-- are unique only among coupons not redeemed by code. No foreign key: a
-- redemption finds its code before it is admitted, codes are never deleted,
-- and the key's check would lock a row of a million-row table per coupon
-- (a write to its page); `promoctl check` (coupon.redeemed_codes_match)
-- reads that every redeemed code exists, of the coupon's own policy.
ALTER TABLE coupons
    ADD COLUMN redeemed_code text,
    ADD COLUMN redeemed_shared boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT shared_redemption_has_code CHECK (NOT redeemed_shared OR redeemed_code IS NOT NULL);
ALTER TABLE coupons DROP CONSTRAINT coupons_code_key;
CREATE UNIQUE INDEX coupons_code_key ON coupons (code) WHERE redeemed_code IS NULL;
-- The last line for "each BATCH code redeems exactly once".
CREATE UNIQUE INDEX coupons_redeemed_once ON coupons (redeemed_code)
    WHERE redeemed_code IS NOT NULL AND NOT redeemed_shared;
