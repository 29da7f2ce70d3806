"""Hostile payloads for each sample handler, generated (docs/guarantees.md, "Bad input").  The
example-based tests next to this one (test_handler_email.py, test_handler_report.py,
test_handler_files.py) name each known attack; here hypothesis mixes them with everything else
a JSON payload can hold.

For every payload: the submit-time validator accepts it or raises ValueError; an accepted one,
run, returns a JSON result or raises PermanentError -- never another exception, which the
supervisor would take for a passing failure and retry -- and touches nothing outside
files.allowed_dirs; an accepted e-mail carries no header the payload smuggled in.
"""

from __future__ import annotations

import email
import json
import os
import threading
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobd.context import JobContext
from jobd.domain import PermanentError
from jobd.samples import files, mail, report
from jobd.samples import settings as handler_settings
from jobd.samples.mail import parse_address
from jobd.samples.sections import FilesConfig, SmtpConfig

EXAMPLES = int(os.environ.get("JOBD_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("JOBD_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """data/ (allowed) with inputs, a link out and a hard link; outside/ with a secret."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("hostile")))
    data, outside = root / "data", root / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("region,amount\nsecret,1\n")
    (data / "sales.csv").write_text("region,amount\nnorth,10\nsouth,1e308\nwest,1e308\n")
    (data / "big.csv").write_text(f"region,amount\nnorth,{10**400}\nnorth,{10**400}\n")
    (data / "rows.jsonl").write_text('{"region": "n", "amount": 1}\n[1]\n"x"\n{"amount": {}}\n')
    (data / "packed.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    (data / "link").symlink_to(outside)
    (data / "secret-link").symlink_to(outside / "secret")
    os.link(outside / "secret", data / "hard")
    handler_settings.configure(
        handler_settings.HandlerSettings(
            smtp=SmtpConfig("127.0.0.1", 9, "none", None, None, "jobs@example.com"),
            files=FilesConfig((data,)),
        )
    )
    yield root
    handler_settings.configure(None)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Everything outside data/: path -> (size, mtime)."""
    out = {}
    for path in root.rglob("*"):
        if path.is_relative_to(root / "data") or path.is_symlink():
            continue
        info = path.stat()
        out[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return out


def ctx(job_type: str) -> JobContext:
    return JobContext(1, job_type, 1, 3, "default", None, None, threading.Event(), lambda _: None)


# --- what payloads hold -----------------------------------------------------------------------

HOSTILE_TEXT = [
    "", " ", "\x00", "..", "../outside/secret", "data/../../outside/secret", "/etc/passwd",
    "/etc/shadow", "link/secret", "secret-link", "hard", "sales.csv", "rows.jsonl", "big.csv",
    "packed.gz", "out.csv", "out.json", "out.html", "report.htm", "new/out.csv", "sales.csv.gz",
    "~/x", ".", "/", "a" * 5000, "a@example.com", "Evil <evil@example.com>",
    "x\r\nBcc: evil@example.com", "a@example.com\nX-Injected: yes", "=?utf-8?q?x?=",
    "<script>alert(1)</script>", "=cmd|'/c calc'!A1", "\u202e", "\ud83d\ude00",
    "region", "amount", "count", "sum", "mean", "csv", "jsonl", "json", "html",
    "checksum", "count_lines", "compress", "decompress",
]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), 0, -1, 1, 9, 10, 1_000_001]),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(HOSTILE_TEXT), inner, max_size=4),
    ),
    max_leaves=10,
)


def payloads(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Any mix of the handler's fields holding anything (mostly refused at submit)."""
    known = st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))
    return st.one_of(known, known.map(lambda p: {**p, "unknown": 1}))


def shaped(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict]:
    """Payloads of the right shape with hostile contents: most get past the validator."""
    return st.fixed_dictionaries(required, optional=optional)


paths = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=12))
amounts = st.one_of(scalars, st.sampled_from(["1e308", "-1e308", str(10**400), "nan", "inf"]))
records = st.lists(
    st.one_of(
        st.fixed_dictionaries({"region": scalars, "amount": amounts}),
        values,
    ),
    max_size=6,
)
FILE_TASKS = shaped(
    {"operation": st.sampled_from([*files.OPERATIONS, "delete"]), "path": paths},
    {"output": paths, "level": scalars},
)
REPORTS = st.one_of(
    shaped(
        {"input": paths, "group_by": st.sampled_from(["region", "amount", "x"]), "output": paths},
        {"value": st.sampled_from(["amount", "region"]), "format": scalars, "title": scalars},
    ),
    shaped(
        {"records": records, "group_by": st.sampled_from(["region", "amount"]), "output": paths},
        {
            "value": st.sampled_from(["amount", "region", "x"]),
            "aggregates": st.lists(st.sampled_from(list(report.AGGREGATES)), max_size=5),
            "max_groups": scalars,
            "title": scalars,
        },
    ),
)
addresses = st.one_of(st.sampled_from(HOSTILE_TEXT), st.lists(st.sampled_from(HOSTILE_TEXT)))
EMAILS = shaped(
    {"to": addresses, "subject": st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30))},
    {"body": st.text(max_size=30), "cc": addresses, "bcc": addresses, "reply_to": addresses,
     "html": st.sampled_from(HOSTILE_TEXT)},
)  # fmt: skip


