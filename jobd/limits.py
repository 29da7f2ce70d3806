"""Limits shared by more than one layer, each defined once: the protocol checks them on the
wire, the stores enforce them again for callers that do not come through the protocol."""

from __future__ import annotations

#: Jobs in one submit_many call (the protocol's, the store's and jobctl's chunk size).
MAX_SUBMIT_MANY = 1000
#: Jobs in one page of a list.
MAX_LIST_LIMIT = 1000
#: Bytes of jobs (their JSON) in one page of a list: a page stops early at this size and its
#: cursor continues from there, so large payloads and results cannot make one reply huge.
MAX_LIST_BYTES = 8 * 1024 * 1024
#: Rows a list reads from the store at a time while it fills a page, so that a page of large
#: jobs is never read from the database all at once.
LIST_CHUNK = 100

#: Control-socket connections at once (control.max_connections); lowered at start to leave
#: descriptors for the daemon's own work.
CONTROL_MAX_CONNECTIONS = 1024
#: Seconds a control connection may sit with no request in flight and no subscription
#: (control.idle_timeout).
CONTROL_IDLE_TIMEOUT = 300.0
#: HTTP connections from one peer address at once (http.max_connections_per_peer).
HTTP_MAX_CONNECTIONS_PER_PEER = 32
#: Seconds an HTTP connection has for its request line and headers until it has sent a valid
#: token (http.header_timeout).
HTTP_HEADER_TIMEOUT = 5.0

#: Subscriptions (`subscribe`) one daemon serves at once; each holds a control connection.
MAX_SUBSCRIPTIONS = 64
#: Job changes waiting for one subscriber: a subscriber this far behind is dropped (told so),
#: never waited for.
SUBSCRIPTION_BUFFER = 1000
#: Seconds between two heartbeats on a quiet subscription: a subscriber that has heard nothing
#: for twice this knows its daemon is gone.
SUBSCRIPTION_HEARTBEAT = 15.0
#: Seconds a write to a subscriber may take before it is dropped as too slow.
SUBSCRIPTION_WRITE_TIMEOUT = 10.0
#: Job ids one subscription may follow (`subscribe`'s `ids` filter).
MAX_SUBSCRIBE_IDS = 1000

#: Jobs one transaction of a bulk action (cancel_many, retry_many, purge) changes at most: a
#: million matching jobs are a thousand short transactions, never one long one.
BULK_BATCH = 1000
#: Jobs one call of a bulk action changes at most; its continuation goes on from there.
MAX_BULK_LIMIT = 10_000

#: Seconds a job's `result_ttl` may keep it after it ends (ten years): longer is a mistake, and
#: "keep it for ever" is the global jobs.retention's 0 for jobs that set none (ADR 0033).
MAX_RESULT_TTL = 10 * 365 * 86400.0

#: Bytes of a handler's progress report (`ctx.progress(data)`, its JSON in UTF-8): progress is
#: a small status (`{"current": 3, "total": 10, "message": "..."}`), not a result channel.
MAX_PROGRESS_BYTES = 4096
#: Seconds between two progress reports of one job that reach the supervisor (and the
#: database): the worker keeps the latest value in between (ADR 0031).
PROGRESS_INTERVAL = 1.0

#: Seconds a running job's start waits, when nothing else is to be written, for its outcome to
#: carry it (supervisor.writeback; ADR 0035): a short job then costs the store one write, not a
#: start and then an end queued behind it.
START_WRITE_DELAY = 0.005

#: Bound on jobs claimed ahead of free worker slots, per worker (supervisor.pacing; ADR 0029;
#: 128 since ADR 0045).
CLAIM_AHEAD_PER_WORKER = 128
#: Bound on jobs queued in a worker beyond the one it runs, for short jobs (supervisor.pacing;
#: ADR 0029; 128 since ADR 0045); `workers.prefetch`'s help names it.
QUEUE_AHEAD_PER_WORKER = 128

#: Attempts of one job recorded at each end of its history (the first and the last this many
#: of those that ended without ending the job): a job retried a thousand times keeps a small
#: row (ADR 0034).
ATTEMPT_HISTORY_KEEP = 10
