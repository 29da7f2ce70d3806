"""The parameters of the control methods that operate the queues (docs/protocol.md, "Operating
the queues"): pause and resume, fleet-wide limits, the queues' summary, bulk actions by
filter, run-now and priority of a pending job, and the audit trail.  Pure, like jobd.protocol,
whose method table lists these (QUEUE_METHODS).

Every method that changes something takes an optional `actor`: who a proxy acts for (the HTTP
shim sends `token:<fingerprint>`), recorded in the audit trail next to the socket's peer."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jobd import fields, queue_limits
from jobd.limits import BULK_BATCH, MAX_BULK_LIMIT
from jobd.store.base import JobFilter
from jobd.store.queues import MAX_AUDIT_LIMIT, BulkAction, LimitChange

DEFAULT_AUDIT_LIMIT = 100
MAX_REASON = 1000  # characters of a pause's reason
MAX_ACTOR = 200


def _actor(params: Mapping[str, Any]) -> str | None:
    actor: str | None = fields.text(params, "actor")
    if actor is not None and not 0 < len(actor) <= MAX_ACTOR:
        raise fields.invalid("actor", f"must be 1 to {MAX_ACTOR} characters")
    return actor


def _name(params: Mapping[str, Any]) -> str:
    name = fields.text(params, "name")
    if not name:
        raise fields.invalid("name", "required: the queue's name")
    return str(name)


@dataclass(frozen=True, slots=True)
class QueuesParams:
    pass


@dataclass(frozen=True, slots=True)
class PauseParams:
    name: str
    reason: str | None = None
    actor: str | None = None


def parse_pause(params: Mapping[str, Any]) -> PauseParams:
    reason = fields.text(params, "reason")
    if reason is not None and len(reason) > MAX_REASON:
        raise fields.invalid("reason", f"at most {MAX_REASON} characters")
    return PauseParams(_name(params), reason, _actor(params))


def parse_resume(params: Mapping[str, Any]) -> PauseParams:
    return PauseParams(_name(params), None, _actor(params))


@dataclass(frozen=True, slots=True)
class LimitParams:
    """`queue_limit`: the queue's runtime limits for the whole fleet (docs/adr/0032):
    `global_concurrency`, `rate` (`10/s`, `600/m`); `reset` drops the runtime values first,
    so the nodes' file values apply again.  A queue need not have jobs yet."""

    name: str
    change: LimitChange
    actor: str | None = None

    def details(self) -> dict[str, Any]:
        """The arguments as the audit trail records them (those given)."""
        c = self.change
        given = {
            "global_concurrency": c.global_concurrency,
            "rate": None if c.rate is None else str(c.rate),
            "reset": c.reset or None,
        }
        return {k: v for k, v in given.items() if v is not None}


def parse_limit(params: Mapping[str, Any]) -> LimitParams:
    name = _name(params)
    value = params.get("global_concurrency")
    concurrency = None
    if value is not None:
        try:
            concurrency = queue_limits.concurrency(value)
        except queue_limits.LimitError as exc:
            raise fields.invalid("global_concurrency", str(exc)) from None
    rate_text = params.get("rate")
    rate = None
    if rate_text is not None:
        try:
            rate = queue_limits.Rate.parse(rate_text)
        except queue_limits.LimitError as exc:
            raise fields.invalid("rate", str(exc)) from None
    reset = fields.flag(params, "reset")
    if concurrency is None and rate is None and not reset:
        raise fields.invalid(
            "global_concurrency", "give global_concurrency, rate or reset (none was given)"
        )
    return LimitParams(name, LimitChange(concurrency, rate, reset), _actor(params))


