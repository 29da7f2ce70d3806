"""`generate_report`: group records by a key, aggregate a numeric field, and write the report as
CSV, JSON or a small self-contained HTML table.  Enabled by `handlers.samples:
[generate_report]`.

Payload::

    {"input": "sales/2024.csv",           # a CSV (with a header) or JSON-lines file under
                                          # files.allowed_dirs ...
     "records": [{"region": "north", "amount": 12.5}, ...],   # ... or the records inline
     "input_format": "csv" | "jsonl",     # default: from input's extension
     "group_by": "region",                # required: the field to group by
     "value": "amount",                   # the numeric field to aggregate
     "aggregates": ["count", "sum", "min", "max", "mean"],     # default: all (count alone
                                                               # without `value`)
     "output": "reports/2024.html",       # required, under files.allowed_dirs
     "format": "csv" | "json" | "html",   # default: from output's extension
     "title": "Sales by region",          # for HTML and JSON
     "max_groups": 100000}                # refuse an input with more groups than this

Returns {"output", "format", "rows_in", "groups", "values_skipped"}.

The input is read one record at a time, so its size does not matter; only the groups are held in
memory, which `max_groups` bounds.  A record whose `value` is missing, empty, not a number, or
not finite still counts in `count` but not in the other aggregates, and is counted in
`values_skipped`.  A malformed input (a line that is not JSON, a CSV error, text that is not
UTF-8) fails the job, naming the line.  Every string written to the HTML is escaped; CSV cells
that a spreadsheet would run as a formula (starting with =, +, -, @) are prefixed with `'`.
The output is written atomically and replaced when the job runs again.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import math
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from jobd.context import JobContext
from jobd.domain import PermanentError
from jobd.handlers import handler
from jobd.samples import settings
from jobd.samples.paths import AllowedDirs, check_path
from jobd.samples.payload import Payload, checked, choice, integer, number, only_fields, text

FIELDS = (
    "input",
    "records",
    "input_format",
    "group_by",
    "value",
    "aggregates",
    "output",
    "format",
    "title",
    "max_groups",
)
INPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
OUTPUT_FORMATS = {".csv": "csv", ".json": "json", ".html": "html", ".htm": "html"}
AGGREGATES = ("count", "sum", "min", "max", "mean")
MAX_INLINE_RECORDS = 100_000
DEFAULT_MAX_GROUPS = 100_000
MAX_GROUPS = 1_000_000
MAX_LINE = 16 * 1024 * 1024  # characters in one JSON line: a longer one is refused
MAX_NAME = 200  # characters in a field name
CANCEL_EVERY = 1_000  # records between cancellation checks
PROGRESS_EVERY = 100_000  # records between progress reports


@dataclass(frozen=True)
class ReportSpec:
    """A checked generate_report payload."""

    input: str | None
    records: list[Any] | None
    input_format: str | None
    group_by: str
    value: str | None
    aggregates: tuple[str, ...]
    output: str
    format: str
    title: str
    max_groups: int


def parse_spec(payload: Payload) -> ReportSpec:
    """The payload, checked; raises ValueError("field: problem")."""
    only_fields(payload, FIELDS)
    source, records, input_format = _source(payload)
    group_by = text(payload, "group_by", max_length=MAX_NAME) or ""
    value = text(payload, "value", required=False, max_length=MAX_NAME)
    aggregates = _aggregates(payload, value)
    if "output" not in payload:
        raise ValueError("output: is required")
    output = check_path("output", payload["output"])
    default_format = OUTPUT_FORMATS.get(_extension(output))
    title = text(payload, "title", required=False, max_length=500, single_line=True)
    return ReportSpec(
        input=source,
        records=records,
        input_format=input_format,
        group_by=group_by,
        value=value,
        aggregates=aggregates,
        output=output,
        format=choice(payload, "format", ("csv", "json", "html"), default_format),
        title=title or (f"{value} by {group_by}" if value else f"rows by {group_by}"),
        max_groups=integer(
            payload, "max_groups", default=DEFAULT_MAX_GROUPS, low=1, high=MAX_GROUPS
        ),
    )


def _source(payload: Payload) -> tuple[str | None, list[Any] | None, str | None]:
    has_input, has_records = payload.get("input") is not None, "records" in payload
    if has_input and has_records:
        raise ValueError("input: give either input (a file) or records (a list), not both")
    if has_records:
        if "input_format" in payload:
            raise ValueError("input_format: only for an input file")
        return None, _records(payload["records"]), None
    if not has_input:
        raise ValueError("input: is required (a file), or give records (a list)")
    source = check_path("input", payload["input"])
    default = INPUT_FORMATS.get(_extension(source))
    return source, None, choice(payload, "input_format", ("csv", "jsonl"), default)


def _records(records: object) -> list[Any]:
    if not isinstance(records, list):
        raise ValueError("records: must be a list of objects")
    if len(records) > MAX_INLINE_RECORDS:
        raise ValueError(f"records: more than {MAX_INLINE_RECORDS} records (use an input file)")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"records[{index}]: must be an object")
    return records


def _aggregates(payload: Payload, value: str | None) -> tuple[str, ...]:
    wanted = payload.get("aggregates")
    if wanted is None:
        return AGGREGATES if value else ("count",)
    if not isinstance(wanted, list) or not wanted:
        raise ValueError(f"aggregates: must be a non-empty list of {', '.join(AGGREGATES)}")
    for name in wanted:
        if name not in AGGREGATES:
            raise ValueError(f"aggregates: {name!r} is not one of {', '.join(AGGREGATES)}")
        if name != "count" and value is None:
            raise ValueError(f"value: is required for {name}")
    return tuple(dict.fromkeys(wanted))


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def check_spec(payload: Payload) -> None:
    """Submit-time validator (where the paths lead is checked in the worker)."""
    parse_spec(payload)


@handler("generate_report", max_attempts=3, validator=check_spec)
def generate_report(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the input by `group_by` and write the report; see the module's docstring."""
    spec = checked(parse_spec, payload)
    dirs = AllowedDirs.of(settings.current().files.allowed_dirs)
    dirs.output_path("output", spec.output)  # a bad output path fails before a long read
    totals = Totals(spec.group_by, spec.value, spec.max_groups)
    if spec.records is not None:
        _aggregate(ctx, totals, spec.records)
    else:
        with (
            dirs.open_input("input", spec.input) as source,
            closing(read_records(source, spec)) as records,
        ):
            _aggregate(ctx, totals, records)
    with dirs.atomic_output("output", spec.output) as out:
        write_report(out.file, spec, totals)
    ctx.logger.info("report written", extra={"rows_in": totals.rows_in, "output": out.path})
    return {
        "output": out.path,
        "format": spec.format,
        "rows_in": totals.rows_in,
        "groups": len(totals.groups),
        "values_skipped": totals.values_skipped,
    }


