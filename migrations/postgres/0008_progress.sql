-- jobd schema 8: a running job's latest progress (docs/adr/0031-job-progress.md).
--
-- * progress: the small JSON value its handler last reported with `ctx.progress` (at most
--   4 KiB; the worker lets at most one report a second through);
-- * progress_at: when the supervisor received it.
-- Both are written with the supervisor's batches, fenced on the claim as a start is, and kept
-- when the job ends (the move to finished_jobs carries them) and across attempts, until a
-- later attempt reports.  Older nodes never write them and read past them.

ALTER TABLE jobs ADD COLUMN progress jsonb;
ALTER TABLE jobs ADD COLUMN progress_at timestamptz;
ALTER TABLE finished_jobs ADD COLUMN progress jsonb;  -- same columns, same order
ALTER TABLE finished_jobs ADD COLUMN progress_at timestamptz;

CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;
