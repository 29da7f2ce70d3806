-- A job's own retention, `result_ttl`, as in PostgreSQL schema 10: seconds the job is kept
-- once it has ended, overriding jobs.retention either way (0: dropped at the next prune);
-- NULL: the retention applies (docs/adr/0033-result-retention-per-job.md).  The partial
-- index holds only the jobs that set one, in expiry order (finished_at is epoch seconds), so
-- the prune's first pass reads the expired jobs and nothing else.

ALTER TABLE jobs ADD COLUMN result_ttl REAL CHECK (result_ttl >= 0);

CREATE INDEX jobs_expiry ON jobs (finished_at + result_ttl)
    WHERE result_ttl IS NOT NULL;
