"""docs/openapi.yaml: a valid OpenAPI 3.1 document that describes exactly the shim's routes,
whose version is jobd's, and which the wheel carries to where the shim looks for it."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from jobd import __version__
from jobd.http import openapi
from jobd.http.api import ROUTES, SUBMIT_FIELDS

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.yaml"


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi.load_document(DOCUMENT)


def test_in_a_checkout_the_served_document_is_docs_openapi_yaml() -> None:
    assert openapi.document_path() == DOCUMENT
    assert json.loads(openapi.document_json()) == openapi.load_document(DOCUMENT)


def test_it_is_valid_openapi_3_1(document: dict) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    assert document["openapi"].startswith("3.1")
    validator.validate(document)


def test_its_version_is_jobds(document: dict) -> None:
    assert document["info"]["version"] == __version__


def test_it_describes_exactly_the_routes(document: dict) -> None:
    described = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = {(r.template, m) for r in ROUTES for m in r.handlers}
    assert described == served


def test_open_routes_and_only_they_drop_the_token(document: dict) -> None:
    for route in ROUTES:
        for method in route.handlers:
            operation = document["paths"][route.template][method.lower()]
            assert (operation.get("security") == []) == route.open, (route.template, method)


def test_submit_schema_lists_the_submit_fields(document: dict) -> None:
    schema = document["components"]["schemas"]["SubmitRequest"]
    assert set(schema["properties"]) == SUBMIT_FIELDS
    assert schema["additionalProperties"] is False


def test_non_string_keys_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths:\n  /x:\n    get:\n      responses:\n        200: {description: ok}\n")
    with pytest.raises(ValueError, match="keys must be strings"):
        openapi.load_document(bad)


def test_the_wheel_carries_the_document_where_the_shim_looks(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    with open(ROOT / "pyproject.toml", "rb") as f:
        force_include = tomllib.load(f)["tool"]["hatch"]["build"]["targets"]["wheel"][
            "force-include"
        ]
    packaged = openapi.PACKAGED.relative_to(ROOT).as_posix()
    assert force_include["docs/openapi.yaml"] == packaged
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(packaged) == DOCUMENT.read_bytes()
