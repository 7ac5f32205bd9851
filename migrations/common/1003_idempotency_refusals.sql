-- A business refusal of a keyed write is its stored answer too (API.md,
-- Conventions): `response` then holds the error's code and message.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS refused boolean NOT NULL DEFAULT false;
