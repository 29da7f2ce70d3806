-- jobd schema 5: workflows, jobs that wait for other jobs (docs/adr/0027-workflows.md).
--
-- * jobs.state gains `waiting`: a job submitted `after` others whose parents have not all
--   ended.  It is not in jobs_claim_idx (state = 'pending'), so the claim never sees it.
-- * jobs.pending_parents: how many parents a waiting job still waits for.  Each parent's end
--   takes one off in the statement that ends it (jobd_parents_ended), so a fan-in of any size
--   costs each parent one row update, and no waiting job is ever scanned or polled.
-- * jobs.on_parent_failure: what a parent's failure or cancel does to the job (cancel: it ends
--   canceled, ParentFailed; run: it runs anyway once every parent has ended).
-- * job_deps: the edges, parent to child, an index for each direction.  No foreign keys: jobs
--   move between jobs and finished_jobs.  Edges outlive the ends of both jobs, and the pruner
--   deletes them with the jobs; it never prunes a job while a dependent has not finished.
-- * fleet.min_node_version = 0.2.0: a node before this schema would end a parent without
--   releasing its dependents (they would wait for ever), prune a parent a dependent waits for,
--   and cancel a job without cancelling its dependents.  It would never claim a waiting job.
--
-- Every job's end goes through jobd_parents_ended, called from the statement (or transaction)
-- that ends it; jobd_link and jobd_enqueue lock each parent (FOR KEY SHARE) before reading
-- whether it has ended, so a parent's end and a dependent's submit are ordered: the end waits
-- for the submit's commit and then, in a fresh snapshot, sees the new edge; or it committed
-- first and the submit sees the parent ended.

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('waiting', 'pending', 'running', 'completed', 'failed', 'canceled'));

ALTER TABLE jobs ADD COLUMN on_parent_failure text NOT NULL DEFAULT 'cancel'
    CHECK (on_parent_failure IN ('cancel', 'run'));
ALTER TABLE jobs ADD COLUMN pending_parents integer NOT NULL DEFAULT 0
    CHECK (pending_parents >= 0);
-- same columns, same order
ALTER TABLE finished_jobs ADD COLUMN on_parent_failure text NOT NULL DEFAULT 'cancel'
    CHECK (on_parent_failure IN ('cancel', 'run'));
ALTER TABLE finished_jobs ADD COLUMN pending_parents integer NOT NULL DEFAULT 0
    CHECK (pending_parents >= 0);

CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;

CREATE TABLE job_deps (
    parent  bigint NOT NULL,
    child   bigint NOT NULL,
    PRIMARY KEY (parent, child)          -- a parent's end: its children
);

-- A job's parents (get, list, a retry, list --workflow).
CREATE INDEX job_deps_child ON job_deps (child, parent);

COMMENT ON TABLE job_deps IS 'jobd workflows: job `child` was submitted after job `parent`';

UPDATE fleet SET min_node_version = '0.2.0'
 WHERE coalesce(min_node_version, '') IN ('', '0.1.0');