# --- aggregating --------------------------------------------------------------------------


@dataclass
class Group:
    count: int = 0  # records
    n: int = 0  # records with a usable value
    total: int | float = 0
    low: int | float | None = None
    high: int | float | None = None

    def add(self, value: int | float | None) -> None:
        self.count += 1
        if value is None:
            return
        self.n += 1
        try:
            self.total += value  # ints stay exact; floats as floats
        except OverflowError:
            # A whole number past the largest float met a float: the sum is past it too, on
            # the whole number's side -- or nowhere, if the float was the other infinity.
            # (aggregate() reports either as no value.)
            big, other = (value, self.total) if isinstance(value, int) else (self.total, value)
            infinite = math.inf if big > 0 else -math.inf
            self.total = math.nan if other == -infinite else infinite
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def aggregate(self, name: str) -> int | float | None:
        """One aggregate; None where there is no value (no usable value, or a sum past the
        largest float)."""
        if name == "mean":
            try:
                result = self.total / self.n if self.n else None
            except OverflowError:  # whole numbers whose mean is past the largest float
                return None
        else:
            result = {
                "count": self.count,
                "sum": self.total if self.n else None,
                "min": self.low,
                "max": self.high,
            }[name]
        return None if isinstance(result, float) and not math.isfinite(result) else result


@dataclass
class Totals:
    group_by: str
    value: str | None
    max_groups: int
    groups: dict[str | None, Group] = field(default_factory=dict)
    rows_in: int = 0
    values_skipped: int = 0

    def add(self, record: Mapping[str, Any]) -> None:
        self.rows_in += 1
        key = group_key(record.get(self.group_by))
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.max_groups:
                raise PermanentError(
                    f"group_by: more than {self.max_groups} groups (max_groups); group by a"
                    " field with fewer distinct values, or raise max_groups"
                )
            group = self.groups[key] = Group()
        value = number(record.get(self.value)) if self.value is not None else None
        if self.value is not None and value is None:
            self.values_skipped += 1
        group.add(value)

    def sorted(self) -> list[tuple[str | None, Group]]:
        return sorted(self.groups.items(), key=lambda item: (item[0] is not None, item[0] or ""))


