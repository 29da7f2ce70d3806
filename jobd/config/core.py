"""jobd's own settings, section by section: the rows of the settings table that are not the
sample handlers' (those are declared by jobd.samples)."""

from __future__ import annotations

import os

from jobd.config.errors import Problem
from jobd.config.kinds import (
    Boolean,
    DatabaseUrl,
    Duration,
    HostPort,
    Integer,
    ListOf,
    MiB,
    Mode,
    Number,
    PathKind,
    Queues,
    Size,
    Text,
)
from jobd.config.paths import SUN_PATH_MAX, default_database_url, default_socket_path
from jobd.config.schedules import Schedules
from jobd.config.sections import (
    ControlConfig,
    DatabaseConfig,
    HandlersConfig,
    HttpConfig,
    JobsConfig,
    LoggingConfig,
    ShutdownConfig,
    WorkersConfig,
)
from jobd.config.table import Computed, Section, Setting
from jobd.jobspec import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_RESULT_BYTES, MAX_PAYLOAD_BYTES
from jobd.limits import (
    CONTROL_IDLE_TIMEOUT,
    CONTROL_MAX_CONNECTIONS,
    HTTP_HEADER_TIMEOUT,
    HTTP_MAX_CONNECTIONS_PER_PEER,
    QUEUE_AHEAD_PER_WORKER,
)

DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"  # where `jobd http` listens when http.listen is unset
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MODULE = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,62}"


DATABASE = Section(
    "database",
    "Where jobs are kept.",
    (
        Setting(
            "database.url",
            DatabaseUrl(),
            Computed(
                default_database_url,
                "a SQLite file `jobd.db` in the state directory: `$STATE_DIRECTORY` (set by"
                " systemd's `StateDirectory=`, e.g. `/var/lib/jobd`), else"
                " `$XDG_STATE_HOME/jobd`, else `~/.local/state/jobd`",
            ),
            "Where jobs are kept: `postgresql://user:password@host:port/dbname` (production, many"
            " nodes), `sqlite:///absolute/path.db` (one node), or `memory://` (nothing is kept).",
            env="JOBD_DATABASE_URL",
            flag="--database-url",
            secret=True,
        ),
        Setting(
            "database.schema",
            Text(pattern=_IDENTIFIER, pattern_help="an SQL identifier (letters, digits, _)"),
            "jobd",
            "PostgreSQL schema holding everything jobd owns, so jobd can share an application's"
            " database. Ignored by SQLite.",
        ),
        Setting(
            "database.pool_min",
            Integer(min=1),
            1,
            "PostgreSQL connections each of the daemon's two pools keeps open.",
        ),
        Setting(
            "database.pool_max",
            Integer(min=1),
            8,
            "Most PostgreSQL connections in each of the daemon's two pools (the supervisor's"
            " and the control server's); at least `database.pool_min`.",
        ),
        Setting(
            "database.statement_timeout",
            Duration(positive=True),
            10.0,
            "PostgreSQL cancels a statement of the daemon's that runs longer, and ends a session"
            " left idle in a transaction that long; each call of the supervisor's to the store"
            " is given up 2 s after it (the connection is then replaced), so a database that"
            " hangs costs seconds, not a stuck daemon. Ignored by SQLite.",
        ),
        Setting(
            "database.connect_timeout",
            Duration(positive=True),
            5.0,
            "How long connecting to PostgreSQL may take (libpq's `connect_timeout`, at least 2 s).",
        ),
        Setting(
            "database.network_timeout",
            Duration(),
            10.0,
            "A PostgreSQL connection whose sent data goes unacknowledged this long is dropped by"
            " the kernel (`tcp_user_timeout`), and TCP keepalives find a silent one within it;"
            " 0: the system's defaults.",
        ),
    ),
    DatabaseConfig,
)


