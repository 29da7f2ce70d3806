"""The sample handlers shipped with jobd, enabled by `handlers.samples`: `send_email` (mail),
`generate_report` (report) and `process_file` (files), with their helpers — path confinement
(paths), payload checking (payload) — their settings (sections) and the snapshot of those
settings handed to the workers (settings).

They are opt-in because each touches the outside world: an SMTP server, files.  They use only
what any handler author can use (`jobd.handlers.handler`, `jobd.context.JobContext`); the
framework knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Each sample handler's module: job type -> module.
SAMPLE_MODULES = {
    "send_email": "jobd.samples.mail",
    "generate_report": "jobd.samples.report",
    "process_file": "jobd.samples.files",
}


def enabled_modules(samples: Iterable[str], modules: Iterable[str]) -> tuple[str, ...]:
    """The handler modules a node loads: those of the enabled sample handlers (`samples`, job
    type names), then the configured `modules`, each once.  The supervisor (for the types and
    their validators) and the fork server (for the workers) must both get this list."""
    names = [SAMPLE_MODULES[name] for name in samples]
    return tuple(dict.fromkeys([*names, *modules]))