-- jobd_lock_parents: each of `parents`, locked FOR KEY SHARE where it is, and what that says:
-- how many have not ended, one that ended failed or canceled (the lowest id), and one that
-- does not exist.  Each table is asked in its own statement, so each sees what committed
-- while it waited: jobs first, finished_jobs for the rest, jobs again for a job an operator's
-- retry moved back meanwhile.
CREATE FUNCTION jobd_lock_parents(
    parents bigint[],
    OUT unfinished integer,
    OUT bad_id bigint,
    OUT bad_state text,
    OUT missing bigint
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    wanted bigint[] := ARRAY(SELECT DISTINCT p FROM unnest(parents) AS p ORDER BY p);
    live bigint[];
    ended bigint[];
    again bigint[];
BEGIN
    -- Each parent looked up (and locked) by its primary key, in id order: the lock inside the
    -- lateral subquery keeps it a probe per parent (as a join, a table without statistics yet
    -- was scanned instead).
    SELECT coalesce(array_agg(j.id), '{}') INTO live
      FROM unnest(wanted) AS w (id)
     CROSS JOIN LATERAL (SELECT id FROM jobs WHERE id = w.id FOR KEY SHARE) AS j;
    SELECT coalesce(array_agg(f.id), '{}') INTO ended
      FROM unnest(wanted) AS w (id)
     CROSS JOIN LATERAL (SELECT id FROM finished_jobs
                          WHERE id = w.id AND w.id <> ALL(live) FOR KEY SHARE) AS f;
    SELECT coalesce(array_agg(j.id), '{}') INTO again
      FROM unnest(wanted) AS w (id)
     CROSS JOIN LATERAL (SELECT id FROM jobs
                          WHERE id = w.id AND w.id <> ALL(live) AND w.id <> ALL(ended)
                            FOR KEY SHARE) AS j;
    unfinished := cardinality(live) + cardinality(again);
    SELECT f.id, f.state INTO bad_id, bad_state
      FROM unnest(ended) AS e (id)
     CROSS JOIN LATERAL (SELECT id, state FROM finished_jobs
                          WHERE id = e.id AND state IN ('failed', 'canceled') OFFSET 0) AS f
     ORDER BY f.id
     LIMIT 1;
    SELECT w.id INTO missing
      FROM unnest(wanted) AS w (id)
     WHERE w.id <> ALL(live) AND w.id <> ALL(ended) AND w.id <> ALL(again)
     ORDER BY w.id
     LIMIT 1;
END
$$;


-- The last_error of a job canceled because its parent ended `state` (jobd.domain's
-- parent_failed_error: the same text, which the retry of that parent reads back).
CREATE FUNCTION jobd_parent_failed(parent bigint, state text) RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT jsonb_build_object('type', 'ParentFailed',
                              'message', 'parent job ' || parent || ' ended ' || state,
                              'traceback', NULL)
$$;


-- jobd_parents_ended: jobs `ids` just ended in `states`.  Each waiting dependent takes them off
-- its count and is pending at zero, or, if one did not complete and it cancels on that, ends
-- canceled (ParentFailed naming the parent) and leaves for finished_jobs; its own dependents
-- then learn that in turn.  Touches the dependents of these jobs only, each by its primary key
-- (a plan that cannot turn into a scan of jobs, whatever the statistics say).  Returns how
-- many dependents it changed.
CREATE FUNCTION jobd_parents_ended(ids bigint[], states text[]) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    dep record;
    new_state text;
    new_queue text;
    canceled_ids bigint[];
    woken text[];
    changed integer := 0;
BEGIN
    -- The common case, jobs of no workflow: a probe of job_deps' primary key per job (OFFSET
    -- 0 keeps each a probe: as a join, a table without statistics yet was scanned instead).
    IF ids IS NULL OR NOT EXISTS (
        SELECT 1
          FROM unnest(ids) AS e (id)
         CROSS JOIN LATERAL (SELECT 1 FROM job_deps AS j WHERE j.parent = e.id OFFSET 0) AS d
    ) THEN
        RETURN 0;
    END IF;
    WHILE cardinality(ids) > 0 LOOP
        canceled_ids := '{}';
        woken := '{}';
        FOR dep IN
            SELECT d.child, count(*)::integer AS n,
                   (array_agg(e.id ORDER BY e.id) FILTER (WHERE e.state <> 'completed'))[1]
                       AS bad_parent,
                   (array_agg(e.state ORDER BY e.id) FILTER (WHERE e.state <> 'completed'))[1]
                       AS bad_state
              FROM unnest(ids, states) AS e (id, state)
             CROSS JOIN LATERAL (
                   -- OFFSET 0 keeps this a probe of the primary key per parent
                   SELECT j.child FROM job_deps AS j WHERE j.parent = e.id OFFSET 0
                 ) AS d
             GROUP BY d.child
             ORDER BY d.child
        LOOP
            UPDATE jobs AS c
               SET state = CASE
                       WHEN c.on_parent_failure = 'cancel' AND dep.bad_parent IS NOT NULL
                           THEN 'canceled'
                       WHEN c.pending_parents <= dep.n THEN 'pending'
                       ELSE 'waiting'
                   END,
                   pending_parents = CASE
                       WHEN c.on_parent_failure = 'cancel' AND dep.bad_parent IS NOT NULL THEN 0
                       ELSE greatest(c.pending_parents - dep.n, 0)
                   END,
                   finished_at = CASE
                       WHEN c.on_parent_failure = 'cancel' AND dep.bad_parent IS NOT NULL
                           THEN now()
                       ELSE c.finished_at
                   END,
                   last_error = CASE
                       WHEN c.on_parent_failure = 'cancel' AND dep.bad_parent IS NOT NULL
                           THEN jobd_parent_failed(dep.bad_parent, dep.bad_state)
                       ELSE c.last_error
                   END,
                   run_at = CASE
                       WHEN NOT (c.on_parent_failure = 'cancel' AND dep.bad_parent IS NOT NULL)
                            AND c.pending_parents <= dep.n THEN greatest(c.run_at, now())
                       ELSE c.run_at
                   END,
                   updated_at = now()
             WHERE c.id = dep.child
               AND c.state = 'waiting'
            RETURNING c.state, c.queue INTO new_state, new_queue;
            IF new_state = 'canceled' THEN
                canceled_ids := canceled_ids || dep.child;
            ELSIF new_state = 'pending' AND NOT new_queue = ANY(woken) THEN
                woken := woken || new_queue;
            END IF;
            IF new_state IS NOT NULL THEN
                changed := changed + 1;
            END IF;
            new_state := NULL;
        END LOOP;
        PERFORM pg_notify(left(current_schema(), 56) || '_submit', q) FROM unnest(woken) AS q;
        WITH moved AS (
            DELETE FROM jobs WHERE id = ANY(canceled_ids) RETURNING *
        )
        INSERT INTO finished_jobs SELECT * FROM moved;
        ids := canceled_ids;
        states := array_fill('canceled'::text, ARRAY[cardinality(ids)]);
    END LOOP;
    RETURN changed;
