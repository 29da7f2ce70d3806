"""The documentation generated from the settings table: docs/configuration.md and
config/jobd.example.yaml.  A test compares the committed files with what this renders.

Regenerate them after changing the table:  python -m jobd.config --write
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from jobd.config.kinds import MASK
from jobd.config.table import CONFIG_ENV, Computed, Setting, table

DOCS_PATH = "docs/configuration.md"
EXAMPLE_PATH = "config/jobd.example.yaml"


def _inline(value: Any) -> str:
    """A value as it would be written in YAML on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _default_text(s: Setting) -> str:
    if isinstance(s.default, Computed):
        return s.default.doc
    if s.default is None:
        return s.default_doc or "unset"
    return f"`{_inline(s.kind.show(s.default))}`"


def _secrets(code: str) -> str:
    """The secret settings, as the intros list them: the database URL's password last."""
    keys = [f"{code}{s.key}{code}" for s in table().settings if s.secret]
    url = f"{code}database.url{code}"
    return ", ".join([k for k in keys if k != url] + [f"the password inside {url}"])


def _markdown_intro() -> str:
    return f"""\
# Configuration

<!-- Generated from the settings table (jobd/config/core.py, and jobd/samples/sections.py for
     the sample handlers) by `python -m jobd.config --write`.
     Do not edit: a test fails when this file and the code disagree. -->

jobd reads its configuration from four sources; a later one overrides an earlier one, key by key:

1. the built-in defaults below;
2. a YAML file, given by `jobd --config PATH` or the `{CONFIG_ENV}` environment variable
   (no file is read unless one is named; `{EXAMPLE_PATH}` shows every key with its default);
3. `JOBD_*` environment variables (the name is `JOBD_` and the key in capitals with dots as
   underscores, except the few short names in the tables);
4. command-line flags: `--config`, `--database-url`, `--log-level` and `--log-format` go with
   every `jobd` command; `--workers`, `--handlers` and `--socket` with `jobd run`; `--listen`
   with `jobd http`.

`jobd config check` validates the result and prints it as YAML, with secrets masked as `{MASK}`.
It prints a warning for each `JOBD_*` variable that is not a setting.

Rules:

- An unknown key (also inside a section, such as `database.urll`) or a bad value is an error that
  names the key and where it came from — the file and line, the environment variable, or the
  flag — and `jobd` exits with status 2.
- An empty value (YAML `null`, an empty environment variable) puts a setting back to its default.
- **Durations** are seconds (`30`, `1.5`) or numbers with units `ms`, `s`, `m`, `h`, `d`, `w`
  (`"250ms"`, `"1h30m"`, `"7d"`).
- **Sizes** are bytes (`1048576`) or numbers with units: `KiB`, `MiB`, `GiB` and bare `K`, `M`,
  `G` are powers of 1024; `kB`, `MB`, `GB` powers of 1000 (`"512MiB"`).
- **Lists** are YAML lists in the file and comma-separated in the environment
  (`JOBD_HANDLER_MODULES=myapp.jobs,myapp.reports`).
- **Secrets** ({_secrets("`")}) are never
  printed, nor echoed in error messages; pass them in the environment (a systemd
  `EnvironmentFile=` readable by jobd only) rather than in the YAML file.
"""


def render_markdown() -> str:
    """docs/configuration.md, from the table."""
    out = [_markdown_intro()]
    for section in table().sections:
        out += [f"## `{section.name}`", "", section.about, ""]
        out += ["| YAML key | environment | flag | type | default | meaning |"]
        out += ["|---|---|---|---|---|---|"]
        for s in section.settings:
            meaning = s.help + (f" **{s.kind.secret_note}**" if s.secret else "")
            cells = [
                f"`{s.key}`",
                f"`{s.env}`",
                f"`{s.flag}`" if s.flag else "—",
                s.kind.describe(),
                _default_text(s),
                meaning,
            ]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _example_intro() -> str:
    return f"""\
# jobd configuration: every key, set to its default.
#
# Generated from the settings table by `python -m jobd.config --write`;
# a test fails when this file and the code disagree.  docs/configuration.md says more.
#
# Use it with `jobd --config PATH` or {CONFIG_ENV}=PATH.  JOBD_* environment variables
# override the file, and command-line flags override both.  A key set to null (or left
# empty) takes its default.  Keep secrets in the environment rather than here:
# {_secrets("")}.
"""


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text.replace("`", ""), 92)]


def render_example_yaml() -> str:
    """config/jobd.example.yaml, from the table: loading it gives the defaults."""
    out = [_example_intro()]
    for section in table().sections:
        top_level = section.cls is None
        indent = "" if top_level else "  "
        out += _comment(section.about, "")
        if not top_level:
            out.append(f"{section.name}:")
        for s in section.fields:  # a deprecated name would conflict with its new one
            where = f"Environment: {s.env}" + (f"; flag: {s.flag}" if s.flag else "") + "."
            secret = f" {s.kind.secret_note}" if s.secret else ""
            out += _comment(f"{s.help} {where}{secret}", indent)
            if isinstance(s.default, Computed) or s.default_doc:
                out += _comment(f"Default: {_default_text(s)}.", indent)
                value = "null"
            else:
                value = "null" if s.default is None else _inline(s.kind.show(s.default))
            if s.key == "queues":
                example = (
                    "queues: {emails: {concurrency: 4}, api: {global_concurrency: 3, rate: 10/s}}"
                )
                out += _comment(f"For example:  {example}", indent)
            out.append(f"{indent}{s.key.split('.')[-1]}: {value}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobd.config", description="Generate jobd's configuration docs."
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help=f"print {DOCS_PATH}")
    what.add_argument("--example", action="store_true", help=f"print {EXAMPLE_PATH}")
    what.add_argument("--write", action="store_true", help="write both into the repository")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(render_markdown())
    elif args.example:
        sys.stdout.write(render_example_yaml())
    else:
        root = Path(__file__).resolve().parents[2]
        (root / DOCS_PATH).write_text(render_markdown(), encoding="utf-8")
        (root / EXAMPLE_PATH).write_text(render_example_yaml(), encoding="utf-8")
    return 0
