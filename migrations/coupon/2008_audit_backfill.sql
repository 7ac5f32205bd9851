-- Admin writes made before the audit log existed get one row each, with no
-- actor and no before/after, so that `promoctl check` holds on old data too.
INSERT INTO audit_log (id, at, action, target_type, target_id, request_id)
SELECT gen_random_uuid(), created_at, 'coupon_policy.created', 'coupon_policy', id::text, 'backfill'
  FROM coupon_policies;
INSERT INTO audit_log (id, at, action, target_type, target_id, request_id, after)
SELECT gen_random_uuid(), updated_at, 'coupon_policy.codes_generated', 'coupon_policy', id::text,
       'backfill', jsonb_build_object('generated', codes_generated, 'total_codes', codes_generated)
  FROM coupon_policies
 WHERE codes_generated > 0;
