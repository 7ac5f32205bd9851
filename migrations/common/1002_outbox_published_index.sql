-- no-transaction
-- Published rows by age, so pruning past retention is a range scan on this
-- index instead of a scan of the whole outbox. CONCURRENTLY keeps writers
-- going while an existing outbox is indexed, which needs no transaction and
-- one statement per file. No IF NOT EXISTS: a build that failed half way
-- leaves an invalid index that it would accept; failing loudly instead lets
-- an operator drop it and start again.
CREATE INDEX CONCURRENTLY outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
