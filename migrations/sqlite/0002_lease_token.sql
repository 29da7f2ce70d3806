-- The lease token (PostgreSQL schema 3): drawn afresh by every claim, cleared when the
-- attempt ends; every write-back of the attempt is fenced on it, so an outcome of an earlier
-- claim of the same job by the same node at the same attempt number is refused.

ALTER TABLE jobs ADD COLUMN lease_token INTEGER;
