-- As PostgreSQL schema 7: a schedule's history keyed by (name, job_id), so that a trigger at
-- the instant of a tick does not collide with that tick's run; the ticks' rows keep a unique
-- (name, tick).  SQLite cannot change a primary key in place: the table is rebuilt.

CREATE TABLE schedule_runs_new (
    name         TEXT NOT NULL REFERENCES schedules (name),
    tick         REAL NOT NULL,
    job_id       INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('tick', 'trigger')),
    created_at   REAL NOT NULL,
    PRIMARY KEY (name, job_id)
);
INSERT INTO schedule_runs_new (name, tick, job_id, kind, created_at)
    SELECT name, tick, job_id, kind, created_at FROM schedule_runs;
DROP TABLE schedule_runs;
ALTER TABLE schedule_runs_new RENAME TO schedule_runs;
CREATE UNIQUE INDEX schedule_runs_tick ON schedule_runs (name, tick) WHERE kind = 'tick';
