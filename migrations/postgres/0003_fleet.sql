-- jobd schema 3: mixed fleets (docs/adr/0023-mixed-fleets.md).
--
-- * jobs.lease_token: drawn afresh by every claim, cleared when the attempt ends; every
--   write-back of the attempt is fenced on it, so an outcome of an earlier claim of the same
--   job by the same node at the same attempt number (a release whose answer was lost, then
--   retried) can never end the newer claim.
-- * nodes: one row per running node (one boot of `jobd run`), written by its heartbeat: what
--   it runs and what its workers are doing.  Claims do not read it; `health`, the unrunnable
--   gauge and `jobctl nodes` do.  Rows of nodes that stopped heartbeating are pruned after a
--   day.
-- * fleet: one row of fleet-wide rules.  min_node_version is the oldest jobd version that may
--   keep claiming: a later migration that adds something older nodes would get wrong sets it
--   (UPDATE fleet SET min_node_version = '…'), and a node older than that stops claiming and
--   drains at its next heartbeat.  Nodes before this schema do not read it.

ALTER TABLE jobs ADD COLUMN lease_token bigint;
ALTER TABLE finished_jobs ADD COLUMN lease_token bigint;  -- same columns, same order

CREATE SEQUENCE jobs_lease_token_seq AS bigint CACHE 100;

-- all_jobs was expanded with the columns of schema 2: it gains the new one.
CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM finished_jobs;

CREATE TABLE nodes (
    id            text PRIMARY KEY,               -- host:pid:random, one per boot
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,                  -- jobd's package version
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    types         text[] NOT NULL DEFAULT '{}',   -- the job types it runs
    workers       jsonb NOT NULL DEFAULT '[]'     -- [{"index": 1, "job_id": 12 or null}, …]
);

COMMENT ON TABLE nodes IS 'jobd nodes: one row per boot of jobd run, kept by its heartbeat';

CREATE TABLE fleet (
    only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    min_node_version  text                        -- NULL: any version may claim
);

COMMENT ON TABLE fleet IS 'jobd fleet-wide rules (one row), written by migrations';

INSERT INTO fleet (only_row, min_node_version) VALUES (true, NULL);
