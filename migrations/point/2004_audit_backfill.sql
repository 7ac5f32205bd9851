-- Earns made before the audit log existed get one row each, with no actor,
-- so that `promoctl check` holds on old data too. The transaction id stands
-- in `after` as a logged earn's does.
INSERT INTO audit_log (id, at, action, target_type, target_id, request_id, after)
SELECT gen_random_uuid(), created_at, 'point.earned', 'user', user_id::text, 'backfill',
       jsonb_build_object('id', id)
  FROM point_transactions
 WHERE type = 'EARN';