END
$$;


-- jobd_link: job `child`, just inserted (pending, in this transaction), was submitted after
-- `parents`: record the edges and make it wait for those that have not ended; pending if none;
-- canceled at once if one ended failed or canceled and it cancels on that.  Returns a parent
-- that does not exist (the caller refuses the submit), or NULL.
CREATE FUNCTION jobd_link(child bigint, parents bigint[]) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    found record;
    policy text;
BEGIN
    SELECT * INTO found FROM jobd_lock_parents(parents);
    IF found.missing IS NOT NULL THEN
        RETURN found.missing;
    END IF;
    INSERT INTO job_deps (parent, child)
    SELECT DISTINCT p, jobd_link.child FROM unnest(parents) AS p
        ON CONFLICT DO NOTHING;
    SELECT j.on_parent_failure INTO policy FROM jobs AS j WHERE j.id = jobd_link.child;
    IF found.bad_id IS NOT NULL AND policy = 'cancel' THEN
        UPDATE jobs AS j
           SET state = 'canceled', pending_parents = 0, finished_at = now(), updated_at = now(),
               last_error = jobd_parent_failed(found.bad_id, found.bad_state)
         WHERE j.id = jobd_link.child;
        WITH moved AS (DELETE FROM jobs AS j WHERE j.id = jobd_link.child RETURNING *)
        INSERT INTO finished_jobs SELECT * FROM moved;
    ELSIF found.unfinished > 0 THEN
        UPDATE jobs AS j SET state = 'waiting', pending_parents = found.unfinished
         WHERE j.id = jobd_link.child;
    END IF;
    RETURN NULL;
END
$$;


