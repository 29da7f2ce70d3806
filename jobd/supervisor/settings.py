"""The part of the configuration the supervisor reads (see jobd.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobd.domain import DEFAULT_MAX_ATTEMPTS, Backoff
from jobd.jobspec import DEFAULT_MAX_RESULT_BYTES
from jobd.queue_limits import FleetLimits
from jobd.schedules import Schedule

#: How long the first workers may take to start before the daemon gives up (seconds).
BOOT_TIMEOUT = 30.0
#: How long the side tasks (heartbeat, recovery, pruning, probe) may take to end once cancelled
#: at exit before they are left behind (seconds): each only has to leave a store call.
SIDE_TASK_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class SupervisorSettings:
    workers: int = 2
    handler_modules: tuple[str, ...] = ()
    prefetch: int = 0
    max_jobs_per_worker: int = 0
    max_worker_memory: int = 0
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    max_crashes: int = 3
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    poll_interval: float = 1.0
    default_timeout: float = 3600.0
    backoff: Backoff = field(default_factory=Backoff)
    queue_limits: dict[str, int] = field(default_factory=dict)  # per node: concurrency
    #: Fleet-wide limits from the file (`global_concurrency`, `rate`; ADR 0032).
    fleet_limits: dict[str, FleetLimits] = field(default_factory=dict)
    retention: float = 7 * 86400.0
    prune_interval: float = 60.0  # seconds between prunes (jobs.prune_interval)
    drain_timeout: float = 30.0
    kill_grace: float = 5.0
    job_events: bool = False  # log each job transition at INFO (else DEBUG)
    schedules: tuple[Schedule, ...] = ()  # the node's schedules (jobd.schedules.registry)
    default_max_attempts: int = DEFAULT_MAX_ATTEMPTS  # for schedules that set none
