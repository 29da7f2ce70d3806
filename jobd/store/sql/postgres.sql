-- The PostgreSQL store's queries, one per `-- name: <name>` line; jobd/store/postgres/queries.py
-- loads them at import.  Comment lines (starting with --) are documentation and are not sent.
--
-- Names are unqualified: each connection's search_path is jobd's schema.  Parameters are
-- psycopg's %(name)s; the arrays of the statements that run per write-back (finish,
-- finish_retry, mark_started, record_progress) are %(name)b, sent in binary: psycopg dumps a
-- timestamp into a text array in ~3 us, into a binary one in a fifth of that (ADR 0038).
-- Every timestamp comes from the database clock (now(): the start of the statement's
-- transaction), so the nodes of a cluster agree on run_at and lease expiry.
-- The state machine is jobd.domain's; the queries that end attempts mirror
-- jobd.store.base.outcome_applied, and the contract tests compare them with the memory store.


-- name: submit
-- Insert a batch of jobs; an idempotency key that exists already (or earlier in the batch)
-- inserts nothing.  The batch comes as one JSON array with an array of values for each job
-- (rows.submit_params): one text parameter, where eleven arrays of a thousand elements each
-- cost the client a Python loop over every element.  Ids are drawn up front so each row
-- returned can be matched to its position (ord) in the request; a row with a NULL id was
-- not inserted.  ON CONFLICT DO NOTHING waits for a concurrent transaction that holds the
-- same key, so under any concurrency one insert wins and the others see the winner
-- afterwards (submit_existing).  Only what the request does not say comes back: the id and
-- what the database set (the state, run_at when none was given, the times of the insert);
-- rows.submitted_from_row builds the rest of the job from the request (docs/adr/0037).
-- The statement also sends the submit channel's NOTIFY, one per queue that got a job, at its
-- commit: a batch with no idempotency key and no parent is one statement and one round trip,
-- with no transaction around it (docs/adr/0041).
WITH spec AS MATERIALIZED (
    SELECT nextval('jobs_id_seq') AS id,
           j->>0 AS type, j->>1 AS queue, (j->>2)::integer AS priority, (j->3)::jsonb AS payload,
           (j->>4)::integer AS max_attempts, (j->>5)::timestamptz AS run_at,
           (j->>6)::double precision AS timeout, j->>7 AS idempotency_key,
           j->>8 AS correlation_id, j->>9 AS schedule, (j->>10)::double precision AS result_ttl,
           ord
      FROM json_array_elements(%(jobs)s::json) WITH ORDINALITY AS s (j, ord)
),
inserted AS (
    INSERT INTO jobs (id, type, queue, priority, payload, max_attempts, run_at, timeout,
                      idempotency_key, correlation_id, schedule, result_ttl)
    SELECT id, type, queue, priority, payload, max_attempts, coalesce(run_at, now()),
           timeout, idempotency_key, correlation_id, schedule, result_ttl
      FROM spec
     ORDER BY ord
        ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, queue, state, run_at, created_at, updated_at
),
notified AS (  -- an aggregate, so that it is evaluated: the main query reads it
    SELECT count(pg_notify(%(channel)s, queue)) AS queues
      FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT inserted.id, inserted.state, inserted.run_at, inserted.created_at, inserted.updated_at
  FROM spec
 CROSS JOIN notified
  LEFT JOIN inserted ON inserted.id = spec.id
 ORDER BY spec.ord


-- name: submit_existing
-- The jobs that hold these idempotency keys, wherever they are (a fresh statement, so it sees
-- the winners of the conflicts the insert waited for, and a holder that a finish moved to
-- finished_jobs while the insert waited for its deleted row).
SELECT *
  FROM all_jobs
 WHERE idempotency_key = ANY(%(keys)s::text[])


-- name: submit_undo
-- Take back rows this transaction inserted whose key turned out to be held by a finished job.
DELETE FROM jobs
 WHERE id = ANY(%(ids)s::bigint[])


-- name: notify
-- One notification per distinct payload; sent when the transaction commits.
SELECT pg_notify(%(channel)s, payload)
  FROM (SELECT DISTINCT unnest(%(payloads)s::text[]) AS payload) AS p


-- name: get
-- The job with its parents (NULL: none), in one round trip: `wait` reads a job twice.
SELECT all_jobs.*,
       (SELECT array_agg(d.parent ORDER BY d.parent)
          FROM job_deps AS d
         WHERE d.child = all_jobs.id) AS parents
  FROM all_jobs
 WHERE id = %(id)s


-- name: lock_job
-- An operator's change (cancel, retry) reads the job under a row lock, lets the domain decide,
-- and writes it back with write_job in the same transaction.  FOR UPDATE cannot lock through
-- a UNION, so each table is asked in turn (jobs first: a job only moves from jobs to
-- finished_jobs by itself; the way back is an operator's retry, which holds this lock).
SELECT *, now() AS db_now, 'jobs' AS home
  FROM jobs
 WHERE id = %(id)s
   FOR UPDATE


-- name: lock_finished_job
SELECT *, now() AS db_now, 'finished_jobs' AS home
  FROM finished_jobs
 WHERE id = %(id)s
   FOR UPDATE


-- name: move_finished
-- Move the jobs among these that have ended from jobs to finished_jobs (the rare endings that
-- are written in place first: a cancel of a pending job, a retry that found a cancel request
-- or no attempt left, a lease recovered from a dead node with no attempt left).
WITH moved AS (
    DELETE FROM jobs
     WHERE id = ANY(%(ids)s::bigint[])
       AND state IN ('completed', 'failed', 'canceled')
    RETURNING *
)
INSERT INTO finished_jobs
SELECT * FROM moved


-- name: move_back
-- An operator's retry: the job goes back to the hot table (write_job then makes it pending).
WITH moved AS (
    DELETE FROM finished_jobs
     WHERE id = %(id)s
    RETURNING *
)
INSERT INTO jobs
SELECT * FROM moved


-- name: write_job
UPDATE jobs
   SET state = %(state)s,
       attempts = %(attempts)s,
       crashes = %(crashes)s,
       run_at = %(run_at)s,
       last_error = %(last_error)s,
       result = %(result)s,
       cancel_requested = %(cancel_requested)s,
       lease_owner = %(lease_owner)s,
       lease_expires_at = %(lease_expires_at)s,
       lease_token = %(lease_token)s,
       updated_at = %(updated_at)s,
       started_at = %(started_at)s,
       finished_at = %(finished_at)s,
       history = %(history)s
 WHERE id = %(id)s
RETURNING *


-- name: list
-- Newest first; keyset pagination on id (the cursor is the last id of the previous page).
-- One row more than asked tells whether there is a next page.
SELECT *
  FROM all_jobs
 WHERE (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
   AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(type)s::text IS NULL OR type = %(type)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s::timestamptz)
   AND (%(created_before)s::timestamptz IS NULL
        OR created_at < %(created_before)s::timestamptz)
   AND (%(schedule)s::text IS NULL OR schedule = %(schedule)s::text)
   AND (%(workflow)s::bigint[] IS NULL OR id = ANY(%(workflow)s::bigint[]))
 ORDER BY id DESC
 LIMIT %(limit)s


-- name: counts
SELECT queue, type, state, count(*) AS count
  FROM all_jobs
 GROUP BY queue, type, state


-- name: claim
-- Take up to %(limit)s claimable jobs for a node: the inner SELECT walks jobs_claim_idx in
-- claim order and locks rows, skipping those another node is locking right now, so
-- concurrent claimers never wait for or double-claim each other; the UPDATE counts the
-- attempt and sets the lease in the same statement.  A pending job with no attempt left
-- cannot be claimed (domain: Job.claim).  NULL queues/types mean "any"; queues listed in
-- exclude_queues (NULL: none) are skipped, e.g. those at their concurrency limit.  A node
-- passes the types it runs: a job of another type waits for a node that runs it.  Each claim
-- draws a fresh lease token, the fence of its write-backs.  started_at waits for the worker.
--
-- The UPDATE finds its rows by `id = ANY(ARRAY(...))`, the locked ids as one array, not by a
-- join with the SELECT: a join lets the planner choose which side to scan first, and when the
-- table's statistics were taken while it was nearly empty (a drained queue between bursts)
-- it believed jobs held one row and scanned all of it for each locked id -- seen under a
-- flooding producer with a backlog of a million: claims of 120 s.  An array leaves the
-- UPDATE one plan, an index probe per id, whatever the statistics say.
UPDATE jobs
   SET state = 'running',
       attempts = jobs.attempts + 1,
       lease_owner = %(node)s,
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       lease_token = nextval('jobs_lease_token_seq'),
       started_at = NULL,  -- claimed is not started: mark_started sets it
       updated_at = now()
 WHERE id = ANY(ARRAY(
        SELECT id
          FROM jobs
         WHERE state = 'pending'
           AND run_at <= now()
           AND attempts < max_attempts
           AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
           AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
           AND (%(exclude_queues)s::text[] IS NULL OR queue <> ALL(%(exclude_queues)s::text[]))
         ORDER BY priority DESC, run_at, id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED
       ))
RETURNING jobs.*


-- name: claim_commit_unflushed
-- Sent before a claim alone, in the same pipeline (one implicit transaction): its commit does
-- not wait for the WAL flush.  A claim lost to a crash of the database server leaves its jobs
-- pending, as they were; a worker that ran one has its outcome refused by the finish's fence
-- and the job runs again, as after any crash (at least once).  The finish's flush makes every
-- earlier commit durable, the claim's included.  See ADR 0039.
SELECT set_config('synchronous_commit', 'off', true)


-- name: heartbeat
-- Extend a node's leases: those of the jobs it says it holds (%(ids)s; NULL: all of them), so a
-- job whose claim answer the node never received expires instead of living for ever.  Touches
-- no indexed column, so it is a HOT update (see the table's fillfactor).  Returns each job
-- extended, flagging those with a cancel requested.
--
-- A row another transaction has locked is skipped, never waited for: it is most often one the
-- node's own write-back is ending, which locks its rows in an order of its own, and a
-- heartbeat waiting on it while holding rows the write-back wants was a deadlock (seen under
-- a flooding producer: about one a minute, each aborting a write-back or a heartbeat).  A
-- lease skipped is extended by the next heartbeat, long before it runs out: the node renews
-- at least twice a lease (supervisor.housekeeping).  The locked ids reach the UPDATE as one
-- array, not a join, for the claim's reason.
UPDATE jobs
   SET lease_expires_at = now() + make_interval(secs => %(lease)s)
 WHERE id = ANY(ARRAY(
        SELECT id
          FROM jobs
         WHERE state = 'running'
           AND lease_owner = %(node)s
           AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
           FOR UPDATE SKIP LOCKED
       ))
RETURNING id, cancel_requested


-- name: write_back_hash_joins
-- Sent first in the write-back's transaction (or its pipeline: one implicit transaction) and
-- for that transaction only: the write-back's statements join an array of n outcomes to the
-- n rows of jobs they end, and without this the planner, whose estimate of an array
-- parameter is 10 rows and of a jobs table analyzed while nearly empty is one, picks a nested
-- loop that compares every outcome with every row: n squared.  Seen under a flooding
-- producer: a finish of 839 outcomes compared 703,082 pairs in 578 ms, and a write-back that
-- had fallen behind ran into the 10-s statement timeout with a larger batch, so it fell
-- further behind.  A hash join is linear in n.  Nested loops the statements cannot do
-- without (a LATERAL probe, a cross join with one row) are still planned.  See ADR 0043.
SELECT set_config('enable_nestloop', 'off', true)


-- name: finish
-- End many attempts in one statement: the attempts that end their job (completed, canceled,
-- failed for good).  Each outcome applies only where its node still owns that claim (state
-- running, lease_owner, attempts, and lease_token when the outcome carries one): a node whose
-- lease was recovered and re-claimed, or an outcome replayed from an earlier claim, has its
-- write refused, and the row is absent from the result.  The row leaves jobs and
-- its final version goes to finished_jobs in the same statement, so the hot table never
-- holds a finished job and each ending costs one dead row in it, as an update would.
--
-- The rules are jobd.store.base.outcome_applied's for outcomes that do not ask for pending
-- again (finish_retry has those): completed is completed; canceled is canceled; failed is
-- failed, or canceled if a cancel was requested.  The CASEs read the deleted row's own
-- columns: DELETE re-checks a row it had to wait for on its newest version, so a cancel
-- requested concurrently is honoured.  `last_error` is always given for failed outcomes.
WITH outcome AS (
    SELECT o.*
      FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[], %(kinds)b::text[],
                  %(results)b::jsonb[], %(errors)b::jsonb[], %(crashed)b::boolean[],
                  %(tokens)b::bigint[], %(started_ats)b::timestamptz[])
           AS o (id, attempt, kind, result, error, crashed, token, started_at)
),
ended AS (
    DELETE FROM jobs
     USING outcome AS o
     WHERE jobs.id = o.id
       AND jobs.id = ANY(%(ids)b::bigint[])  -- any scan of jobs bounded by the batch (ADR 0043)
       AND jobs.state = 'running'
       AND jobs.lease_owner = %(node)s
       AND jobs.attempts = o.attempt
       AND (o.token IS NULL OR jobs.lease_token = o.token)
    RETURNING jobs.id, jobs.type, jobs.queue, jobs.priority, jobs.payload,
              CASE WHEN o.kind = 'completed' THEN 'completed'
                   WHEN o.kind = 'failed' AND NOT jobs.cancel_requested THEN 'failed'
                   ELSE 'canceled'
              END AS state,
              jobs.attempts, jobs.max_attempts,
              jobs.crashes + CASE WHEN o.crashed AND o.kind <> 'completed' THEN 1 ELSE 0 END
                  AS crashes,
              jobs.run_at, jobs.timeout,
              CASE WHEN o.kind = 'completed' THEN jobs.last_error
                   ELSE coalesce(o.error, jobs.last_error)
              END AS last_error,
              CASE WHEN o.kind = 'completed' THEN o.result ELSE jobs.result END AS result,
              jobs.idempotency_key, jobs.correlation_id, jobs.created_at,
              coalesce(o.started_at, jobs.started_at) AS started_at, jobs.schedule,
              jobs.on_parent_failure, jobs.progress, jobs.progress_at, jobs.result_ttl, jobs.history
),
moved AS (
    INSERT INTO finished_jobs (id, type, queue, priority, payload, state, attempts,
                               max_attempts, crashes, run_at, timeout, last_error, result,
                               idempotency_key, correlation_id, cancel_requested, lease_owner,
                               lease_expires_at, created_at, updated_at, started_at,
                               finished_at, schedule, on_parent_failure, progress,
                               progress_at, result_ttl, history)
    SELECT id, type, queue, priority, payload, state, attempts, max_attempts,
           crashes, run_at, timeout, last_error, result, idempotency_key,
           correlation_id, false, NULL, NULL,
           created_at, now(), started_at, now(), schedule, on_parent_failure,
           progress, progress_at, result_ttl, history
      FROM ended
    RETURNING id, state, queue
),
-- Workflows (schema 5): the dependents of the jobs that ended move on in this statement, so
-- a dependent's row is locked for the statement only, however many parents it has.  The
-- function reads the edges in a snapshot of its own, taken after the DELETE above waited for
-- any submit that had locked a parent: it sees that submit's edges.
released AS (
    SELECT jobd_parents_ended(array_agg(id), array_agg(state)) AS dependents
      FROM moved
)
SELECT moved.id, moved.state, moved.queue, false AS ready, released.dependents
  FROM moved, released


-- name: finish_retry
-- End the attempts whose outcome asks for pending again (a failure with a retry time, a
-- release), updating the row in place; those that cannot go back (a cancel was requested,
-- no attempt left) end here too and move_finished moves them in the same transaction.
-- Fenced as finish is.
--
-- The rules are jobd.store.base.outcome_applied's.  An attempt goes back to pending when
--     no cancel is requested AND (released OR attempts left),
-- and otherwise ends: canceled if a cancel was requested, else failed (the failed attempt
-- had none left; a release always has one, it gives its attempt back).  Every CASE reads
-- the row's own columns, not a copy joined in from a snapshot, so a cancel requested
-- concurrently is honoured: UPDATE re-evaluates its SET list on the newest version of a row
-- it had to wait for.
--
-- A failed attempt that sends its job back to pending is recorded in the job's history
-- (schema 11) by this statement: the first and last %(keep)s entries are kept
-- (domain: attempts_kept, AttemptRecord.ended; a release records nothing, its attempt was
-- given back).
WITH outcome AS (
    SELECT o.*, o.kind = 'released' AS gives_back
      FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[], %(kinds)b::text[],
                  %(errors)b::jsonb[], %(retry_ats)b::timestamptz[], %(crashed)b::boolean[],
                  %(tokens)b::bigint[], %(started_ats)b::timestamptz[])
           AS o (id, attempt, kind, error, retry_at, crashed, token, started_at)
)
UPDATE jobs
   SET state = CASE
           WHEN NOT jobs.cancel_requested
                AND (o.gives_back OR jobs.attempts < jobs.max_attempts) THEN 'pending'
           WHEN o.kind = 'failed' AND NOT jobs.cancel_requested THEN 'failed'
           ELSE 'canceled'
       END,
       run_at = CASE
           WHEN o.kind = 'failed' AND NOT jobs.cancel_requested
                AND jobs.attempts < jobs.max_attempts THEN o.retry_at
           ELSE jobs.run_at
       END,
       finished_at = CASE
           WHEN NOT jobs.cancel_requested
                AND (o.gives_back OR jobs.attempts < jobs.max_attempts) THEN jobs.finished_at
           ELSE now()
       END,
       attempts = CASE WHEN o.gives_back THEN greatest(jobs.attempts - 1, 0)
                       ELSE jobs.attempts END,
       crashes = jobs.crashes + CASE WHEN o.crashed AND o.kind = 'failed' THEN 1 ELSE 0 END,
       last_error = CASE WHEN o.kind = 'failed' THEN coalesce(o.error, jobs.last_error)
                         ELSE jobs.last_error END,
       started_at = coalesce(o.started_at, jobs.started_at),
       history = CASE
           WHEN o.kind = 'failed' AND NOT jobs.cancel_requested
                AND jobs.attempts < jobs.max_attempts THEN
               CASE WHEN jsonb_array_length(coalesce(jobs.history, '[]')) >= 2 * %(keep)s::integer
                    THEN jobs.history - %(keep)s::integer
                    ELSE coalesce(jobs.history, '[]')
               END || jsonb_build_array(jsonb_build_object(
                   'attempt', jobs.attempts,
                   'started_at', extract(epoch FROM coalesce(o.started_at, jobs.started_at)),
                   'ended_at', extract(epoch FROM now()),
                   'outcome', CASE WHEN o.crashed THEN 'crashed'
                                   WHEN o.error ->> 'type' = 'Timeout' THEN 'timeout'
                                   ELSE 'failed' END,
                   'error', jsonb_build_object('type', o.error ->> 'type',
                                               'message', o.error ->> 'message')))
           ELSE jobs.history
       END,
       -- however the attempt ended, a pending cancel request is settled by it
       cancel_requested = false,
       lease_owner = NULL,
       lease_expires_at = NULL,
       lease_token = NULL,
       updated_at = now()
  FROM outcome AS o
 WHERE jobs.id = o.id
   AND jobs.id = ANY(%(ids)b::bigint[])  -- any scan of jobs bounded by the batch (ADR 0043)
   AND jobs.state = 'running'
   AND jobs.lease_owner = %(node)s
   AND jobs.attempts = o.attempt
   AND (o.token IS NULL OR jobs.lease_token = o.token)
RETURNING jobs.id, jobs.state, jobs.queue, jobs.run_at <= now() AS ready


-- name: mark_started
-- When this node's workers started the jobs they were handed (claimed is not started), written
-- with a batch of outcomes; fenced as finish is.  Touches no indexed column: a HOT update.
UPDATE jobs
   SET started_at = s.at
  FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[], %(tokens)b::bigint[],
              %(ats)b::timestamptz[]) AS s (id, attempt, token, at)
 WHERE jobs.id = s.id
   AND jobs.id = ANY(%(ids)b::bigint[])  -- any scan of jobs bounded by the batch (ADR 0043)
   AND jobs.state = 'running'
   AND jobs.lease_owner = %(node)s
   AND jobs.attempts = s.attempt
   AND (s.token IS NULL OR jobs.lease_token = s.token)


