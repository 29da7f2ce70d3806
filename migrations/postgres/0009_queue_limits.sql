-- jobd schema 9: fleet-wide queue limits (docs/adr/0032-fleet-wide-queue-limits.md).
--
-- * queues.global_concurrency, rate_limit, rate_period: the runtime limits an operator set
--   (`jobctl queues limit`), over every node's file values (NULL: the file's apply);
--   limits_changed_by and limits_changed_at: who set them, when.
-- * queues.window_start, window_starts: the rate's current fixed window (epoch seconds, a
--   multiple of the period) and the claims counted in it.
-- A claim of a queue with a fleet-wide limit holds the queue's row (creating it) for its
-- transaction, so the claims of that queue from every node take turns; it counts the queue's
-- running jobs through jobs_running_idx.  Queues without such a limit never touch the row.
-- * fleet.min_node_version: a node older than this schema would claim past the limits, so it
--   must stop claiming (ADR 0023).  Raised only from a version before this one.

ALTER TABLE queues ADD COLUMN global_concurrency integer;
ALTER TABLE queues ADD COLUMN rate_limit integer;
ALTER TABLE queues ADD COLUMN rate_period double precision;
ALTER TABLE queues ADD COLUMN limits_changed_by text;
ALTER TABLE queues ADD COLUMN limits_changed_at timestamptz;
ALTER TABLE queues ADD COLUMN window_start double precision;
ALTER TABLE queues ADD COLUMN window_starts integer NOT NULL DEFAULT 0;

COMMENT ON TABLE queues IS
    'jobd queues: fleet-wide pause state, runtime limits and rate window, one row per queue';

UPDATE fleet SET min_node_version = '0.3.0'
 WHERE coalesce(min_node_version, '') IN ('', '0.1.0', '0.2.0');
