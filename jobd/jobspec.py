"""The job spec: what a client asks for when it submits a job, and the one reading and checking
of it that every way of submitting goes through -- jobctl and jobd.Client before sending, the
HTTP shim, the control protocol's `submit` and `submit_many`, and jobd.enqueue.

    {"type": …, "payload": …, "delay": …} ──parse_job_spec──► JobSpec ──to_new_job──► NewJob
    (wire JSON, or keyword arguments)        (types, delay)                (domain rules)

The checks are split by what they need: the members' types and the submit-only options (`delay`
and its cap, run_at or delay) are read here; the rules of a stored job (name lengths, priority
range, attempts, timeout bounds, key lengths) are the domain's (jobd.domain.NewJob), applied when
the spec becomes a NewJob, and so are the values every store can hold (jobd.store.values: no
NUL or lone surrogate in a string, a run_at from year 1 to the end of year 9999 in UTC).  The
payload's size is checked by whoever knows the limit (`check_payload_size`): the control server
with jobs.max_payload_bytes, jobd.enqueue with MAX_PAYLOAD_BYTES.  Every refusal is
InvalidParams carrying `field` and `problem`.  The SQL function jobd_enqueue() checks the
domain's limits again for SQL-only callers; tests/integration/test_enqueue.py holds the two to
the same values.

Pure: no I/O, no clock (the time a delay counts from is passed in).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from jobd import fields
from jobd.domain import (
    DEFAULT_QUEUE,
    MAX_NAME_LENGTH,
    MAX_PARENTS,
    BatchRef,
    InvalidJob,
    NewJob,
    ParentFailure,
)
from jobd.errors import InvalidParams, JobdError
from jobd.store.values import check_new_job

#: A `delay` beyond ten years is a mistake, not a plan.
MAX_DELAY = 10 * 365 * 86400.0
#: The largest payload any way of submitting accepts (its JSON encoding in UTF-8), and the
#: default of jobs.max_payload_bytes, which may only lower it.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: jobs.max_result_bytes: the largest result a handler may return (checked in the worker).
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024


class SubmitOptions(TypedDict, total=False):
    """A submit's options as Python callers pass them (jobd.Client.submit, jobd.enqueue), as
    keyword arguments; None is "not given".  run_at may be a datetime or ISO-8601 text."""

    queue: str | None
    priority: int | None
    max_attempts: int | None
    run_at: datetime | str | None
    delay: float | None
    timeout: float | None
    idempotency_key: str | None
    correlation_id: str | None
    #: The jobs this one waits for: ids, or (in a batch) the names of the batch's jobs.
    after: Sequence[int | str] | None
    on_parent_failure: str | None  # "cancel" (the default) or "run"
    #: Seconds the job is kept once it ended, overriding jobs.retention (0: the next prune).
    result_ttl: float | None


#: The members of a spec; `name` is a batch's own (a job's name there, for `after`).
SUBMIT_FIELDS = frozenset(("type", "payload", "name", *SubmitOptions.__annotations__))

PayloadValidator = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A submit, type-checked.  Options left None take the handler's or the daemon's default,
    filled in by to_new_job."""

    type: str
    payload: dict[str, Any]
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int | None = None
    run_at: datetime | None = None
    delay: float | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    #: The job's name in its batch (not stored): what other jobs of the batch put in `after`.
    name: str | None = None
    #: Job ids; names of jobs of the batch (a single submit refuses them); BatchRefs, once a
    #: batch's names are resolved (named_batch).
    after: tuple[int | str | BatchRef, ...] = ()
    on_parent_failure: str | None = None
    result_ttl: float | None = None

    def to_new_job(
        self,
        max_attempts: int,
        correlation_id: str | None,
        now: datetime,
        result_ttl: float | None = None,
    ) -> NewJob:
        """The NewJob to store; `max_attempts`, `correlation_id` and `result_ttl` (the
        handler's default) are used when the client gave none, `now` turns a delay into
        run_at.  InvalidParams names the field."""
        run_at = self.run_at
        if self.delay is not None:
            run_at = now + timedelta(seconds=self.delay)
        after = self._parents({})
        try:
            new_job = NewJob(
                type=self.type,
                payload=self.payload,
                queue=self.queue,
                priority=self.priority,
                max_attempts=self.max_attempts if self.max_attempts is not None else max_attempts,
                run_at=run_at,
                timeout=self.timeout,
                idempotency_key=self.idempotency_key,
                correlation_id=self.correlation_id or correlation_id,
                after=after,
                on_parent_failure=self.on_parent_failure or ParentFailure.CANCEL,  # type: ignore[arg-type]
                result_ttl=self.result_ttl if self.result_ttl is not None else result_ttl,
            )
        except InvalidJob as exc:
            raise InvalidParams.of_field(exc.field, exc.problem) from None
        check_new_job(new_job)
        return new_job

    def with_names(self, names: Mapping[str, int]) -> JobSpec:
        """The spec with the batch's `names` (name -> position) in `after` resolved."""
        return dataclasses.replace(self, after=self._parents(names))

    def _parents(self, names: Mapping[str, int]) -> tuple[int | BatchRef, ...]:
        out: list[int | BatchRef] = []
        for index, parent in enumerate(self.after):
            if isinstance(parent, str):
                if parent not in names:
                    raise fields.invalid(f"after[{index}]", f"no job named {parent!r} in the batch")
                out.append(BatchRef(names[parent]))
            else:
                out.append(parent)
        return tuple(out)

    def to_params(self) -> dict[str, Any]:
        """The spec as the protocol's submit params: the members given, times as ISO-8601."""
        params: dict[str, Any] = {"type": self.type}
        if self.payload:
            params["payload"] = self.payload
        if self.queue != DEFAULT_QUEUE:
            params["queue"] = self.queue
        if self.priority:
            params["priority"] = self.priority
        optional = {
            "max_attempts": self.max_attempts,
            "run_at": None if self.run_at is None else self.run_at.isoformat(),
            "delay": self.delay,
            "timeout": self.timeout,
            "idempotency_key": self.idempotency_key,
            "correlation_id": self.correlation_id,
            "name": self.name,
            "after": [p for p in self.after if not isinstance(p, BatchRef)] or None,
            "on_parent_failure": self.on_parent_failure,
            "result_ttl": self.result_ttl,
        }
        params.update((name, value) for name, value in optional.items() if value is not None)
        return params