CONTROL = Section(
    "control",
    "The control socket that jobctl and the HTTP shim use.",
    (
        Setting(
            "control.socket",
            PathKind(max_bytes=SUN_PATH_MAX),
            Computed(
                default_socket_path,
                "`$RUNTIME_DIRECTORY/jobd.sock` (systemd's `RuntimeDirectory=`, e.g."
                " `/run/jobd/jobd.sock`), else `$XDG_RUNTIME_DIR/jobd.sock`, else `jobd.sock` in"
                " the state directory (or `/tmp/jobd-<uid>/jobd.sock` when that path is too"
                " long)",
            ),
            "Path of the control socket that jobctl and the HTTP shim connect to (jobctl reads the"
            " same environment variable).",
            env="JOBD_SOCKET",
            flag="--socket",
        ),
        Setting(
            "control.socket_mode",
            Mode(),
            0o660,
            "Permissions of the control socket: who may submit and cancel jobs. Quote it in YAML"
            ' ("0660").',
        ),
        Setting(
            "control.socket_group",
            Text(noun="group name or number"),
            None,
            "Group given to the control socket so that its members may use jobctl; unset: the"
            " daemon's own group.",
        ),
        Setting(
            "control.max_request_bytes",
            Size(min=1024),
            MiB,
            "Longest request line a client may send; a longer one is answered `payload_too_large`"
            " and its connection closed.",
        ),
        Setting(
            "control.max_connections",
            Integer(min=1),
            CONTROL_MAX_CONNECTIONS,
            "Control-socket connections at once. Past it the longest-idle connection is closed"
            " to make room; when none is idle the newcomer is answered `unavailable`. Lowered at"
            " start so that 256 file descriptors stay free for the daemon's own work.",
        ),
        Setting(
            "control.idle_timeout",
            Duration(positive=True),
            CONTROL_IDLE_TIMEOUT,
            "How long a control connection may sit with no request in flight (a `wait` counts as"
            " one) before it is closed.",
        ),
    ),
    ControlConfig,
)


WORKERS = Section(
    "workers",
    "The worker processes that run handler code.",
    (
        Setting(
            "workers.count",
            Integer(min=1),
            Computed(lambda env: os.cpu_count() or 1, "the number of CPUs"),
            "Worker processes that run jobs.",
            env="JOBD_WORKERS",
            flag="--workers",
        ),
        Setting(
            "workers.max_jobs_per_worker",
            Integer(min=0),
            0,
            "A worker is replaced after this many jobs, which bounds leaks in handler code"
            " (0: never).",
        ),
        Setting(
            "workers.max_memory",
            Size(),
            0,
            'A worker whose resident memory passes this is replaced after its job, e.g. "512MiB"'
            " (0: no limit).",
        ),
        Setting(
            "workers.max_crashes",
            Integer(min=1),
            3,
            "A job that has killed its worker this many times is failed as a poison job, whatever"
            " attempts it has left.",
        ),
        Setting(
            "workers.prefetch",
            Integer(min=0),
            1,
            "Jobs a worker may hold queued behind the one it runs, so it never waits for the next"
            " (0: none); while short jobs have a backlog, jobd queues up to"
            f" {QUEUE_AHEAD_PER_WORKER} more.",
        ),
    ),
    WorkersConfig,
)


def _handlers(sample_types: tuple[str, ...]) -> Section:
    samples = ListOf(Text(choices=sample_types), noun="handler names")
    return Section(
        "handlers",
        "Which job types this node can run.",
        (
            Setting(
                "handlers.modules",
                ListOf(
                    Text(pattern=_MODULE, pattern_help="a dotted module name, e.g. myapp.jobs"),
                    noun="module names",
                ),
                (),
                "Python modules imported once, in the fork server, to register handlers with"
                " `@handler`.",
                env="JOBD_HANDLER_MODULES",
                flag="--handlers",
            ),
            Setting(
                "handlers.samples",
                samples,
                (),
                "Sample handlers shipped with jobd to enable: "
                + ", ".join(f"`{name}`" for name in sample_types)
                + " (the built-in types `echo` and `sleep` are always there).",
            ),
            Setting(
                "handlers.builtin",
                samples,
                (),
                "Deprecated: the old name of `handlers.samples`; setting both is an error.",
                replaced_by="handlers.samples",
            ),
        ),
        HandlersConfig,
    )


def _at_most_max_payload(value: int) -> None:
    if value > MAX_PAYLOAD_BYTES:
        raise Problem(f"must be at most {MAX_PAYLOAD_BYTES // MiB}MiB ({MAX_PAYLOAD_BYTES} bytes)")


