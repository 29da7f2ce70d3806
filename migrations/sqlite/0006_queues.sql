-- Operating the queues (docs/adr/0030-operating-the-queues.md), as in PostgreSQL schema 6:
-- the fleet-wide pause state of queues, the audit trail of operators' actions, and the
-- minimum node version that keeps nodes before it from claiming.  Times are epoch seconds.

CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,
    changed_by  TEXT,
    changed_at  REAL NOT NULL
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT,
    details  TEXT NOT NULL DEFAULT '{}'
);

UPDATE fleet SET min_node_version = '0.2.0'
 WHERE coalesce(min_node_version, '') IN ('', '0.1.0');
