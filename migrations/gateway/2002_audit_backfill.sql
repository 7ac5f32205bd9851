-- Admins made before the audit log existed get the row of their role, with
-- no actor, so that `promoctl check` holds on old data too.
INSERT INTO audit_log (id, at, action, target_type, target_id, request_id, after)
SELECT gen_random_uuid(), created_at, 'user.role_changed', 'user', id::text, 'backfill',
       jsonb_build_object('role', role)
  FROM users
 WHERE role = 'admin';