JOBS = Section(
    "jobs",
    "Leases, polling, and the defaults for timeouts and retries.",
    (
        Setting(
            "jobs.lease_seconds",
            Duration(min=1),
            30.0,
            "How long a node owns a running job without a heartbeat; after that any node may"
            " recover the job.",
        ),
        Setting(
            "jobs.heartbeat_seconds",
            Duration(positive=True),
            10.0,
            "How often a node extends its leases; less than `jobs.lease_seconds`.",
        ),
        Setting(
            "jobs.poll_interval",
            Duration(positive=True, max=1.0),
            1.0,
            "Longest wait between looks for new jobs when no notification comes (at most 1 s).",
        ),
        Setting(
            "jobs.default_timeout",
            Duration(positive=True),
            3600.0,
            "How long one attempt may run, for jobs and job types that set no timeout.",
        ),
        Setting(
            "jobs.default_max_attempts",
            Integer(min=1),
            3,
            "Attempts a job gets, for jobs and job types that set no `max_attempts`.",
        ),
        Setting(
            "jobs.backoff_base",
            Duration(),
            1.0,
            "Retry delay ceiling after the first failed attempt: the delay is drawn at random"
            " (full jitter) below min(`backoff_max`, `backoff_base` * `backoff_factor` **"
            " (attempt - 1)).",
        ),
        Setting(
            "jobs.backoff_factor",
            Number(min=1),
            2.0,
            "How much the retry delay ceiling grows with each failed attempt.",
        ),
        Setting("jobs.backoff_max", Duration(), 300.0, "The longest retry delay."),
        Setting(
            "jobs.retention",
            Duration(),
            7 * 86400.0,
            "Finished jobs (completed, failed, canceled) older than this are deleted (0: kept"
            " forever). A job's own `result_ttl` (set at submit, or its handler's default)"
            " overrides it for that job, shorter or longer.",
        ),
        Setting(
            "jobs.prune_interval",
            Duration(min=1),
            60.0,
            "How often a node deletes the finished jobs past their `result_ttl` or"
            " `jobs.retention`: a job goes at the first prune after its time (checked every 5s,"
            " so a shorter interval acts as 5s).",
        ),
        Setting(
            "jobs.max_payload_bytes",
            Size(min=2),
            DEFAULT_MAX_PAYLOAD_BYTES,
            "Largest payload a submit may carry, counted as its JSON in UTF-8; a larger one is"
            f" refused (`invalid_params`). At most {MAX_PAYLOAD_BYTES // MiB}MiB.",
            check=_at_most_max_payload,
        ),
        Setting(
            "jobs.max_result_bytes",
            Size(min=2),
            DEFAULT_MAX_RESULT_BYTES,
            "Largest result a handler may return, counted as its JSON in UTF-8; a larger one"
            " fails the attempt for good (`last_error.type` `ResultTooLarge`), checked in the"
            f" worker so that it never reaches the daemon. At most {MAX_PAYLOAD_BYTES // MiB}MiB.",
            check=_at_most_max_payload,
        ),
    ),
    JobsConfig,
)


QUEUES = Section(
    "queues",
    "Per-queue limits: on this node and across the fleet.",
    (
        Setting(
            "queues",
            Queues(),
            {},
            "Limits of each queue: queue name → any of `concurrency` (the most jobs of it"
            " running at once on this node), `global_concurrency` (the most running at once"
            " across all nodes) and `rate` (the most started per second or per minute across"
            " all nodes, written `10/s` or `600/m`). Queues not listed are limited by the"
            " workers only. Every node should have the same fleet-wide limits; `jobctl queues"
            " limit` sets them for the whole fleet at runtime, over the file's. In the"
            ' environment, the per-node concurrency only: "emails=4,reports=1".',
        ),
    ),
)


SCHEDULES = Section(
    "schedules",
    "Periodic jobs (docs/schedules.md).",
    (
        Setting(
            "schedules",
            Schedules(),
            {},
            "Jobs submitted on a schedule: schedule name → its definition: `cron` (five fields)"
            " or `every` (an interval), `type`, `payload`, and optionally `timezone` (cron only;"
            " default UTC), `queue`, `priority`, `max_attempts`, `timeout`, `catch_up` (skip,"
            " once or all; default once), `catch_up_window` (default 1d) and `overlap` (allow or"
            " skip; default allow). Only in the configuration file ([schedules](schedules.md)).",
        ),
    ),
)


