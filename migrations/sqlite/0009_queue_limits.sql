-- Fleet-wide queue limits (docs/adr/0032-fleet-wide-queue-limits.md), as in PostgreSQL
-- schema 9: the runtime limits an operator set over the file's (NULL: the file's apply), who
-- set them when, and the rate's current window (epoch seconds) with the claims counted in it.

ALTER TABLE queues ADD COLUMN global_concurrency INTEGER;
ALTER TABLE queues ADD COLUMN rate_limit INTEGER;
ALTER TABLE queues ADD COLUMN rate_period REAL;
ALTER TABLE queues ADD COLUMN limits_changed_by TEXT;
ALTER TABLE queues ADD COLUMN limits_changed_at REAL;
ALTER TABLE queues ADD COLUMN window_start REAL;
ALTER TABLE queues ADD COLUMN window_starts INTEGER NOT NULL DEFAULT 0;

UPDATE fleet SET min_node_version = '0.3.0'
 WHERE coalesce(min_node_version, '') IN ('', '0.1.0', '0.2.0');
