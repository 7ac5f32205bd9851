-- A million coupons for the admin search EXPLAINs
-- (perf/results/2026-12-07-admin-search.md): 200 policies, policy 1 holding
-- 30 % of them, the rest about 3,500 each; 100,000 users with 10 each;
-- 70 % AVAILABLE (half of them expired), 25 % USED, 5 % RESERVED, issued
-- over a year, with ids in issue order as promod's UUIDv7s are. Run on a
-- database migrated with common/ and coupon/.
INSERT INTO coupon_policies (id, name, discount_type, discount_value, total_quantity, issued_quantity, per_user_limit, valid_from, valid_until)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(p), 12, '0'))::uuid, 'p' || p, 'FIXED', 100, 2000000, 0, 1000, now() - interval '2 years', now() + interval '1 year'
FROM generate_series(1, 200) p;
-- policy 1 is hot: 30 % of rows; the rest spread over 199 policies.
INSERT INTO coupons (id, code, policy_id, user_id, user_seq, per_user_limit, status, order_id, discount_amount, used_at,
                     expires_at, issued_at, reserved_order_id, reserved_until)
SELECT (lpad(to_hex(i), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'C' || i,
       ('00000000-0000-0000-0000-' || lpad(to_hex(CASE WHEN i % 10 < 3 THEN 1 ELSE 2 + i % 199 END), 12, '0'))::uuid,
       ('00000000-0000-0000-0001-' || lpad(to_hex(i % 100000), 12, '0'))::uuid,
       i / 100000 + 1, 1000,
       s, CASE WHEN s = 'USED' THEN 'o' || i END, CASE WHEN s = 'USED' THEN 10 END, CASE WHEN s = 'USED' THEN now() END,
       now() - interval '200 days' + (i % 400) * interval '1 day',
       now() - interval '365 days' + i * interval '30 seconds',
       CASE WHEN s = 'RESERVED' THEN 'r' || i END, CASE WHEN s = 'RESERVED' THEN now() + interval '1 hour' END
FROM (SELECT i, CASE WHEN i % 20 = 0 THEN 'RESERVED' WHEN i % 4 = 1 THEN 'USED' ELSE 'AVAILABLE' END AS s
      FROM generate_series(1, 1000000) i) g;
VACUUM ANALYZE coupons;
