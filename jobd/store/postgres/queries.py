"""The named SQL statements of the PostgreSQL store, loaded once from sql/postgres.sql.

The SQL lives in its own file so it reads (and is reviewed) as SQL; every module of the store
and the benchmarks take their statements from `QUERIES` by name."""

from __future__ import annotations

from importlib import resources


def load_queries(text: str) -> dict[str, str]:
    """Split a named-query file: each `-- name: x` line starts query x.  Comment lines are
    dropped (psycopg would read a % in a comment as a placeholder)."""
    queries: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            queries[name] = ""
        elif name is not None and stripped and not stripped.startswith("--"):
            queries[name] += line + "\n"
    return {n: q.strip() for n, q in queries.items()}


QUERIES = load_queries(
    resources.files("jobd.store").joinpath("sql/postgres.sql").read_text(encoding="utf-8")
)
