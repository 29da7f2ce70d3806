"""HTML from the Jinja2 templates in templates/, and the files of static/.

Autoescaping is on for every template, so every value a page shows -- a payload, an error
message, a type name, a filter typed into the form -- is text, never markup; no HTML is built
by joining strings anywhere.  The templates and static files ship inside the wheel (they are
files of the jobd package); nothing is fetched from elsewhere, nothing is built.
"""

from __future__ import annotations

import json
import mimetypes
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

HERE = Path(__file__).parent
STATIC = HERE / "static"
LARGE_JSON = 4096  # characters of pretty JSON above which a block starts folded

STATES = ("waiting", "pending", "running", "completed", "failed", "canceled")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def utc_text(value: str | None) -> str:
    """An ISO time as the page shows it before the browser's script puts it in local time."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def unix_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pretty_json=pretty_json,
        utc_text=utc_text,
        unix_iso=unix_iso,
        duration=duration_text,
    )
    env.globals.update(STATES=STATES, LARGE_JSON=LARGE_JSON)
    return env


def render(template: str, context: dict[str, Any], fragment: bool = False) -> bytes:
    """The page; with `fragment`, only its `main` block (what the page's script swaps in:
    base.html leaves out everything around it)."""
    return environment().get_template(template).render(context, fragment=fragment).encode()


@cache
def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of static/ by name, with its media type: read once, served from memory."""
    files = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if media.startswith("text/") or media.endswith(("javascript", "json", "svg+xml")):
                media += "; charset=utf-8"
            files[path.name] = (path.read_bytes(), media)
    return files