-- name: record_progress
-- The latest progress of this node's running attempts, written with a batch of outcomes and
-- fenced as finish is (a report of an attempt that ended or lost its lease is refused).
-- Touches no indexed column: a HOT update when the page has room.
UPDATE jobs
   SET progress = p.progress,
       progress_at = p.at
  FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[], %(tokens)b::bigint[],
              %(progress)b::jsonb[], %(ats)b::timestamptz[])
       AS p (id, attempt, token, progress, at)
 WHERE jobs.id = p.id
   AND jobs.id = ANY(%(ids)b::bigint[])  -- any scan of jobs bounded by the batch (ADR 0043)
   AND jobs.state = 'running'
   AND jobs.lease_owner = %(node)s
   AND jobs.attempts = p.attempt
   AND (p.token IS NULL OR jobs.lease_token = p.token)
RETURNING jobs.id


-- name: recover_expired
-- Leases of any node that have run out (the node died or lost the database): the attempt is
-- spent (domain: Job.recover), so the job runs again now if it has attempts left, fails if
-- not, and is canceled if a cancel was requested.  An attempt sent back to pending is
-- recorded in the job's history, as finish_retry does.
UPDATE jobs
   SET state = CASE
           WHEN cancel_requested THEN 'canceled'
           WHEN attempts >= max_attempts THEN 'failed'
           ELSE 'pending'
       END,
       run_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN run_at
                     ELSE now() END,
       finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN now()
                          ELSE finished_at END,
       last_error = jsonb_build_object(
           'type', 'LeaseExpired',
           'message', 'lease of node ' || lease_owner || ' expired',
           'traceback', NULL),
       history = CASE
           WHEN cancel_requested OR attempts >= max_attempts THEN history
           ELSE CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 2 * %(keep)s::integer
                     THEN history - %(keep)s::integer
                     ELSE coalesce(history, '[]')
                END || jsonb_build_array(jsonb_build_object(
                    'attempt', attempts,
                    'started_at', extract(epoch FROM started_at),
                    'ended_at', extract(epoch FROM now()),
                    'outcome', 'lease_expired',
                    'error', jsonb_build_object(
                        'type', 'LeaseExpired',
                        'message', 'lease of node ' || lease_owner || ' expired')))
       END,
       cancel_requested = false,
       lease_owner = NULL,
       lease_expires_at = NULL,
       lease_token = NULL,
       updated_at = now()
 WHERE state = 'running'
   AND lease_expires_at <= now()