SHUTDOWN = Section(
    "shutdown",
    "How the daemon drains on SIGTERM or SIGINT.",
    (
        Setting(
            "shutdown.drain_timeout",
            Duration(),
            30.0,
            "On SIGTERM or SIGINT, how long running jobs may finish before they are stopped and"
            " returned to pending.",
        ),
        Setting(
            "shutdown.kill_grace",
            Duration(),
            5.0,
            "Time between SIGTERM and SIGKILL when a worker is stopped (timeout, cancel, drain).",
        ),
    ),
    ShutdownConfig,
)


HTTP = Section(
    "http",
    "The HTTP shim (`jobd http`, or started by `jobd run`).",
    (
        Setting(
            "http.listen",
            HostPort(),
            None,
            f"Where the HTTP shim listens. Unset: `jobd run` starts no HTTP shim, and `jobd http`"
            f" listens on `{DEFAULT_HTTP_LISTEN}`.",
            env="JOBD_HTTP_LISTEN",
            flag="--listen",
        ),
        Setting(
            "http.tokens",
            ListOf(Text(), noun="tokens"),
            (),
            "Bearer tokens the HTTP shim accepts; at least one is needed to listen on a"
            " non-loopback address. Prefer the environment variable to the file.",
            env="JOBD_HTTP_TOKENS",
            secret=True,
        ),
        Setting(
            "http.read_only_tokens",
            ListOf(Text(), noun="tokens"),
            (),
            "Bearer tokens that may read everything the HTTP shim serves (the API and the"
            " dashboard) and change nothing: a change is refused with 403.",
            env="JOBD_HTTP_READ_ONLY_TOKENS",
            secret=True,
        ),
        Setting(
            "http.ui",
            Boolean(),
            True,
            "Serve the dashboard at `/ui/` (docs/dashboard.md).",
        ),
        Setting(
            "http.secure_cookie",
            Boolean(),
            True,
            "Mark the dashboard's session cookie Secure (sent over HTTPS only). Turn it off only"
            " for a plain-HTTP shim that no TLS proxy fronts.",
        ),
        Setting(
            "http.max_body_bytes",
            Size(min=1024),
            MiB,
            "Largest request body the HTTP shim accepts (413 above it).",
        ),
        Setting(
            "http.request_timeout",
            Duration(positive=True),
            30.0,
            "How long the HTTP shim waits for a client to send its request.",
        ),
        Setting(
            "http.header_timeout",
            Duration(positive=True),
            HTTP_HEADER_TIMEOUT,
            "How long a connection that has not yet sent a valid token has for its request line"
            " and headers, so idle strangers cannot hold the shim's connections.",
        ),
        Setting(
            "http.max_connections_per_peer",
            Integer(min=1),
            HTTP_MAX_CONNECTIONS_PER_PEER,
            "HTTP connections one peer address may hold at once (behind a reverse proxy every"
            " client shares the proxy's address).",
        ),
    ),
    HttpConfig,
)


LOGGING = Section(
    "logging",
    "Logs, written to stderr.",
    (
        Setting(
            "logging.level",
            Text(choices=LOG_LEVELS, fold=str.upper),
            "INFO",
            "Least severe level logged.",
            flag="--log-level",
        ),
        Setting(
            "logging.format",
            Text(choices=("json", "text"), fold=str.lower),
            "json",
            "`json`: one JSON object a line (for journald and log shippers); `text`: for a human at"
            " a terminal.",
            flag="--log-format",
        ),
        Setting(
            "logging.job_events",
            Boolean(),
            False,
            "Log every job's transitions (submitted, started, and each end of an attempt, with"
            " `from` and `to`) at INFO; when false they are logged at DEBUG, keeping the hot path"
            " quiet at thousands of jobs a second.",
        ),
    ),
    LoggingConfig,
)


def core_sections(sample_types: tuple[str, ...]) -> tuple[Section, ...]:
    """jobd's own sections, in the order of the docs; `sample_types` are the job types that
    `handlers.samples` may enable."""
    return (
        DATABASE,
        CONTROL,
        WORKERS,
        _handlers(sample_types),
        JOBS,
        QUEUES,
        SCHEDULES,
        SHUTDOWN,
        HTTP,
        LOGGING,
    )
