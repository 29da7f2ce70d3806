"""The PostgreSQL store: the production store, shared by every node of a cluster.

psycopg 3 (async) over a psycopg_pool connection pool.  The SQL lives in sql/postgres.sql as
named queries (queries.py); the store binds their parameters and turns rows into domain Jobs.

The package, one concept a module:
- store.py: `PostgresStore`, the operations, each as the statements it issues;
- rows.py: rows into Jobs, arguments into the statements' array parameters;
- connections.py: the pool, each connection's session settings, Unavailable;
- listener.py: the LISTEN connection that turns other sessions' NOTIFYs into Notifications;
- schema.py: creating the schema and applying its migrations;
- fleet.py: the nodes table and the fleet row (a node's heartbeat row, the fleet it reads);
- queries.py: the named statements.

How the pieces fit:
- Everything jobd owns lives in one schema (`jobd` unless configured); each pooled
  connection's search_path is set to it, so the SQL uses unqualified names.  Pooled
  connections run in autocommit: a single-statement operation costs one round trip, and the
  operations that need more than one statement open an explicit transaction.
- The hot operations (claim, heartbeat, finish, recover) are single statements that mirror
  the domain's rules in SQL; the rare operator changes (cancel, retry) lock the row, let
  jobd.domain decide, and write the result back.
- Wake-ups: every write that creates claimable work sends NOTIFY `<schema>_submit` (payload:
  the queue) and a cancel of a running job sends NOTIFY `<schema>_cancel` (payload: the id),
  inside the transaction, so they are delivered only if it commits.  One dedicated LISTEN
  connection per store turns other sessions' notifications into Notifications; this
  process's own changes are announced to its listeners directly, at once, as the memory store
  does (the echo of its own NOTIFY is recognised by backend pid and dropped).  Notifications
  are hints: the supervisor polls as well, because a pooler or a network cut can lose them.
- Any failure to reach the database is raised as jobd.errors.Unavailable.
"""

from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.store import PostgresStore

__all__ = ["QUERIES", "PostgresStore"]
