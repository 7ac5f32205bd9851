-- Admin writes made before the audit log existed get one row each, with no
-- actor and no before/after, so that `promoctl check` holds on old data too.
INSERT INTO audit_log (id, at, action, target_type, target_id, request_id)
SELECT gen_random_uuid(), created_at, 'product.created', 'product', id::text, 'backfill'
  FROM products;
INSERT INTO audit_log (id, at, action, target_type, target_id, request_id)
SELECT gen_random_uuid(), created_at, 'time_sale.created', 'time_sale', id::text, 'backfill'
  FROM time_sales;
