"""Logging for every jobd process: one JSON object per line on stderr (python-json-logger), or
plain text for a person at a terminal.

Every line carries `ts` (UTC ISO-8601), `level`, `logger`, `message`, `pid` and the node id;
whatever a caller passes in `extra=` (job_id, job_type, attempt, correlation_id, …) becomes a
field of its own.  A traceback is one field (`exc_info`), never many lines.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_node: str | None = None
#: The job this process is running (workers only): its fields go on every log line written
#: meanwhile, also those a handler writes through plain `logging.getLogger(...)`.
_job: dict[str, Any] | None = None


def bind_job(fields: dict[str, Any] | None) -> None:
    global _job
    _job = fields


class JobFieldsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _job is not None:
            for key, value in _job.items():
                if key not in record.__dict__:
                    setattr(record, key, value)
        return True


#: Characters that JSON leaves raw (with ensure_ascii off) but that Unicode-aware line readers
#: (Python's splitlines, JavaScript, some log viewers) take for line ends: a correlation id
#: holding one would split a record in two.  They can only occur inside JSON strings, so their
#: \u escapes are equivalent there.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class JobdJsonFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def jsonify_log_record(self, log_data: Any) -> str:
        """One record, one line by any reader's rules (see _LINE_BREAKS)."""
        return super().jsonify_log_record(log_data).translate(_LINE_BREAKS)

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_record["ts"] = (
            datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        ).replace("+00:00", "Z")
        super().add_fields(log_record, record, message_dict)
        log_record["pid"] = record.process
        if _node is not None:
            log_record.setdefault("node", _node)


class TextFormatter(logging.Formatter):
    """`ts level logger: message key=value …` — the extras kept, on one line."""

    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v!r}" for k, v in vars(record).items() if k not in self._standard)
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", fmt: str = "json", node: str | None = None) -> None:
    """Send this process's logs to stderr in `fmt` ("json" or "text") at `level`."""
    global _node
    _node = node
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JobdJsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobFieldsFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    os.environ.setdefault("PYTHONWARNINGS", "default")
