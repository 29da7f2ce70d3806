"""Acting on every job the list's filters match: retry, cancel or purge, through the control
protocol's bulk methods (`retry_many`, `cancel_many`, `purge`).

    GET  /ui/jobs/matching?action=…&<filters>   how many jobs match (a dry run), and a form
                                                  to confirm
    POST /ui/jobs/matching                        one step of the action: batches until done
                                                  or STEP_SECONDS have passed; the answer
                                                  carries `next_cursor` to continue

A million matching jobs must neither hold one transaction nor one HTTP request: each call to
the daemon changes at most BULK_BATCH jobs (one transaction), and one request makes calls only
until its time is up, then answers with the continuation.  The page's script follows it step
after step; without the script, the result page has a "Continue" button that posts it.

The filter is the list's, with "created within" turned into an absolute `created_after` once,
when the count is shown: the continuation is bound to the filter, so the steps must send the
same one.  A filter that matches everything is refused, as the daemon refuses it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from jobd.http.api import Clients
from jobd.http.problems import invalid
from jobd.http.ui.pages import SINCE, list_filters
from jobd.limits import BULK_BATCH

#: The dashboard's actions by filter, and the control method each one is.
METHODS = {"retry": "retry_many", "cancel": "cancel_many", "purge": "purge"}
#: What each action is called on the page, as a verb and in the past tense.
VERBS = {
    "retry": ("Retry", "retried"),
    "cancel": ("Cancel", "canceled"),
    "purge": ("Purge", "purged"),
}
#: The filter's members the bulk methods take (the list's, less "created within").
MEMBERS = ("type", "queue", "schedule", "created_after", "created_before")
#: How long one request keeps starting batches: well inside the shim's request deadline, so
#: the answer (and the last batch under way) is never cut off.
STEP_SECONDS = 5.0


class Step(NamedTuple):
    """What one request did: jobs changed, jobs busy at that moment (locked by a claim or a
    finish, left for a later run), calls made, and where to continue (None: done)."""

    changed: int
    busy: int
    batches: int
    next_cursor: str | None


def action_of(values: dict[str, list[str]]) -> str:
    action = (values.get("action") or [""])[0]
    if action not in METHODS:
        raise invalid("action", f"must be one of {', '.join(METHODS)}")
    return action


def bulk_filter(values: dict[str, list[str]], now: datetime | None = None) -> dict[str, Any]:
    """The bulk methods' filter from the list's query (or a form carrying it): only the members
    given; "created within" as an absolute `created_after`, unless one is given.  A filter the
    bulk methods do not have (the workflow) is refused: dropping it would act on more jobs."""
    filters = list_filters(values)
    if filters.get("workflow"):  # the bulk methods have no such filter: never act on more
        raise invalid("workflow", "an action on every matching job cannot filter by workflow")
    params: dict[str, Any] = {k: filters[k] for k in MEMBERS if filters[k]}
    if filters["state"]:
        params["state"] = filters["state"]
    if filters["since"] in SINCE and not filters["created_after"]:
        after = (now or datetime.now(UTC)) - timedelta(seconds=SINCE[filters["since"]][1])
        params["created_after"] = after.isoformat(timespec="seconds").replace("+00:00", "Z")
    return params


def as_pairs(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The filter as form fields (a state per field), for the confirmation's hidden inputs."""
    pairs = [("state", s) for s in params.get("state", [])]
    return pairs + [(k, params[k]) for k in MEMBERS if k in params]


def describe(fields: list[tuple[str, str]]) -> str:
    """The filter in words, for the confirmation: `state failed, type resize`."""
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in fields)


def question(action: str, matched: int, fields: list[tuple[str, str]]) -> str:
    """What the script's dialog asks: `Retry 4 jobs that match state failed, type resize?`"""
    jobs = "1 job that matches" if matched == 1 else f"{matched} jobs that match"
    return f"{VERBS[action][0]} {jobs} {describe(fields)}?"


def count(clients: Clients, action: str, params: dict[str, Any], actor: str) -> int:
    """How many jobs the action would change now (the daemon's dry run)."""
    with clients.writer() as client:
        answer = client.call(METHODS[action], {**params, "dry_run": True, "actor": actor})
    return int(answer["matched"])


def step(
    clients: Clients,
    action: str,
    params: dict[str, Any],
    cursor: str | None,
    actor: str,
    seconds: float = STEP_SECONDS,
    batch: int = BULK_BATCH,
) -> Step:
    """Batches of the action from `cursor` until it is done or `seconds` have passed: one
    call per batch, so each call is one transaction and the time is checked between them."""
    started = time.monotonic()
    changed = busy = batches = 0
    call = {**params, "limit": batch, "batch": batch, "actor": actor}
    with clients.writer() as client:
        while True:
            if cursor is not None:
                call["cursor"] = cursor
            answer = client.call(METHODS[action], call)
            changed, busy = changed + answer["changed"], busy + answer["busy"]
            batches += answer["batches"]
            cursor = answer["next_cursor"]
            if cursor is None or time.monotonic() - started >= seconds:
                return Step(changed, busy, batches, cursor)


def form_int(values: dict[str, list[str]], name: str) -> int:
    """A running total carried by the "Continue" form (0 if absent or not a number)."""
    text = (values.get(name) or ["0"])[0]
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else 0


def message(action: str, changed: int, busy: int, remaining: int | None) -> str:
    """The result in a sentence, as the page and the script show it."""
    text = f"{changed} {'job' if changed == 1 else 'jobs'} {VERBS[action][1]}"
    if busy:
        text += f"; {busy} busy at that moment (run it again for them)"
    if remaining is not None:
        text += f"; {remaining} still {'matches' if remaining == 1 else 'match'}"
    return text
