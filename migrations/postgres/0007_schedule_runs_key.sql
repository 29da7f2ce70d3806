-- jobd schema 7: a schedule's history is keyed by its jobs (docs/adr/0026-periodic-jobs.md).
--
-- Schema 4 keyed schedule_runs by (name, tick), and a trigger records its run at the
-- database's `now()`: a trigger landing exactly on one of the schedule's ticks (a whole second
-- for `every:` schedules) collided with that tick's run, and the tick's transaction failed.
-- The key is now (name, job_id); the backstop that a tick is run once stays, as a unique
-- index over the ticks' rows only.

ALTER TABLE schedule_runs DROP CONSTRAINT schedule_runs_pkey;
ALTER TABLE schedule_runs ADD PRIMARY KEY (name, job_id);
CREATE UNIQUE INDEX schedule_runs_tick ON schedule_runs (name, tick) WHERE kind = 'tick';