_TYPE_AND_PAYLOAD = frozenset({"type", "payload"})


def parse_job_spec(params: Mapping[str, Any]) -> JobSpec:
    """Read a spec from the submit params (members this version does not know are ignored:
    the protocol evolves by adding them).  InvalidParams names the member at fault."""
    if not isinstance(params, Mapping):
        raise fields.invalid("params", "must be an object")
    job_type = fields.required(params, "type")
    if not isinstance(job_type, str):
        raise fields.invalid("type", "must be a string")
    payload = params.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise fields.invalid("payload", "must be a JSON object")
    if params.keys() <= _TYPE_AND_PAYLOAD:
        # Nothing else given, so every other member is its default: the usual job of a big
        # submit_many, spared nine readers that would each find nothing.
        return JobSpec(type=job_type, payload=payload)
    run_at = fields.time(params, "run_at")
    delay = fields.number(params, "delay")
    if run_at is not None and delay is not None:
        raise fields.invalid("delay", "give run_at or delay, not both")
    if delay is not None and not 0 <= delay <= MAX_DELAY:
        raise fields.invalid("delay", "must be between 0 and 10 years of seconds")
    return JobSpec(
        type=job_type,
        payload=payload,
        queue=fields.text(params, "queue", DEFAULT_QUEUE),
        priority=fields.integer(params, "priority", 0),
        max_attempts=fields.integer(params, "max_attempts"),
        run_at=run_at,
        delay=delay,
        timeout=fields.number(params, "timeout"),
        idempotency_key=fields.text(params, "idempotency_key"),
        correlation_id=fields.text(params, "correlation_id"),
        name=_name(params),
        after=_after(params),
        on_parent_failure=_on_parent_failure(params),
        result_ttl=_result_ttl(params),
    )


def _name(params: Mapping[str, Any]) -> str | None:
    name: str | None = fields.text(params, "name")
    if name is not None and not 0 < len(name) <= MAX_NAME_LENGTH:
        raise fields.invalid("name", f"must be 1 to {MAX_NAME_LENGTH} characters")
    return name