RETURNING *


-- name: dead_rows
-- How many dead row versions each of jobd's tables carries (each job leaves two behind in
-- jobs: its claim updates the row, its finish deletes it; finished_jobs gets them from
-- pruning).  Cumulative statistics, a little behind; good enough to decide.
SELECT relname AS name, coalesce(n_dead_tup, 0) AS dead, coalesce(n_live_tup, 0) AS live
  FROM pg_stat_user_tables
 WHERE relid IN ('jobs'::regclass, 'finished_jobs'::regclass)


-- name: prune_cutoff
-- The prune's times, read once so that its batches end: the database's now (a job's own
-- result_ttl counts from its finished_at to it) and the retention's cutoff (NULL: none).
SELECT now() AS now,
       now() - make_interval(secs => %(seconds)s::double precision) AS cutoff


-- name: prune
-- One batch of finished jobs older than the retention's cutoff that set no result_ttl of
-- their own, oldest first (finished_jobs_finished_state_idx).  Small batches keep each transaction
-- short: no long lock on the table, no WAL burst.  A job with a dependent that has not
-- finished (one in jobs) stays: the dependent may wait for it, or read its result.  The
-- edges of the pruned jobs go with them.  The batch's ids go to the DELETE as an array, so it
-- finds them by the primary key: as `id IN (subquery)` the planner may hash-join the whole
-- table against them instead (seen with 100,000 rows: a sequential scan every batch).
WITH pruned AS (
    DELETE FROM finished_jobs
     WHERE id = ANY(ARRAY(
            SELECT f.id
              FROM finished_jobs AS f
             WHERE f.finished_at < %(cutoff)s
               AND f.result_ttl IS NULL
               AND NOT EXISTS (SELECT 1 FROM job_deps AS d JOIN jobs AS c ON c.id = d.child
                                WHERE d.parent = f.id)
             ORDER BY f.finished_at
             LIMIT %(batch)s
               FOR UPDATE SKIP LOCKED
           ))
    RETURNING id
),
as_parent AS (
    DELETE FROM job_deps WHERE parent IN (SELECT id FROM pruned)
),
as_child AS (
    DELETE FROM job_deps WHERE child IN (SELECT id FROM pruned)
)
SELECT count(*) AS pruned FROM pruned


