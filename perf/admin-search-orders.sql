-- A million time-sale orders for the admin search EXPLAINs
-- (perf/results/2026-12-07-admin-search.md): 200 sales, sale 1 holding 30 %
-- of them, the rest about 3,500 each; 100,000 users with 10 each; 80 %
-- CONFIRMED, 10 % CANCELLED, 5 % PENDING, 5 % EXPIRED, over a year, with
-- ids in order as promod's UUIDv7s are. Run on a database migrated with
-- common/ and timesale/.
INSERT INTO products (id, name, price) VALUES ('00000000-0000-0000-0000-000000000001', 'p', 1000);
INSERT INTO time_sales (id, product_id, total_quantity, remaining_quantity, sale_price, per_user_limit, start_at, end_at)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(s), 12, '0'))::uuid, '00000000-0000-0000-0000-000000000001',
       10000000, 0, 900, 1000, now() - interval '2 years', now() + interval '1 year'
FROM generate_series(1, 200) s;
INSERT INTO time_sale_orders (id, time_sale_id, user_id, quantity, unit_price, total_price, status, created_at,
                              cancelled_at, expires_at, resolved_at)
SELECT (lpad(to_hex(i), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       ('00000000-0000-0000-0000-' || lpad(to_hex(CASE WHEN i % 10 < 3 THEN 1 ELSE 2 + i % 199 END), 12, '0'))::uuid,
       ('00000000-0000-0000-0001-' || lpad(to_hex(i % 100000), 12, '0'))::uuid,
       1, 900, 900, s, t,
       CASE WHEN s = 'CANCELLED' THEN t END,
       CASE WHEN s IN ('PENDING', 'EXPIRED') THEN t + interval '10 minutes' END,
       CASE WHEN s = 'EXPIRED' THEN t + interval '10 minutes' END
FROM (SELECT i, now() - interval '365 days' + i * interval '30 seconds' AS t,
             CASE WHEN i % 20 = 0 THEN 'PENDING' WHEN i % 20 = 1 THEN 'EXPIRED'
                  WHEN i % 10 = 2 THEN 'CANCELLED' ELSE 'CONFIRMED' END AS s
      FROM generate_series(1, 1000000) i) g;
VACUUM ANALYZE time_sale_orders;
