-- The jobs table of the embedded SQLite store (one node only).
--
-- Conventions, because SQLite has few types of its own:
--   * timestamps are REAL unix epoch seconds, UTC: they compare and sort as plain numbers, and a
--     double keeps microsecond precision exactly for any date before 2106;
--   * payload, result and last_error are JSON text (last_error is ErrorInfo.to_dict());
--   * booleans are INTEGER 0/1.
-- schema_migrations is created by the store's migration runner, not here.

CREATE TABLE jobs (
    -- AUTOINCREMENT: never hand out the id of a pruned job again (a plain rowid reuses the
    -- largest id once it is deleted), so a client's old id or cursor can never name a new job.
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    type              TEXT    NOT NULL,
    queue             TEXT    NOT NULL DEFAULT 'default',
    priority          INTEGER NOT NULL DEFAULT 0,
    payload           TEXT    NOT NULL DEFAULT '{}',
    state             TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'running', 'completed', 'failed', 'canceled')),
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
    CHECK (attempts BETWEEN 0 AND max_attempts),
    -- a running job always has an owner and a lease; no other state has one
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim: pending rows only, in claim order, so the claim reads the first rows of this index
-- whose run_at has come and stops at its LIMIT.  Finished rows never enter it.
CREATE INDEX jobs_claim ON jobs (priority DESC, run_at, id) WHERE state = 'pending';

-- Heartbeat (lease_owner = ?) and lease recovery (lease_expires_at <= now): running rows only,
-- a handful per worker slot.
CREATE INDEX jobs_running_lease ON jobs (lease_owner, lease_expires_at) WHERE state = 'running';

-- Submitting with a key that exists returns the existing job; most jobs have no key, and a
-- partial index leaves them out of it.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Pruning finished jobs by age (finished_at is set exactly when a job is in a terminal state).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
