"""The sample handlers' settings, declared here rather than in jobd.config: `smtp.*` (for
`send_email`) and `files.*` (for `process_file` and `generate_report`), with the job types
`handlers.samples` may enable.  jobd.config's table gains them from `EXTENSION`."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobd.config.errors import Problem
from jobd.config.kinds import Integer, ListOf, PathKind, Size, Text
from jobd.config.table import Extension, Section, Setting
from jobd.samples import SAMPLE_MODULES

SMTP_PORTS = {"none": 25, "starttls": 587, "implicit": 465}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: str
    username: str | None
    password: str | None
    from_: str | None


#: files.max_output_bytes when unset: a decompressed file larger than this is refused.
DEFAULT_MAX_OUTPUT_BYTES = 1024**3


@dataclass(frozen=True)
class FilesConfig:
    allowed_dirs: tuple[Path, ...]
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES


def _email_address(value: str) -> None:
    if "@" not in email.utils.parseaddr(value)[1]:
        raise Problem(
            'must be an e-mail address, e.g. "jobd@example.com" or "Jobs <j@example.com>"'
        )


def _port_for_tls(fields: dict[str, Any]) -> dict[str, Any]:
    # An unset port follows the TLS mode: 25, 587 for starttls, 465 for implicit TLS.
    if fields["port"] is None:
        return {**fields, "port": SMTP_PORTS[fields["tls"]]}
    return fields


SMTP = Section(
    "smtp",
    "The SMTP server the `send_email` handler uses.",
    (
        Setting("smtp.host", Text(noun="host name"), "localhost", "SMTP server for `send_email`."),
        Setting(
            "smtp.port",
            Integer(min=1, max=65535),
            None,
            "SMTP port.",
            default_doc="25, or 587 with `starttls`, or 465 with `implicit`",
        ),
        Setting(
            "smtp.tls",
            Text(choices=("none", "starttls", "implicit"), fold=str.lower),
            "none",
            "`starttls`: upgrade the connection; `implicit`: TLS from the start; `none`: plain (a"
            " local relay only).",
        ),
        Setting("smtp.username", Text(), None, "Login for the SMTP server; unset: no login."),
        Setting(
            "smtp.password",
            Text(),
            None,
            "Password for the SMTP login. Prefer the environment variable to the file.",
            secret=True,
        ),
        Setting(
            "smtp.from",
            Text(noun="e-mail address"),
            None,
            '`From:` address of the e-mails `send_email` sends, e.g. "Jobs <jobs@example.com>".',
            check=_email_address,
        ),
    ),
    SmtpConfig,
    complete=_port_for_tls,
)

FILES = Section(
    "files",
    "What the `process_file` handler may touch.",
    (
        Setting(
            "files.allowed_dirs",
            ListOf(PathKind(), noun="directories"),
            (),
            "Directories `process_file` may read and write; any other path is refused (empty:"
            " every path is refused).",
        ),
        Setting(
            "files.max_output_bytes",
            Size(min=1),
            DEFAULT_MAX_OUTPUT_BYTES,
            "Largest file `process_file` may write: a `decompress` whose output grows past it (a"
            " decompression bomb) is stopped, its partial output deleted, and the job failed.",
        ),
    ),
    FilesConfig,
)

EXTENSION = Extension(sections=(SMTP, FILES), sample_types=tuple(SAMPLE_MODULES))
