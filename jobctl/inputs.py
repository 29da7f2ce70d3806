"""What jobctl reads besides its options: a --payload given as JSON, a file or stdin, and the
jobs of a --batch file, each checked before anything is sent, and the line a refusal of one of
them names."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from jobd.client import job_params_from
from jobd.errors import InvalidParams, JobdError


def _read_text(source: str, what: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}", param_hint=what) from None


def parse_payload(text: str | None) -> dict[str, Any] | None:
    """--payload JSON, --payload @FILE or --payload - (stdin): a JSON object."""
    if text is None:
        return None
    if text == "-" or text.startswith("@"):
        text = _read_text(text if text == "-" else text[1:], "--payload")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None
    if not isinstance(value, dict):
        message = 'must be a JSON object, e.g. \'{"to": "a@b.c"}\''
        raise click.BadParameter(message, param_hint="--payload")
    return value


def read_batch(source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The jobs of a batch file: one JSON object per line (blank lines skipped), each checked
    here so a bad line is reported by its number before anything is submitted."""
    for number, line in enumerate(_read_text(source, "--batch").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except ValueError as exc:
            message = f"line {number}: not valid JSON: {exc}"
            raise click.BadParameter(message, param_hint="--batch") from None
        try:
            yield number, job_params_from(job)
        except InvalidParams as exc:
            message = f"line {number}: {exc.message}"
            raise click.BadParameter(message, param_hint="--batch") from None


def name_line(exc: JobdError, chunk: list[tuple[int, dict[str, Any]]]) -> str:
    """The daemon names a job by its place in the call (data `index`, field `jobs[3].type`);
    say its line instead."""
    index = exc.data.get("index")
    if not isinstance(index, int) or not 0 <= index < len(chunk) or exc.problem is None:
        return exc.message
    member = (exc.field or "").removeprefix(f"jobs[{index}]").removeprefix(".")
    where = f"line {chunk[index][0]}"
    return f"{where}: {member}: {exc.problem}" if member else f"{where}: {exc.problem}"
