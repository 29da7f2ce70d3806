-- A running job's latest progress (`ctx.progress`), as in PostgreSQL schema 8: the JSON its
-- handler reported and when the supervisor received it (epoch seconds).  Kept when the job
-- ends and across attempts, until a later attempt reports (docs/adr/0031-job-progress.md).

ALTER TABLE jobs ADD COLUMN progress TEXT;
ALTER TABLE jobs ADD COLUMN progress_at REAL;
