-- Each job's history of attempts, as in PostgreSQL schema 11: the attempts that ended without
-- ending the job (retried, timed out, crashed, lease expired), a JSON array (times in epoch
-- seconds), bounded to the first and last entries (docs/adr/0034-attempt-history.md).
-- `activity` counts the last hour's finished jobs through jobs_finished (schema 1).

ALTER TABLE jobs ADD COLUMN history TEXT;
