-- jobd schema 4: periodic jobs (docs/adr/0026-periodic-jobs.md).
--
-- * jobs.schedule: the schedule whose tick (or trigger) created the job; NULL for the others.
-- * schedules: one row per schedule the fleet has run: its last tick (every tick up to it has
--   been settled: enqueued, or skipped by the catch-up policy), whether it is paused (for the
--   whole fleet, until resumed) and the definition hash of the node that wrote it last.  Every
--   node that enqueues a tick locks this row first, so a tick gets its job once.
-- * schedule_runs: the history, one row per job a schedule created; the primary key refuses
--   a second job for one tick even if two transactions ever decided alike.  Rows older than a
--   week are deleted as new ones are written.  A schedule removed from the configuration
--   keeps its row and its history.
-- Older nodes ignore all three: a node before this schema runs no schedules.

ALTER TABLE jobs ADD COLUMN schedule text;
ALTER TABLE finished_jobs ADD COLUMN schedule text;  -- same columns, same order

CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;

-- overlap: skip asks whether a run of the schedule is still pending or running.
CREATE INDEX jobs_schedule ON jobs (schedule) WHERE schedule IS NOT NULL;
-- list --schedule NAME
CREATE INDEX finished_jobs_schedule ON finished_jobs (schedule) WHERE schedule IS NOT NULL;

CREATE TABLE schedules (
    name             text PRIMARY KEY,
    last_tick        timestamptz,
    paused           boolean NOT NULL DEFAULT false,
    definition_hash  text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE schedules IS 'jobd schedules: the last tick settled and the pause state';

CREATE TABLE schedule_runs (
    name         text NOT NULL REFERENCES schedules (name),
    tick         timestamptz NOT NULL,            -- the job's run_at
    job_id       bigint NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('tick', 'trigger')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, tick)
);

COMMENT ON TABLE schedule_runs IS 'jobd schedules: the jobs each schedule created (a week)';