def _after(params: Mapping[str, Any]) -> tuple[int | str, ...]:
    """`after`: job ids, or names of jobs of the same batch."""
    after = params.get("after")
    if after is None:
        return ()
    if isinstance(after, str | bytes) or not isinstance(after, Sequence):
        raise fields.invalid("after", "must be an array of job ids (or names in a batch)")
    if len(after) > MAX_PARENTS:
        raise fields.invalid("after", f"must name at most {MAX_PARENTS} jobs")
    for index, parent in enumerate(after):
        is_id = isinstance(parent, int) and not isinstance(parent, bool) and 0 < parent < 2**63
        if not is_id and not (isinstance(parent, str) and parent):
            raise fields.invalid(f"after[{index}]", "must be a job id or a name of the batch")
    return tuple(after)


def _result_ttl(params: Mapping[str, Any]) -> float | None:
    value: float | None = fields.number(params, "result_ttl")
    if value is not None and value < 0:
        raise fields.invalid("result_ttl", "must be >= 0 (seconds; 0: dropped at the next prune)")
    return value


def _on_parent_failure(params: Mapping[str, Any]) -> str | None:
    value: str | None = fields.text(params, "on_parent_failure")
    if value is not None and value not in ParentFailure.__members__.values():
        raise fields.invalid("on_parent_failure", "must be cancel or run")
    return value


def named_batch(specs: Sequence[JobSpec]) -> tuple[list[JobSpec], dict[str, int]]:
    """A batch's jobs with the names in their `after` resolved to positions in the batch, and
    the names; a name used twice, or one no job of the batch has, is refused naming the job."""
    names = batch_names(specs)
    resolved = []
    for index, spec in enumerate(specs):
        try:
            resolved.append(spec.with_names(names) if spec.after else spec)
        except InvalidParams as exc:
            raise in_batch(exc, index) from None
    return resolved, names


def batch_names(specs: Sequence[JobSpec]) -> dict[str, int]:
    """The names of a batch's jobs, each to its position; a name used twice is refused."""
    names: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.name is None:
            continue
        if spec.name in names:
            raise InvalidParams.of_field(
                f"jobs[{index}].name", f"{spec.name!r} names jobs[{names[spec.name]}] already"
            )
        names[spec.name] = index
    return names


def unknown_fields(job: Mapping[str, Any]) -> list[str]:
    """The members of `job` that are no submit field, sorted (a typo in a batch file or an
    HTTP body is refused rather than silently ignored)."""
    return sorted(set(job) - SUBMIT_FIELDS)


def payload_size(payload: Mapping[str, Any]) -> int:
    """Bytes of the payload's compact JSON encoding in UTF-8 (what the limit counts)."""
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParams.of_field("payload", f"not representable as JSON: {exc}") from None
    return len(text.encode("utf-8", "surrogatepass"))


def check_payload_size(payload: Mapping[str, Any], limit: int, setting: str) -> None:
    """Refuse a payload over `limit` bytes; `setting` names where the limit comes from."""
    size = payload_size(payload)
    if size > limit:
        raise InvalidParams.of_field(
            "payload", f"is {size} bytes of JSON, more than the {limit} allowed ({setting})"
        )


def check_payload(validator: PayloadValidator, job_type: str, payload: dict[str, Any]) -> None:
    """Run a handler's payload validator; its ValueError becomes InvalidParams on `payload`."""
    try:
        validator(payload)
    except ValueError as exc:
        raise InvalidParams.of_field(
            "payload", f"rejected by the {job_type!r} handler: {exc}", type=job_type
        ) from None


def in_batch(error: JobdError, index: int) -> JobdError:
    """`error`, about the job at `index` of a submit_many: its field becomes `jobs[3].type`
    (`jobs[3]` for the job as a whole) and `index` joins its data."""
    if error.problem is None:
        return error
    relative = error.field or ""
    where = f"jobs[{index}]"
    data = {k: v for k, v in error.data.items() if k not in ("field", "problem")}
    field = f"{where}.{relative}" if relative else where
    return type(error).of_field(field, error.problem, index=index, **data)
