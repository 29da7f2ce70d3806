-- Mixed fleets (docs/adr/0023-mixed-fleets.md): the node (a SQLite store has one at a time)
-- and the fleet's rules, as in PostgreSQL schema 3.  Times are epoch seconds, types and
-- workers JSON text.

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL,
    types         TEXT NOT NULL DEFAULT '[]',
    workers       TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE fleet (
    only_row          INTEGER PRIMARY KEY CHECK (only_row = 1),
    min_node_version  TEXT
);

INSERT INTO fleet (only_row, min_node_version) VALUES (1, NULL);
