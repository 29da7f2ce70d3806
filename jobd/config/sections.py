"""The typed sections of jobd's own configuration: one frozen dataclass a section, each field one
row of the settings table (jobd.config.table checks that they match)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    schema: str
    pool_min: int
    pool_max: int
    statement_timeout: float
    connect_timeout: float
    network_timeout: float


@dataclass(frozen=True)
class ControlConfig:
    socket: Path
    socket_mode: int
    socket_group: str | None
    max_request_bytes: int
    max_connections: int
    idle_timeout: float


@dataclass(frozen=True)
class WorkersConfig:
    count: int
    max_jobs_per_worker: int
    max_memory: int
    max_crashes: int
    prefetch: int


@dataclass(frozen=True)
class HandlersConfig:
    modules: tuple[str, ...]
    samples: tuple[str, ...]


@dataclass(frozen=True)
class JobsConfig:
    lease_seconds: float
    heartbeat_seconds: float
    poll_interval: float
    default_timeout: float
    default_max_attempts: int
    backoff_base: float
    backoff_factor: float
    backoff_max: float
    retention: float
    prune_interval: float
    max_payload_bytes: int
    max_result_bytes: int


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout: float
    kill_grace: float


@dataclass(frozen=True)
class HttpConfig:
    listen: str | None
    tokens: tuple[str, ...]
    max_body_bytes: int
    request_timeout: float
    header_timeout: float
    max_connections_per_peer: int
    read_only_tokens: tuple[str, ...] = ()
    ui: bool = True
    secure_cookie: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    level: str
    format: str
    job_events: bool