def run_checked(job_type: str, validator: Any, handler: Any, payload: dict[str, Any], root: Path):
    """Validate, run, and check the outcome is a JSON result or a PermanentError."""
    try:
        validator(payload)
    except ValueError:
        return None  # refused at submit: fine
    before = snapshot(root)
    inputs = set((root / "data").iterdir())
    try:
        result = handler(ctx(job_type), payload)
    except PermanentError:
        result = None
    else:
        json.dumps(result, allow_nan=False)
    finally:
        for made in set((root / "data").rglob("*")) - inputs:  # each example from the start
            if made.is_file() and not any(made.is_relative_to(p) for p in inputs):
                made.unlink()
    assert snapshot(root) == before, "something outside files.allowed_dirs changed"
    return result


# --- the properties ---------------------------------------------------------------------------


@SETTINGS
@given(payload=st.one_of(payloads(files.FIELDS), FILE_TASKS))
def test_process_file(tree: Path, payload: dict[str, Any]) -> None:
    result = run_checked("process_file", files.check_task, files.process_file, payload, tree)
    if result is not None and "output" in result:
        assert Path(result["output"]).resolve().is_relative_to(tree / "data")


@SETTINGS
@given(payload=st.one_of(payloads(report.FIELDS), REPORTS))
def test_generate_report(tree: Path, payload: dict[str, Any]) -> None:
    result = run_checked(
        "generate_report", report.check_spec, report.generate_report, payload, tree
    )
    if result is not None:
        assert Path(result["output"]).resolve().is_relative_to(tree / "data")


ALLOWED_HEADERS = {
    "from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding",
}  # fmt: skip


@SETTINGS
@given(payload=st.one_of(payloads(mail.FIELDS), EMAILS))
def test_send_email_message(tree: Path, payload: dict[str, Any]) -> None:
    """The message an accepted payload becomes (built as the handler builds it; sending is
    test_handler_email.py's business): only jobd's own headers, each on its line."""
    try:
        mail.check_email(payload)
    except ValueError:
        return
    parsed = mail.parse_email(payload)
    sender = parse_address("smtp.from", "jobs@example.com")
    message = mail.build_message(parsed, sender, mail.message_id(1, payload, sender))
    raw = message.as_bytes()
    reread = email.message_from_bytes(raw, policy=policy.default)
    names = {name.lower() for name in reread}
    assert names <= ALLOWED_HEADERS, names - ALLOWED_HEADERS
    assert "bcc" not in names and b"X-Injected" not in raw.split(b"\n\n", 1)[0]


def test_whole_numbers_past_the_largest_float_are_aggregated_not_crashed_on(tree: Path) -> None:
    """Found by the property above: a sum mixing 10**400 with a float, or the mean of two
    10**400s, raised OverflowError -- a passing failure to the supervisor, retried three
    times.  Now such a sum or mean is no value, and the exact whole-number sum is kept."""
    payload = {
        "records": [
            {"g": "a", "v": 10**400},
            {"g": "a", "v": 1.5},
            {"g": "b", "v": 10**400},
            {"g": "b", "v": 10**400},
        ],
        "group_by": "g",
        "value": "v",
        "aggregates": ["count", "sum", "mean", "max"],
        "output": "overflow.json",
    }
    result = run_checked(
        "generate_report", report.check_spec, report.generate_report, payload, tree
    )
    assert result is not None and result["groups"] == 2


@pytest.mark.parametrize("path", ["\ud800", "in\udfff.csv"])
def test_a_path_with_an_unpaired_surrogate_is_refused_at_submit(path: str) -> None:
    """JSON can carry "\\ud800"; no file name holds it.  Found by the property above: it passed
    the validator and raised UnicodeEncodeError in the worker (retried as a passing failure)."""
    with pytest.raises(ValueError, match="unpaired surrogate"):
        files.check_task({"operation": "checksum", "path": path})
    with pytest.raises(ValueError, match="unpaired surrogate"):
        report.check_spec({"records": [], "group_by": "g", "output": path})