def group_key(value: object) -> str | None:
    """Records group by text: numbers and other JSON values by their JSON form, so 1 and "1"
    share a group and every key can be sorted and written; a missing key is None."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _aggregate(ctx: JobContext, totals: Totals, records: Iterable[Mapping[str, Any]]) -> None:
    for record in records:
        totals.add(record)
        if totals.rows_in % CANCEL_EVERY == 0:
            ctx.check_cancelled()
        if totals.rows_in % PROGRESS_EVERY == 0:
            ctx.progress({"rows": totals.rows_in, "groups": len(totals.groups)})
    ctx.check_cancelled()


# --- reading ------------------------------------------------------------------------------


def read_records(source: BinaryIO, spec: ReportSpec) -> Generator[Mapping[str, Any], None, None]:
    """The input file's records, one at a time; a malformed input is a PermanentError."""
    stream = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    try:
        if spec.input_format == "csv":
            yield from _csv_records(stream, spec)
        else:
            yield from _jsonl_records(stream)
    except UnicodeDecodeError:
        raise PermanentError("input: is not UTF-8 text") from None
    finally:
        stream.detach()  # the caller closes the file


def _csv_records(stream: IO[str], spec: ReportSpec) -> Iterator[Mapping[str, Any]]:
    reader = csv.DictReader(stream)
    try:
        columns = reader.fieldnames or []
        for name, wanted in (("group_by", spec.group_by), ("value", spec.value)):
            if columns and wanted is not None and wanted not in columns:
                shown = ", ".join(columns[:20]) + (", …" if len(columns) > 20 else "")
                raise PermanentError(f"{name}: no column {wanted!r} in the input ({shown})")
        yield from reader
    except csv.Error as exc:
        raise PermanentError(f"input: line {reader.line_num}: {exc}") from None


def _jsonl_records(stream: IO[str]) -> Iterator[Mapping[str, Any]]:
    for line_number in itertools.count(1):
        line = stream.readline(MAX_LINE)
        if not line:
            return
        if len(line) >= MAX_LINE and not line.endswith("\n"):
            raise PermanentError(f"input: line {line_number} is longer than {MAX_LINE} characters")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise PermanentError(f"input: line {line_number}: not JSON ({exc})") from None
        except RecursionError:
            raise PermanentError(f"input: line {line_number}: nested too deeply") from None
        if not isinstance(record, dict):
            raise PermanentError(f"input: line {line_number}: not a JSON object")
        yield record


# --- writing ------------------------------------------------------------------------------


def write_report(file: BinaryIO, spec: ReportSpec, totals: Totals) -> None:
    stream = io.TextIOWrapper(file, encoding="utf-8", newline="")
    try:
        _WRITERS[spec.format](stream, spec, totals)
        stream.flush()
    finally:
        stream.detach()  # the atomic output closes the file


def _write_csv(stream: IO[str], spec: ReportSpec, totals: Totals) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([_csv_cell(spec.group_by), *spec.aggregates])
    for key, group in totals.sorted():
        writer.writerow([_csv_cell(key or ""), *(_plain(group, a) for a in spec.aggregates)])


def _csv_cell(value: str) -> str:
    """A text cell a spreadsheet will not take for a formula (OWASP's CSV injection advice);
    negative numbers are left as they are."""
    if value.startswith(("=", "+", "-", "@", "\t", "\r")) and number(value) is None:
        return "'" + value
    return value


def _plain(group: Group, aggregate: str) -> str:
    value = group.aggregate(aggregate)
    return "" if value is None else repr(value)


def _write_json(stream: IO[str], spec: ReportSpec, totals: Totals) -> None:
    report = {
        "title": spec.title,
        "group_by": spec.group_by,
        "value": spec.value,
        "rows_in": totals.rows_in,
        "values_skipped": totals.values_skipped,
        "groups": [
            {"key": key, **{a: group.aggregate(a) for a in spec.aggregates}}
            for key, group in totals.sorted()
        ],
    }
    json.dump(report, stream, ensure_ascii=False, allow_nan=False, indent=1)
    stream.write("\n")


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em}"
    "table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:.3em .6em}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "caption{text-align:left;color:#555;padding:.3em 0}"
)


def _write_html(stream: IO[str], spec: ReportSpec, totals: Totals) -> None:
    """One page, no scripts, no external resources; every string from the input escaped."""
    e = html.escape
    title = e(spec.title)
    stream.write(
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        f"<table>\n<caption>{totals.rows_in} rows, {len(totals.groups)} groups"
        f"{f', values skipped: {totals.values_skipped}' if totals.values_skipped else ''}"
        "</caption>\n<thead><tr>"
        + "".join(f"<th>{e(name)}</th>" for name in (spec.group_by, *spec.aggregates))
        + "</tr></thead>\n<tbody>\n"
    )
    for key, group in totals.sorted():
        cells = "".join(f'<td class="n">{_plain(group, a)}</td>' for a in spec.aggregates)
        stream.write(f"<tr><td>{e(key or '')}</td>{cells}</tr>\n")
    stream.write("</tbody>\n</table>\n</body>\n</html>\n")


_WRITERS = {"csv": _write_csv, "json": _write_json, "html": _write_html}
