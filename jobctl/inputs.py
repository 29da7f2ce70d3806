"""What jobctl reads besides its options: a --payload given as JSON, a file or stdin, and the
jobs of a --batch file, each checked before anything is sent."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from jobd.client import job_params_from
from jobd.errors import InvalidParams


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
