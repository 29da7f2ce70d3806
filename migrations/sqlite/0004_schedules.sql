-- Periodic jobs (docs/adr/0026-periodic-jobs.md), as in PostgreSQL schema 4: the schedule
-- that created a job, one row per schedule (last tick, paused, definition hash) and the
-- history of the jobs each schedule created.  Times are epoch seconds.

ALTER TABLE jobs ADD COLUMN schedule TEXT;

CREATE INDEX jobs_schedule ON jobs (schedule) WHERE schedule IS NOT NULL;

CREATE TABLE schedules (
    name             TEXT PRIMARY KEY,
    last_tick        REAL,
    paused           INTEGER NOT NULL DEFAULT 0,
    definition_hash  TEXT,
    updated_at       REAL NOT NULL
);

CREATE TABLE schedule_runs (
    name         TEXT NOT NULL REFERENCES schedules (name),
    tick         REAL NOT NULL,
    job_id       INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('tick', 'trigger')),
    created_at   REAL NOT NULL,
    PRIMARY KEY (name, tick)
);
