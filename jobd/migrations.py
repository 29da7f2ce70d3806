"""Finding the numbered SQL migrations that ship with jobd.

Files are `migrations/<dialect>/NNNN_name.sql`.  In an installed wheel they live inside the
package (`jobd/_migrations/`); in a source checkout, at the top of the repository.  Applying them
is each store's business (it owns the connection and the lock)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file name without .sql, e.g. "0001_init"
    sql: str


def migrations_dir() -> Path:
    packaged = Path(__file__).parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def load(dialect: str) -> list[Migration]:
    """Every migration for `dialect` ("postgres" or "sqlite"), in order."""
    folder = migrations_dir() / dialect
    if not folder.is_dir():
        raise FileNotFoundError(f"no migrations folder for {dialect} at {folder}")
    found = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path.read_text("utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n without gaps: {versions}")
    return found
