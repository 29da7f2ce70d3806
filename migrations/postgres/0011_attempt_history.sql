-- jobd schema 11: each job's history of attempts, and the index of the last hour's counts
-- (docs/adr/0034-attempt-history.md).
--
-- * history: the attempts that ended without ending the job (a failure that is retried, a
--   timeout, a crashed worker, an expired lease), a JSON array of small objects (attempt,
--   started_at and ended_at in epoch seconds, outcome, error type and message), appended by
--   the statement that sends the job back to pending (finish_retry, recover_expired) and
--   bounded there to the first and last entries (jobd.limits.ATTEMPT_HISTORY_KEEP).  NULL
--   for a job whose every attempt so far ended it: a first attempt that succeeds writes
--   nothing.  The move to finished_jobs carries it; an operator's retry clears it.
-- * finished_jobs (finished_at, state): `activity` counts the completed and failed jobs per
--   minute over the last hour from an index-only scan of this range.  It replaces the index
--   on finished_at alone, whose work it does too (the pruner's oldest first).

ALTER TABLE jobs ADD COLUMN history jsonb;
ALTER TABLE finished_jobs ADD COLUMN history jsonb;  -- same columns, same order

CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;

CREATE INDEX finished_jobs_finished_state_idx ON finished_jobs (finished_at, state);
DROP INDEX IF EXISTS finished_jobs_finished_idx;
