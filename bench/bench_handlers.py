"""Job types for bench/run.py, loaded into `jobd run` with
JOBD_HANDLER_MODULES=bench.bench_handlers and the checkout on PYTHONPATH (not bench/ itself:
bench/http.py would shadow the standard library's http package).

- `bench_noop`: does nothing and returns nothing (no result row to write): the cost of the
  queue itself.
- `bench_burn`: spins for `ms` milliseconds of this process's CPU time (default 50).  CPU time,
  not wall time, so a job costs the same CPU however contended the machine is, and the
  speed-up from a second worker shows how much parallel CPU the daemon really gets.
- `bench_tick`: does nothing; the type of the schedules `--schedules N` declares, so their
  jobs are told apart from the scenarios' own.
- `bench_stamp`: returns the wall-clock time the handler started and the worker's pid, so
  the benchmark can tell when (and in which process) a job really began running.
"""

from __future__ import annotations

import os
import time
from typing import Any

from jobd.handlers import handler


@handler("bench_noop")
def noop(ctx: Any, payload: dict[str, Any]) -> None:
    return None


@handler("bench_tick")
def tick(ctx: Any, payload: dict[str, Any]) -> None:
    return None


@handler("bench_burn")
def burn(ctx: Any, payload: dict[str, Any]) -> None:
    until = time.process_time() + float(payload.get("ms", 50)) / 1000.0
    while time.process_time() < until:
        pass


@handler("bench_stamp")
def stamp(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return {"t": time.time(), "pid": os.getpid()}
