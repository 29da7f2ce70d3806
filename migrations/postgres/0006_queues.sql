-- jobd schema 6: operating the queues (docs/adr/0030-operating-the-queues.md).
--
-- * queues: one row per queue an operator has paused or resumed.  A paused queue is not
--   claimed from by any node (each node reads this table at start, at every heartbeat and on
--   the NOTIFY a pause sends, and leaves the paused queues out of its claims); submits are
--   still accepted and running jobs finish.  A queue without a row is not paused.
-- * audit_log: every operator action (pause, resume, bulk cancel/retry/purge, run-now,
--   priority, schedule pause/resume/trigger): who, when, on what, with which arguments.
-- * fleet.min_node_version: a node older than this schema would keep claiming from a paused
--   queue, so it must stop claiming (ADR 0023).  Raised only from a version before this one.

CREATE TABLE queues (
    name        text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    reason      text,
    changed_by  text,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE queues IS 'jobd queues: fleet-wide pause state, one row per queue ever paused';

CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,                 -- uid:1000 (control socket), token:1a2b3c4d (HTTP)
    action   text NOT NULL,                 -- queue_pause, cancel_many, run_now, ...
    target   text,                          -- a queue, a job id, a schedule; NULL for bulk
    details  jsonb NOT NULL DEFAULT '{}'    -- the filter or arguments, and what was done
);

COMMENT ON TABLE audit_log IS 'jobd audit trail: operators'' actions, newest by id';

UPDATE fleet SET min_node_version = '0.2.0'
 WHERE coalesce(min_node_version, '') IN ('', '0.1.0');
