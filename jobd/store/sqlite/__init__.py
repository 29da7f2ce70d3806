"""The embedded store: one SQLite file in WAL mode, the default when no database is configured.

One node only (the lease machinery still works, but several daemons on one file would all queue
for SQLite's single write lock): `jobd run` holds a lock on the file (lock.py).

The package, one concept a module:
- store.py: `SQLiteStore`, the operations, each one trip to the database thread;
- thread.py: the one connection, the one thread that uses it, the write transaction;
- lock.py: the lock that keeps a file to one node;
- sql.py: the statements, built from the Job dataclass's fields;
- rows.py: Jobs as rows and rows as Jobs (epoch seconds, JSON text);
- schema.py: applying the migrations.

How it is built:

- **One thread, one connection.**  The Store methods are coroutines on the supervisor's loop; all
  database work runs on a single dedicated thread (a one-worker executor) that owns the only
  connection.  Calls are therefore serialised in the order they were made, sqlite3's
  same-thread check holds, and the event loop never waits on the disk.  Each store operation is
  exactly one hop to that thread: the whole transaction, including the domain's transition code
  and the conversion of rows to Jobs, runs there.
- **Transactions.**  The connection is in autocommit mode (`isolation_level=None`) and every
  write is an explicit `BEGIN IMMEDIATE … COMMIT`: the write lock is taken at BEGIN, so a
  read-then-write (claim, finish) cannot be overtaken by another process between its read and
  its write, and a busy database makes us wait at BEGIN (busy_timeout) rather than fail midway.
- **The domain decides.**  Like the memory store, rows are loaded into `Job`s, the domain's
  transition methods (`Job.claim`, `outcome_applied`, `Job.recover`, …) compute the new values,
  and those are written back; no state rule is restated in SQL except the claim's selection.
- **Cancellation.**  If the awaiting coroutine is cancelled, the work already handed to the thread
  still runs to its end (commit or rollback); only its answer is lost.  For a claim that means
  jobs leased to this node that nobody runs, which lease recovery hands back when they expire.
"""

from jobd.store.sqlite.schema import statements
from jobd.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore", "statements"]