-- name: prune_expired
-- One batch of finished jobs past their own result_ttl (schema 10), whatever the retention
-- says, soonest expired first: the partial expression index finished_jobs_expiry_idx holds
-- only the jobs that set one, so this reads neither the others nor the table in order.  The
-- same rule as prune for a job a dependent still needs, and its edges go with it.
WITH pruned AS (
    DELETE FROM finished_jobs
     WHERE id = ANY(ARRAY(
            SELECT f.id
              FROM finished_jobs AS f
             WHERE f.result_ttl IS NOT NULL
               AND jobd_expires_at(f.finished_at, f.result_ttl) <= %(now)s
               AND NOT EXISTS (SELECT 1 FROM job_deps AS d JOIN jobs AS c ON c.id = d.child
                                WHERE d.parent = f.id)
             ORDER BY jobd_expires_at(f.finished_at, f.result_ttl)
             LIMIT %(batch)s
               FOR UPDATE SKIP LOCKED
           ))
    RETURNING id
),
as_parent AS (
    DELETE FROM job_deps WHERE parent IN (SELECT id FROM pruned)
),
as_child AS (
    DELETE FROM job_deps WHERE child IN (SELECT id FROM pruned)
)
SELECT count(*) AS pruned FROM pruned


-- name: ping
SELECT 1


