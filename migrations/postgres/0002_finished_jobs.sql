-- jobd schema 2: finished jobs leave the hot table (docs/adr/0019-finished-jobs-table.md).
--
-- `jobs` keeps the jobs that can still run (pending, running); a job that ends (completed,
-- failed, canceled) is moved to `finished_jobs` by the statement that ends it, and an
-- operator's retry moves it back.  The hot table then holds the backlog and nothing else:
-- its indexes and its VACUUMs stay as small as the backlog, however many finished jobs the
-- retention keeps, and pruning deletes from a table the claim never reads.
--
-- Both tables have the same columns in the same order (moves are INSERT ... SELECT * of
-- the deleted row, and all_jobs is a UNION ALL): a later migration that adds a column adds
-- it to both.

CREATE TABLE finished_jobs (
    LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id),
    UNIQUE (idempotency_key),
    CONSTRAINT finished_jobs_terminal CHECK (state IN ('completed', 'failed', 'canceled'))
) WITH (
    -- Insert-mostly: a row is written once and deleted by the pruner; pages can be full.
    -- Vacuum it for its visibility map (index-only scans, cheap counts) and after pruning.
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_scale_factor = 0.05
);

COMMENT ON TABLE finished_jobs IS
    'jobd jobs that ended (completed, failed, canceled); pruned after the retention period';

-- Pruning, oldest first.
CREATE INDEX finished_jobs_finished_idx ON finished_jobs (finished_at);

-- What the old schema kept in place moves now, in this migration's transaction.
WITH moved AS (
    DELETE FROM jobs WHERE state IN ('completed', 'failed', 'canceled') RETURNING *
)
INSERT INTO finished_jobs SELECT * FROM moved;

DROP INDEX jobs_finished_idx;

COMMENT ON TABLE jobs IS 'jobd jobs that can still run (pending, running); see finished_jobs';

-- Every job, wherever it is: what jobd's get, list and counts read, and what an operator
-- queries by hand.  A filter on id or an ORDER BY id ... LIMIT reaches both tables' primary
-- keys (an Append, or a Merge Append for the order).
CREATE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;

COMMENT ON VIEW all_jobs IS 'every jobd job: jobs (pending, running) and finished_jobs';


-- jobd_enqueue, as in schema 1, but an idempotency key is also taken by a finished job.
CREATE OR REPLACE FUNCTION jobd_enqueue(
    type text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    timeout double precision DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    correlation_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
    holder bigint;
BEGIN
    INSERT INTO jobs AS j (type, payload, queue, priority, run_at, max_attempts, timeout,
                           idempotency_key, correlation_id)
    VALUES (jobd_enqueue.type, jobd_enqueue.payload, jobd_enqueue.queue, jobd_enqueue.priority,
            coalesce(jobd_enqueue.run_at, now()), jobd_enqueue.max_attempts,
            jobd_enqueue.timeout, jobd_enqueue.idempotency_key, jobd_enqueue.correlation_id)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING j.id INTO new_id;
    IF jobd_enqueue.idempotency_key IS NOT NULL THEN
        -- A statement of its own, so under READ COMMITTED it sees a holder moved to
        -- finished_jobs while the insert above waited for it (the insert waits on the moving
        -- transaction's deleted row, then succeeds once it commits).
        SELECT a.id INTO holder FROM all_jobs AS a
         WHERE a.idempotency_key = jobd_enqueue.idempotency_key
           AND a.id IS DISTINCT FROM new_id;
        IF holder IS NOT NULL THEN
            IF new_id IS NOT NULL THEN
                DELETE FROM jobs AS j WHERE j.id = new_id;
            END IF;
            RETURN holder;
        END IF;
    END IF;
    PERFORM pg_notify(left(current_schema(), 56) || '_submit', jobd_enqueue.queue);
    RETURN new_id;
END
$$;
