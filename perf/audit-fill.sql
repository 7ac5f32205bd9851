-- A million audit entries for the audit search EXPLAINs
-- (perf/results/2026-12-08-audit.md): the point database's share when
-- admins credit points at volume, 100,000 users (target_id) with 10 each,
-- 5 admins (actor_id), over a year, plus 1,000 policy updates to find by
-- action. Run on a database migrated with migrations/audit.
INSERT INTO audit_log (id, at, actor_id, action, target_type, target_id, request_id, after)
SELECT gen_random_uuid(), now() - interval '365 days' + i * interval '30 seconds',
       ('00000000-0000-0000-0002-' || lpad(to_hex(i % 5), 12, '0'))::uuid,
       CASE WHEN i % 1000 = 0 THEN 'coupon_policy.updated' ELSE 'point.earned' END,
       'user', ('00000000-0000-0000-0001-' || lpad(to_hex(i % 100000), 12, '0')),
       'r' || i, jsonb_build_object('id', gen_random_uuid(), 'amount', 100, 'balance_after', i % 5000)
FROM generate_series(1, 1000000) i;
VACUUM ANALYZE audit_log;
