-- jobd schema 10: a job's own retention, `result_ttl` (docs/adr/0033-result-retention-per-job.md).
--
-- * result_ttl: seconds the job is kept once it has ended, overriding jobs.retention either
--   way (0: dropped at the next prune); NULL: the retention applies.  Set at submit (or from
--   the handler's default), carried by every move between jobs and finished_jobs.  The
--   constraint is NOT VALID: the existing rows are all NULL, so it need not read them.
-- * jobd_expires_at(finished_at, result_ttl): when such a job may go.  IMMUTABLE, which
--   timestamptz + interval is not in general (a day or a month depends on the time zone) but
--   is here: make_interval(secs => ...) has neither.  The index below needs that.
-- * finished_jobs_expiry_idx: partial, on the jobs that set a result_ttl only, so a finish
--   without one inserts into no more indexes than before, and the prune reads the expired
--   jobs in expiry order without scanning the table.
-- * jobd_enqueue gains `result_ttl` (the old signature is dropped: a second function of the
--   same name would make calls without it ambiguous).
-- Nodes before this schema still work: they finish jobs without copying result_ttl (such a
-- job then follows the retention) and prune by the retention alone.

ALTER TABLE jobs ADD COLUMN result_ttl double precision;
ALTER TABLE finished_jobs ADD COLUMN result_ttl double precision;  -- same columns, same order
ALTER TABLE jobs ADD CONSTRAINT jobs_result_ttl_check CHECK (result_ttl >= 0) NOT VALID;
ALTER TABLE finished_jobs ADD CONSTRAINT finished_jobs_result_ttl_check
    CHECK (result_ttl >= 0) NOT VALID;

CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;

CREATE FUNCTION jobd_expires_at(finished_at timestamptz, result_ttl double precision)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT finished_at + make_interval(secs => result_ttl) $$;

CREATE INDEX finished_jobs_expiry_idx ON finished_jobs (jobd_expires_at(finished_at, result_ttl))
    WHERE result_ttl IS NOT NULL;

DROP FUNCTION jobd_enqueue(text, jsonb, text, integer, timestamptz, integer, double precision,
                           text, text, bigint[], text);

CREATE FUNCTION jobd_enqueue(
    type text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    timeout double precision DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    correlation_id text DEFAULT NULL,
    after bigint[] DEFAULT NULL,
    on_parent_failure text DEFAULT 'cancel',
    result_ttl double precision DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
    holder bigint;
    missing bigint;
BEGIN
    INSERT INTO jobs AS j (type, payload, queue, priority, run_at, max_attempts, timeout,
                           idempotency_key, correlation_id, on_parent_failure, result_ttl)
    VALUES (jobd_enqueue.type, jobd_enqueue.payload, jobd_enqueue.queue, jobd_enqueue.priority,
            coalesce(jobd_enqueue.run_at, now()), jobd_enqueue.max_attempts,
            jobd_enqueue.timeout, jobd_enqueue.idempotency_key, jobd_enqueue.correlation_id,
            jobd_enqueue.on_parent_failure, jobd_enqueue.result_ttl)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING j.id INTO new_id;
    IF jobd_enqueue.idempotency_key IS NOT NULL THEN
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
    IF cardinality(jobd_enqueue.after) > 0 THEN
        missing := jobd_link(new_id, jobd_enqueue.after);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'after: job % not found', missing
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    PERFORM pg_notify(left(current_schema(), 56) || '_submit', jobd_enqueue.queue);
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION jobd_enqueue IS
    'Submit a jobd job in the caller''s transaction, optionally after other jobs; returns its id '
    '(or the existing job''s id for a known idempotency_key)';
