"""generate_report, run directly: grouping and aggregates, the three output formats, streaming
with progress and cancellation, and hostile or odd inputs."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobd.context import JobCancelled, JobContext
from jobd.domain import PermanentError
from jobd.handlers import registry
from jobd.samples import report, settings
from jobd.samples.paths import TEMP_SUFFIX
from jobd.samples.sections import FilesConfig, SmtpConfig
from jobd.testing import make_context

SALES = "region,amount\nnorth,10\nsouth,2.5\nnorth,5\nwest,\nnorth,x\n"


@pytest.fixture
def allowed(tmp_path: Path) -> Iterator[Path]:
    root = Path(os.path.realpath(tmp_path))
    (root / "data").mkdir()
    (root / "outside").mkdir()
    settings.configure(
        settings.HandlerSettings(
            smtp=SmtpConfig("localhost", 25, "none", None, None, None),
            files=FilesConfig((root / "data",)),
        )
    )
    yield root / "data"
    settings.configure(None)


def run(payload: dict[str, Any], ctx: JobContext | None = None) -> dict[str, Any]:
    report.check_spec(payload)
    return report.generate_report(ctx or make_context(job_id=3, type="generate_report"), payload)


def csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def invalid(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        report.check_spec(payload)
    with pytest.raises(PermanentError, match=match):
        report.generate_report(make_context(job_id=3, type="generate_report"), payload)


def refused(payload: dict[str, Any], match: str) -> None:
    report.check_spec(payload)
    with pytest.raises(PermanentError, match=match):
        report.generate_report(make_context(job_id=3, type="generate_report"), payload)


# --- reports ------------------------------------------------------------------------------


def test_registered_with_a_validator() -> None:
    spec = registry.get("generate_report")
    assert spec is not None and spec.validator is report.check_spec


def test_csv_in_csv_out(allowed: Path) -> None:
    (allowed / "sales.csv").write_text(SALES)
    result = run(
        {"input": "sales.csv", "group_by": "region", "value": "amount", "output": "out.csv"}
    )
    assert result == {
        "output": str(allowed / "out.csv"),
        "format": "csv",
        "rows_in": 5,
        "groups": 3,
        "values_skipped": 2,  # west's empty amount and north's "x"
    }
    assert csv_rows(allowed / "out.csv") == [
        ["region", "count", "sum", "min", "max", "mean"],
        ["north", "3", "15", "5", "10", "7.5"],
        ["south", "1", "2.5", "2.5", "2.5", "2.5"],
        ["west", "1", "", "", "", ""],
    ]


def test_jsonl_in_json_out(allowed: Path) -> None:
    lines = [
        {"team": "a", "ms": 10},
        {"team": "b", "ms": "20"},  # a numeric string counts
        {"team": "a", "ms": 2.5},
        {"team": 1, "ms": 1},  # a number as the key groups by its JSON form
        {"team": "1", "ms": 1},
        {"ms": 4},  # no key: the null group
        {"team": "a", "ms": True},  # true is not a number
        {"team": "a", "ms": None},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n"  # a blank line is skipped
    (allowed / "t.jsonl").write_text(text)
    result = run(
        {
            "input": "t.jsonl",
            "group_by": "team",
            "value": "ms",
            "aggregates": ["count", "mean", "max"],
            "output": "out.json",
            "title": "Timings",
        }
    )
    assert result["rows_in"] == 8 and result["groups"] == 4 and result["values_skipped"] == 2
    doc = json.loads((allowed / "out.json").read_text())
    assert doc["title"] == "Timings" and doc["rows_in"] == 8
    assert doc["groups"] == [
        {"key": None, "count": 1, "mean": 4.0, "max": 4},
        {"key": "1", "count": 2, "mean": 1.0, "max": 1},
        {"key": "a", "count": 4, "mean": 6.25, "max": 10},
        {"key": "b", "count": 1, "mean": 20.0, "max": 20},
    ]


def test_inline_records_and_count_only(allowed: Path) -> None:
    records = [{"k": "x"}, {"k": "y"}, {"k": "x"}]
    result = run({"records": records, "group_by": "k", "output": "c.csv"})
    assert result["rows_in"] == 3 and result["values_skipped"] == 0
    assert csv_rows(allowed / "c.csv") == [["k", "count"], ["x", "2"], ["y", "1"]]


def test_big_integers_stay_exact_and_overflowing_floats_become_empty(allowed: Path) -> None:
    records = [
        {"k": "int", "v": 2**70},
        {"k": "int", "v": 1},
        {"k": "float", "v": 1e308},
        {"k": "float", "v": 1e308},  # the sum overflows
        {"k": "odd", "v": "1e400"},  # infinite: skipped
        {"k": "odd", "v": "9" * 5000},  # past int()'s digit limit and float's range: skipped
        {"k": "odd", "v": float("nan")},
    ]
    result = run({"records": records, "group_by": "k", "value": "v", "output": "r.json"})
    assert result["values_skipped"] == 3
    groups = {g["key"]: g for g in json.loads((allowed / "r.json").read_text())["groups"]}
    assert groups["int"]["sum"] == 2**70 + 1
    assert groups["float"]["sum"] is None and groups["float"]["max"] == 1e308
    assert groups["odd"]["count"] == 3 and groups["odd"]["mean"] is None


def test_html_is_escaped_and_self_contained(allowed: Path) -> None:
    records = [
        {"who": "<script>alert('x')</script>", "n": 1},
        {"who": '"><img src=x onerror=alert(1)>', "n": 2},
        {"who": "Tom & Jerry", "n": 3},
    ]
    run(
        {
            "records": records,
            "group_by": "who",
            "value": "n",
            "output": "r.html",
            "title": "<b>Report</b>",
        }
    )
    page = (allowed / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Tom &amp; Jerry" in page and "&lt;b&gt;Report&lt;/b&gt;" in page
    assert "http" not in page and "src=" not in page.replace("img src=x", "")


def test_csv_cells_that_look_like_formulas_are_defused(allowed: Path) -> None:
    values = ['=HYPERLINK("http://evil")', "+1+1", "@SUM(A1)", "-5"]
    records = [{"=k": value} for value in values]
    run({"records": records, "group_by": "=k", "output": "r.csv"})
    rows = csv_rows(allowed / "r.csv")
    assert rows[0] == ["'=k", "count"]
    assert [r[0] for r in rows[1:]] == ["'+1+1", "-5", '\'=HYPERLINK("http://evil")', "'@SUM(A1)"]


def test_csv_with_a_byte_order_mark_and_an_empty_file(allowed: Path) -> None:
    (allowed / "bom.csv").write_bytes("\ufeffk,v\na,1\n".encode())
    assert (
        run({"input": "bom.csv", "group_by": "k", "value": "v", "output": "o.csv"})["groups"] == 1
    )
    (allowed / "empty.csv").write_bytes(b"")
    result = run({"input": "empty.csv", "group_by": "k", "output": "e.csv"})
    assert result["rows_in"] == 0 and result["groups"] == 0
    assert csv_rows(allowed / "e.csv") == [["k", "count"]]


def test_streams_a_large_input_with_progress(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "PROGRESS_EVERY", 20_000)
    with open(allowed / "big.jsonl", "w") as f:
        for i in range(100_000):
            f.write(f'{{"k": "g{i % 7}", "v": {i}}}\n')
    reports: list[Any] = []
    result = run(
        {"input": "big.jsonl", "group_by": "k", "value": "v", "output": "big.csv"},
        make_context(job_id=3, type="generate_report", on_progress=reports.append),
    )
    assert result["rows_in"] == 100_000 and result["groups"] == 7
    assert [r["rows"] for r in reports] == [20_000, 40_000, 60_000, 80_000, 100_000]
    total = sum(int(row[2]) for row in csv_rows(allowed / "big.csv")[1:])
    assert total == sum(range(100_000))


def test_cancelled_while_reading(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "PROGRESS_EVERY", 5_000)
    (allowed / "big.csv").write_text("k,v\n" + "a,1\n" * 50_000)
    stop = threading.Event()
    seen: list[Any] = []

    def on_progress(data: Any) -> None:
        seen.append(data)
        stop.set()

    with pytest.raises(JobCancelled):
        run(
            {"input": "big.csv", "group_by": "k", "value": "v", "output": "big.html"},
            make_context(job_id=3, type="generate_report", on_progress=on_progress, stop=stop),
        )
    assert seen == [{"rows": 5_000, "groups": 1}]
    assert not (allowed / "big.html").exists()
    assert not [p for p in allowed.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_too_many_groups(allowed: Path) -> None:
    records = [{"id": i} for i in range(11)]
    refused(
        {"records": records, "group_by": "id", "output": "r.csv", "max_groups": 10},
        "more than 10 groups",
    )
    assert not (allowed / "r.csv").exists()


# --- malformed inputs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.jsonl", b'{"k": 1}\n{"k": 2}\n{oops}\n', "line 3: not JSON"),
        ("a.jsonl", b'{"k": 1}\n[1, 2]\n', "line 2: not a JSON object"),
        ("a.jsonl", b"[" * 100_000 + b"\n", "line 1: nested too deeply"),
        ("a.jsonl", b'{"k": "\xff\xfe"}\n', "not UTF-8"),
        ("a.csv", b"k,v\n\xff,1\n", "not UTF-8"),
        ("a.csv", b"other,v\nx,1\n", "group_by: no column 'k' in the input \\(other, v\\)"),
        ("a.csv", b'k,v\n"' + b"x" * 200_000 + b'",1\n', "line .*field larger than field limit"),
    ],
)
def test_malformed_inputs_fail_permanently(
    allowed: Path, name: str, content: bytes, match: str
) -> None:
    (allowed / name).write_bytes(content)
    refused({"input": name, "group_by": "k", "output": "r.csv"}, match)
    assert not (allowed / "r.csv").exists()


def test_missing_value_column(allowed: Path) -> None:
    (allowed / "a.csv").write_text("k,x\na,1\n")
    refused({"input": "a.csv", "group_by": "k", "value": "v", "output": "r.csv"}, "value: no col")


def test_overlong_json_line(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_LINE", 1000)
    (allowed / "a.jsonl").write_text('{"k": "' + "x" * 5000 + '"}\n')
    refused({"input": "a.jsonl", "group_by": "k", "output": "r.csv"}, "line 1 is longer than")


# --- payloads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"group_by": "k", "output": "r.csv"}, "input: is required"),
        ({"input": "a.csv", "records": [], "group_by": "k", "output": "r.csv"}, "not both"),
        ({"records": {}, "group_by": "k", "output": "r.csv"}, "records: must be a list"),
        ({"records": [1], "group_by": "k", "output": "r.csv"}, r"records\[0\]: must be an obj"),
        ({"records": [], "output": "r.csv"}, "group_by: is required"),
        ({"records": [], "group_by": "", "output": "r.csv"}, "group_by: must not be empty"),
        ({"records": [], "group_by": "k"}, "output: is required"),
        ({"records": [], "group_by": "k", "output": "r.xlsx"}, "format: is required"),
        ({"records": [], "group_by": "k", "output": "r", "format": "pdf"}, "format: must be"),
        ({"input": "a.txt", "group_by": "k", "output": "r.csv"}, "input_format: is required"),
        ({"input": "../a.csv", "group_by": "k", "output": "r.csv"}, "input: must not contain"),
        ({"records": [], "group_by": "k", "output": "../r.csv"}, "output: must not contain"),
        (
            {"records": [], "input_format": "csv", "group_by": "k", "output": "r.csv"},
            "input_format: only for an input file",
        ),
        (
            {"records": [], "group_by": "k", "aggregates": ["median"], "output": "r.csv"},
            "aggregates: 'median' is not one of",
        ),
        (
            {"records": [], "group_by": "k", "aggregates": ["sum"], "output": "r.csv"},
            "value: is required for sum",
        ),
        ({"records": [], "group_by": "k", "aggregates": [], "output": "r.csv"}, "aggregates:"),
        (
            {"records": [], "group_by": "k", "output": "r.html", "title": "a\r\nb"},
            "title: must not contain line breaks",
        ),
        ({"records": [], "group_by": "k", "output": "r.csv", "max_groups": 0}, "max_groups:"),
        ({"records": [], "group_by": "k", "output": "r.csv", "sort": "desc"}, "sort: unknown"),
        ({"records": [], "group_by": ["k"], "output": "r.csv"}, "group_by: must be a string"),
    ],
)
def test_bad_payloads(allowed: Path, payload: dict[str, Any], match: str) -> None:
    invalid(payload, match)


def test_too_many_inline_records(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_INLINE_RECORDS", 5)
    invalid({"records": [{}] * 6, "group_by": "k", "output": "r.csv"}, "more than 5 records")


def test_paths_outside_the_allowed_dirs(allowed: Path) -> None:
    outside = allowed.parent / "outside"
    (outside / "secret.csv").write_text("k\na\n")
    refused(
        {"input": str(outside / "secret.csv"), "group_by": "k", "output": "r.csv"},
        "input: .* is outside files.allowed_dirs",
    )
    (allowed / "link.csv").symlink_to(outside / "secret.csv")
    refused({"input": "link.csv", "group_by": "k", "output": "r.csv"}, "through a symbolic link")
    (allowed / "out").symlink_to(outside)
    refused({"records": [], "group_by": "k", "output": "out/r.csv"}, "through a symbolic link")
    refused(
        {"records": [], "group_by": "k", "output": str(outside / "r.csv")},
        "output: .* is outside files.allowed_dirs",
    )
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]
