"""The OpenAPI document the shim serves at /openapi.json.

The source of truth is `docs/openapi.yaml`, where people read and review it.  The wheel carries
the same file inside the package as `jobd/http/openapi.yaml` (pyproject force-includes it, as
it does the migrations), so an installed jobd serves it without a checkout; in a checkout the
file is read from docs/.  One file, two places it may be found: no copy to drift.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PACKAGED = Path(__file__).parent / "openapi.yaml"
SOURCE = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def document_path() -> Path:
    return PACKAGED if PACKAGED.is_file() else SOURCE


def load_document(path: Path | None = None) -> dict[str, Any]:
    """The document as data.  Every mapping key must be a string (a YAML key such as an
    unquoted `200` would not survive the trip to JSON unchanged)."""
    with open(path or document_path(), encoding="utf-8") as f:
        document = yaml.safe_load(f)
    if not isinstance(document, dict):
        raise ValueError(f"{path or document_path()}: the OpenAPI document is not a mapping")
    _check_keys(document, "")
    return document


def _check_keys(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise ValueError(f"openapi.yaml: {where}/{key!r}: keys must be strings (quote it)")
            _check_keys(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_keys(item, f"{where}/{index}")


@cache
def document_json() -> bytes:
    """The body of GET /openapi.json, made once."""
    return json.dumps(load_document(), ensure_ascii=False).encode()
