-- perf/results/2026-12-01-prune.md: 600,000 published outbox rows and 600,000
-- idempotency keys, all younger than the 24 h retention (spread over 8.3 h).
INSERT INTO outbox (id, topic, aggregate_id, payload, created_at, published_at)
SELECT gen_random_uuid(), 'coupon.issued', md5(g::text),
  jsonb_build_object('id', gen_random_uuid(), 'type','coupon.issued','version',1,'aggregate_id',md5(g::text),'user_id',gen_random_uuid(),'occurred_at',now(),'data',jsonb_build_object('coupon_id',gen_random_uuid(),'policy_id',gen_random_uuid(),'code','ABCDEFGH')),
  now() - (600000 - g) * interval '50 ms', now() - (600000 - g) * interval '50 ms' + interval '100 ms'
FROM generate_series(1, 600000) g;
INSERT INTO idempotency_keys (user_id, key, request_hash, response, created_at)
SELECT gen_random_uuid(), 'k'||g, md5(g::text), jsonb_build_object('id', gen_random_uuid(), 'status','issued'), now() - (600000 - g) * interval '50 ms'
FROM generate_series(1, 600000) g;
VACUUM ANALYZE outbox;
VACUUM ANALYZE idempotency_keys;