-- name: report_node
-- A node's heartbeat row (migrations/postgres/0003_fleet.sql): inserted at its first
-- heartbeat, then its heartbeat time, types and workers kept current.
INSERT INTO nodes (id, host, pid, version, started_at, heartbeat_at, types, workers)
VALUES (%(id)s, %(host)s, %(pid)s, %(version)s, %(started_at)s, now(), %(types)s::text[],
        %(workers)s::jsonb)
    ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), types = excluded.types, workers = excluded.workers


-- name: nodes
-- Every node row; live while its heartbeat is newer than the lease (the database's clock).
SELECT id, host, pid, version, started_at, heartbeat_at, types, workers,
       heartbeat_at > now() - make_interval(secs => %(lease)s) AS live
  FROM nodes
 ORDER BY id


-- name: min_node_version
SELECT min_node_version FROM fleet


-- name: pending_by_type
-- The backlog by type (the hot table only: finished jobs are elsewhere).
SELECT type, count(*) AS count
  FROM jobs
 WHERE state = 'pending'
 GROUP BY type


-- name: prune_nodes
DELETE FROM nodes
 WHERE heartbeat_at < now() - make_interval(secs => %(seconds)s)


-- Schedules (jobd/store/postgres/schedules.py, schema 4).  Enqueuing a schedule's ticks is
-- one transaction: schedule_create, schedule_lock, then the decision in Python by the clock
-- read under the lock, schedule_insert and schedule_run per job, schedule_settle.

-- name: schedule_create
INSERT INTO schedules (name, definition_hash)
VALUES (%(name)s, %(hash)s)
    ON CONFLICT (name) DO NOTHING


-- name: schedule_lock
-- Every node enqueuing this schedule waits here for the others: the row's last_tick is read
-- once the previous transaction committed, and the clock after the lock is granted.
SELECT name, last_tick, paused, definition_hash
  FROM schedules
 WHERE name = %(name)s
   FOR UPDATE


-- name: schedule_clock
SELECT clock_timestamp() AS db_now,
       EXISTS (SELECT 1 FROM jobs
                WHERE schedule = %(name)s AND state IN ('pending', 'running')) AS busy


-- name: schedule_insert
INSERT INTO jobs (type, queue, priority, payload, max_attempts, run_at, timeout,
                  correlation_id, schedule)
VALUES (%(type)s, %(queue)s, %(priority)s, %(payload)s, %(max_attempts)s, %(run_at)s,
        %(timeout)s, %(correlation_id)s, %(schedule)s)
RETURNING *


-- name: schedule_run
INSERT INTO schedule_runs (name, tick, job_id, kind)
VALUES (%(name)s, %(tick)s, %(job_id)s, %(kind)s)


-- name: schedule_settle
UPDATE schedules
   SET last_tick = coalesce(%(last_tick)s, last_tick),
       definition_hash = %(hash)s,
       updated_at = now()
 WHERE name = %(name)s


-- name: schedule_prune_runs
DELETE FROM schedule_runs
 WHERE name = %(name)s
   AND tick < now() - %(kept)s * interval '1 second'


-- name: schedule_pause
INSERT INTO schedules (name, paused)
VALUES (%(name)s, %(paused)s)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()


-- name: schedule_records
-- Each schedule with the job of its latest run (ids grow, so the highest is the latest).
SELECT s.name, s.last_tick, s.paused, s.definition_hash,
       r.job_id AS last_job_id, j.state AS last_job_state
  FROM schedules s
  LEFT JOIN LATERAL (SELECT job_id FROM schedule_runs
                      WHERE name = s.name
                      ORDER BY job_id DESC
                      LIMIT 1) r ON true
  LEFT JOIN all_jobs j ON j.id = r.job_id
 WHERE %(name)s::text IS NULL OR s.name = %(name)s::text
 ORDER BY s.name


-- Workflows (jobd/store/postgres/workflows.py, schema 5).  The walks are the functions of
-- migrations/postgres/0005_workflows.sql: jobd_link (a submit), jobd_parents_ended (every end:
-- the finish statement above, and these), jobd_retried (an operator's retry).

-- name: workflow_link
-- Each new job of a batch that has parents, parents first (the batch's order); a row per job
-- with the parent it names that does not exist (NULL: none).
SELECT l.child, jobd_link(l.child, l.parents) AS missing
  FROM (SELECT c.child, c.ord,
               ARRAY(SELECT jsonb_array_elements_text(c.parents)::bigint) AS parents
          FROM unnest(%(children)s::bigint[], %(parents)s::jsonb[])
               WITH ORDINALITY AS c (child, parents, ord)) AS l
 ORDER BY l.ord


-- name: workflow_policy
UPDATE jobs
   SET on_parent_failure = 'run'
 WHERE id = ANY(%(ids)s::bigint[])


-- name: workflow_parents_ended
SELECT jobd_parents_ended(%(ids)s::bigint[], %(states)s::text[]) AS dependents


-- name: workflow_retried
SELECT jobd_retried(%(ids)s::bigint[])


-- name: workflow_needed
-- The jobs among these with a dependent that has not finished (one in jobs).
SELECT DISTINCT d.parent
  FROM job_deps AS d
  JOIN jobs AS c ON c.id = d.child
 WHERE d.parent = ANY(%(ids)s::bigint[])


-- name: workflow_forget
WITH as_parent AS (
    DELETE FROM job_deps WHERE parent = ANY(%(ids)s::bigint[])
)
DELETE FROM job_deps WHERE child = ANY(%(ids)s::bigint[])


-- name: workflow_jobs
SELECT *
  FROM all_jobs
 WHERE id = ANY(%(ids)s::bigint[])


-- name: workflow_parents
-- The parents of these jobs (get and list show them).
SELECT child, array_agg(parent ORDER BY parent) AS parents
  FROM job_deps
 WHERE child = ANY(%(ids)s::bigint[])
 GROUP BY child


-- name: workflow_children
SELECT child
  FROM job_deps
 WHERE parent = %(id)s
 ORDER BY child


-- name: workflow_unfinished_parents
-- The parents a job still waits for: those in jobs (the hot table holds no ended job).
SELECT d.parent
  FROM job_deps AS d
  JOIN jobs AS j ON j.id = d.parent
 WHERE d.child = %(id)s
 ORDER BY d.parent


-- name: workflow_parent_results
SELECT p.id, p.result
  FROM job_deps AS d
  JOIN all_jobs AS p ON p.id = d.parent
 WHERE d.child = %(id)s


-- name: workflow_connected
-- The jobs linked to one through `after`, in either direction (list --workflow).
WITH RECURSIVE linked (id) AS (
    SELECT %(id)s::bigint
    UNION
    SELECT CASE WHEN d.parent = l.id THEN d.child ELSE d.parent END
      FROM linked AS l
      JOIN job_deps AS d ON d.parent = l.id OR d.child = l.id
)
SELECT id FROM linked