@dataclass(frozen=True, slots=True)
class BulkParams:
    """A bulk action's filter (the list's, and `schedule`), how many jobs this call may change
    (`limit`), how many one transaction may (`batch`), where a previous call stopped
    (`after`, from its `next_cursor`), and `dry_run`: only count the matching jobs."""

    action: BulkAction
    filters: JobFilter
    limit: int = MAX_BULK_LIMIT
    batch: int = BULK_BATCH
    after: int = 0
    dry_run: bool = False
    actor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The filter as the audit trail records it (the members given)."""
        f = self.filters
        given = {
            "state": [s.value for s in f.states] or None,
            "type": f.type,
            "queue": f.queue,
            "created_after": None if f.created_after is None else f.created_after.isoformat(),
            "created_before": None if f.created_before is None else f.created_before.isoformat(),
            "schedule": f.schedule,
        }
        return {k: v for k, v in given.items() if v is not None}

    def cursor(self, last_id: int) -> str:
        """The continuation after `last_id`, bound to this action and filter."""
        text = json.dumps({"a": last_id, "f": self.fingerprint()})
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def fingerprint(self) -> str:
        canonical = json.dumps([self.action.value, self.to_dict()], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _bulk(action: BulkAction) -> Callable[[Mapping[str, Any]], BulkParams]:
    def parse(params: Mapping[str, Any]) -> BulkParams:
        filters = JobFilter(
            states=fields.states(params),
            type=fields.text(params, "type"),
            queue=fields.text(params, "queue"),
            created_after=fields.time(params, "created_after"),
            created_before=fields.time(params, "created_before"),
            schedule=fields.text(params, "schedule"),
        )
        if filters == JobFilter():
            raise fields.invalid(
                "state",
                "a bulk action needs a filter (state, type, queue, created_after,"
                " created_before or schedule): give state to act on every job in it",
            )
        limit = fields.integer(params, "limit", MAX_BULK_LIMIT)
        if not 1 <= limit <= MAX_BULK_LIMIT:
            raise fields.invalid("limit", f"must be 1 to {MAX_BULK_LIMIT}")
        batch = fields.integer(params, "batch", BULK_BATCH)
        if not 1 <= batch <= BULK_BATCH:
            raise fields.invalid("batch", f"must be 1 to {BULK_BATCH}")
        dry_run = fields.flag(params, "dry_run")
        bulk = BulkParams(action, filters, limit, batch, 0, dry_run, _actor(params))
        cursor = fields.text(params, "cursor")
        if cursor is None:
            return bulk
        after = _decode_cursor(cursor, bulk.fingerprint())
        return BulkParams(action, filters, limit, batch, after, bulk.dry_run, bulk.actor)

    return parse


def _decode_cursor(cursor: str, fingerprint: str) -> int:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        value = None
    if not (isinstance(value, dict) and isinstance(value.get("a"), int)):
        raise fields.invalid("cursor", f"not a cursor this server issued: {cursor[:50]!r}")
    if value.get("f") != fingerprint:
        raise fields.invalid("cursor", "was issued for another action or filter")
    return int(value["a"])


@dataclass(frozen=True, slots=True)
class AdjustParams:
    id: int
    run_now: bool = False
    priority: int | None = None
    actor: str | None = None


def _id(params: Mapping[str, Any]) -> int:
    value = fields.integer(params, "id")
    if value is None:
        raise fields.invalid("id", "required")
    return int(value)


def parse_run_now(params: Mapping[str, Any]) -> AdjustParams:
    return AdjustParams(_id(params), run_now=True, actor=_actor(params))


def parse_priority(params: Mapping[str, Any]) -> AdjustParams:
    priority = fields.integer(params, "priority")
    if priority is None:
        raise fields.invalid("priority", "required")
    if not -(2**31) <= priority < 2**31:
        raise fields.invalid("priority", "must fit in 32 bits")
    return AdjustParams(_id(params), priority=priority, actor=_actor(params))


@dataclass(frozen=True, slots=True)
class AuditParams:
    limit: int = DEFAULT_AUDIT_LIMIT
    before: int | None = None


def parse_audit(params: Mapping[str, Any]) -> AuditParams:
    limit = fields.integer(params, "limit", DEFAULT_AUDIT_LIMIT)
    if limit < 1:
        raise fields.invalid("limit", "must be at least 1")
    return AuditParams(min(limit, MAX_AUDIT_LIMIT), fields.integer(params, "before"))


def _no_params(params: Mapping[str, Any]) -> QueuesParams:
    return QueuesParams()


#: (name, parse, read_only) of each method, for jobd.protocol.METHODS.
QUEUE_METHODS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any], bool], ...] = (
    ("queues", _no_params, True),
    ("queue_pause", parse_pause, False),
    ("queue_resume", parse_resume, False),
    ("queue_limit", parse_limit, False),
    ("cancel_many", _bulk(BulkAction.CANCEL), False),
    ("retry_many", _bulk(BulkAction.RETRY), False),
    ("purge", _bulk(BulkAction.PURGE), False),
    ("run_now", parse_run_now, False),
    ("set_priority", parse_priority, False),
    ("audit", parse_audit, True),
)