-- jobd_retried: jobs `ids` were just retried by an operator (pending again, in jobs, all of
-- them before this is called).  Each waits for its unfinished parents, if any (counting the
-- others of `ids` as unfinished); then the dependents of each wait for it again: those waiting
-- count it once more, those its failure canceled (ParentFailed naming it) come back to waiting
-- (unless another parent failed too: they stay canceled, naming that one), and so on down.  A
-- dependent among `ids` was counted afresh and is left alone.
CREATE FUNCTION jobd_retried(ids bigint[]) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    found record;
    retried_id bigint;
    queue bigint[];
    current_parent bigint;
    dependent record;
BEGIN
    FOREACH retried_id IN ARRAY ids LOOP
        SELECT * INTO found
          FROM jobd_lock_parents(
              ARRAY(SELECT d.parent FROM job_deps AS d WHERE d.child = retried_id));
        IF found.unfinished > 0 THEN
            UPDATE jobs AS j SET state = 'waiting', pending_parents = found.unfinished
             WHERE j.id = retried_id;
        END IF;
    END LOOP;
    queue := ids;
    WHILE cardinality(queue) > 0 LOOP
        current_parent := queue[1];
        queue := queue[2:];
        UPDATE jobs AS j
           SET pending_parents = j.pending_parents + 1, updated_at = now()
         WHERE j.id IN (SELECT d.child FROM job_deps AS d WHERE d.parent = current_parent)
           AND j.id <> ALL(ids)
           AND j.state = 'waiting';
        FOR dependent IN
            SELECT f.id, f.on_parent_failure
              FROM finished_jobs AS f
              JOIN job_deps AS d ON d.child = f.id
             WHERE d.parent = current_parent
               AND f.state = 'canceled'
               AND f.last_error ->> 'type' = 'ParentFailed'
               AND split_part(f.last_error ->> 'message', ' ', 3) = current_parent::text
             ORDER BY f.id
               FOR UPDATE OF f
        LOOP
            SELECT * INTO found
              FROM jobd_lock_parents(
                  ARRAY(SELECT d.parent FROM job_deps AS d WHERE d.child = dependent.id));
            IF found.bad_id IS NOT NULL AND dependent.on_parent_failure = 'cancel' THEN
                UPDATE finished_jobs AS f
                   SET last_error = jobd_parent_failed(found.bad_id, found.bad_state),
                       updated_at = now()
                 WHERE f.id = dependent.id;
                CONTINUE;
            END IF;
            WITH moved AS (
                DELETE FROM finished_jobs AS f WHERE f.id = dependent.id RETURNING *
            )
            INSERT INTO jobs SELECT * FROM moved;
            UPDATE jobs AS j
               SET state = 'waiting', pending_parents = greatest(found.unfinished, 1),
                   finished_at = NULL, updated_at = now()
             WHERE j.id = dependent.id;
            queue := queue || dependent.id;
        END LOOP;
    END LOOP;
END
$$;


-- jobd_enqueue, as in schema 2, and `after`: the job waits for these jobs (an unknown one
-- raises foreign_key_violation, and the caller's transaction cannot commit it);
-- on_parent_failure: 'cancel' or 'run'.  A new signature, so the old one goes first (two
-- overloads would make a call with defaults ambiguous).
DROP FUNCTION jobd_enqueue(text, jsonb, text, integer, timestamptz, integer, double precision,
                           text, text);

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
    on_parent_failure text DEFAULT 'cancel'
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
                           idempotency_key, correlation_id, on_parent_failure)
    VALUES (jobd_enqueue.type, jobd_enqueue.payload, jobd_enqueue.queue, jobd_enqueue.priority,
            coalesce(jobd_enqueue.run_at, now()), jobd_enqueue.max_attempts,
            jobd_enqueue.timeout, jobd_enqueue.idempotency_key, jobd_enqueue.correlation_id,
            jobd_enqueue.on_parent_failure)
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
