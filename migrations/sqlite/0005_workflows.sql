-- Workflows (docs/adr/0027-workflows.md), as in PostgreSQL schema 5: a job may wait for other
-- jobs (`after`).  It is `waiting` while a parent has not ended, counting the parents it still
-- waits for (pending_parents); on_parent_failure says what a parent's failure does to it.
-- job_deps holds the edges, parent to child, with an index for each direction; they outlive
-- the jobs' ends and go when the pruner deletes a job.
--
-- SQLite cannot change a CHECK constraint in place: the jobs table is rebuilt with the new
-- state and columns, keeping its rows, its indexes and its AUTOINCREMENT counter (so that an
-- id of a pruned job is still never handed out again).

CREATE TABLE jobs_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    type              TEXT    NOT NULL,
    queue             TEXT    NOT NULL DEFAULT 'default',
    priority          INTEGER NOT NULL DEFAULT 0,
    payload           TEXT    NOT NULL DEFAULT '{}',
    state             TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('waiting', 'pending', 'running', 'completed', 'failed',
                                       'canceled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    crashes           INTEGER NOT NULL DEFAULT 0 CHECK (crashes >= 0),
    run_at            REAL    NOT NULL,
    timeout           REAL,
    last_error        TEXT,
    result            TEXT,
    idempotency_key   TEXT,
    correlation_id    TEXT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    lease_owner       TEXT,
    lease_expires_at  REAL,
    created_at        REAL    NOT NULL,
    updated_at        REAL    NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    lease_token       INTEGER,
    schedule          TEXT,
    on_parent_failure TEXT    NOT NULL DEFAULT 'cancel'
                      CHECK (on_parent_failure IN ('cancel', 'run')),
    pending_parents   INTEGER NOT NULL DEFAULT 0 CHECK (pending_parents >= 0),
    CHECK (attempts BETWEEN 0 AND max_attempts),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

INSERT INTO jobs_new (id, type, queue, priority, payload, state, attempts, max_attempts,
                      crashes, run_at, timeout, last_error, result, idempotency_key,
                      correlation_id, cancel_requested, lease_owner, lease_expires_at,
                      created_at, updated_at, started_at, finished_at, lease_token, schedule)
SELECT id, type, queue, priority, payload, state, attempts, max_attempts,
       crashes, run_at, timeout, last_error, result, idempotency_key,
       correlation_id, cancel_requested, lease_owner, lease_expires_at,
       created_at, updated_at, started_at, finished_at, lease_token, schedule
  FROM jobs;

-- The counter of the old table (the largest id ever given), which the rows alone may not tell.
DELETE FROM sqlite_sequence WHERE name = 'jobs_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'jobs_new', seq FROM sqlite_sequence WHERE name = 'jobs';

DROP TABLE jobs;

ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_claim ON jobs (priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX jobs_running_lease ON jobs (lease_owner, lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_schedule ON jobs (schedule) WHERE schedule IS NOT NULL;

-- A parent's end reads its children (the primary key); a job's get, the retry of a job and
-- list --workflow read its parents (job_deps_child).
CREATE TABLE job_deps (
    parent  INTEGER NOT NULL,
    child   INTEGER NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;

CREATE INDEX job_deps_child ON job_deps (child, parent);

-- One node per SQLite file, but the rule is the fleet's, as on PostgreSQL.
UPDATE fleet SET min_node_version = '0.2.0';
