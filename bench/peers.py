"""The peers scenario of bench/run.py: jobd against pgqueuer and procrastinate on the same
PostgreSQL server in the same run, each in a schema of its own (bench/peer_systems.py).

Over `peer_rounds` rounds (--rounds) the three systems take turns, each round starting one
later (jobd, pgqueuer, procrastinate; then pgqueuer, procrastinate, jobd; ...), so that a
noisy minute does not always land on the same system.  In each round each system drains its
burn-down and then serves the idle latency series.  The table shows each system's median over
the rounds and jobd ÷ each peer as the median of the per-round ratios (ratios of the same
round share the machine's mood).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import percentiles, progress
from peer_systems import SYSTEMS, Drained, System
from scenarios import Figure, MakeStore, Run, Target

BURN_DOWN_TARGET = 1.2  # jobd ÷ pgqueuer, burn-down
LATENCY_TARGET_MS = 5.0  # jobd's submit → completed p50, idle


@dataclass(frozen=True)
class Latency:
    p50: float
    p95: float
    p99: float


@dataclass
class Round:
    drained: dict[str, Drained] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)


async def peers(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    if kind != "postgres":
        return [
            Figure(
                "peers", kind, "pgqueuer and procrastinate", None, "", text="— (PostgreSQL only)"
            )
        ]
    rounds = [await _round(run, make, r) for r in range(run.sizes.peer_rounds)]
    run.details.append(_settings(run))
    run.details.append(_rounds_table(run, rounds))
    return _figures(run, rounds)


async def _round(run: Run, make: MakeStore, index: int) -> Round:
    order = SYSTEMS[index % len(SYSTEMS) :] + SYSTEMS[: index % len(SYSTEMS)]
    result = Round()
    for system in order:
        result.drained[system.name] = await _burn_down(run, make, system)
        result.latency[system.name] = await _latency(run, make, system)
        progress(
            f"peers round {index + 1}: {system.name} {result.drained[system.name].span.rate:,.0f}"
            f" jobs/s, submit → completed p50 {result.latency[system.name].p50:.2f} ms"
        )
    return result


async def _burn_down(run: Run, make: MakeStore, system: System) -> Drained:
    with make(f"peer_{system.name}") as store:
        return await system.burn_down(run, store)


async def _latency(run: Run, make: MakeStore, system: System) -> Latency:
    with make(f"peer_{system.name}_latency") as store:
        times = await system.latency(run, store)
    return Latency(*percentiles(times))


# --- what the table shows ----------------------------------------------------------------------


def _figures(run: Run, rounds: list[Round]) -> list[Figure]:
    jobs, count = run.sizes.peer_jobs, len(rounds)
    figures = []
    for system in SYSTEMS:
        rates = [r.drained[system.name].span.rate for r in rounds]
        figures.append(
            Figure(
                "peers",
                "postgres",
                f"{system.name}: {jobs:,} no-op jobs, 2 processes, median of {count} rounds"
                f" ({min(rates):,.0f} to {max(rates):,.0f})",
                statistics.median(rates),
                "jobs/s",
            )
        )
    for peer in SYSTEMS[1:]:
        figures.append(
            Figure(
                "peers",
                "postgres",
                f"burn-down: jobd ÷ {peer.name} (median of per-round ratios)",
                _median_ratio(rounds, lambda r, name: r.drained[name].span.rate, peer.name),
                "ratio",
                Target(">=", BURN_DOWN_TARGET) if peer.name == "pgqueuer" else None,
            )
        )
    for system in SYSTEMS:
        p50 = statistics.median(r.latency[system.name].p50 for r in rounds)
        p99 = statistics.median(r.latency[system.name].p99 for r in rounds)
        figures.append(
            Figure(
                "peers",
                "postgres",
                f"{system.name}: idle, one at a time, submit → completion seen, p50 / p99",
                p50,
                "ms",
                Target("<=", LATENCY_TARGET_MS) if system.name == "jobd" else None,
                text=f"{p50:.2f} / {p99:.2f} ms",
            )
        )
    for peer in SYSTEMS[1:]:
        figures.append(
            Figure(
                "peers",
                "postgres",
                f"latency p50: jobd ÷ {peer.name} (median of per-round ratios; < 1: jobd faster)",
                _median_ratio(rounds, lambda r, name: r.latency[name].p50, peer.name),
                "ratio",
            )
        )
    elsewhere = max(d.elsewhere for r in rounds for d in r.drained.values())
    figures.append(
        Figure(
            "peers",
            "postgres",
            "meanwhile the machine's other work, the busiest drain",
            elsewhere,
            "CPUs",
        )
    )
    return figures


def _median_ratio(rounds: list[Round], value: Callable[[Round, str], float], peer: str) -> float:
    return statistics.median(value(r, "jobd") / value(r, peer) for r in rounds)


def _settings(run: Run) -> str:
    lines = ["#### Peers: the systems and their settings", ""]
    lines += [f"- {system.settings(run)}" for system in SYSTEMS]
    return "\n".join(lines)


def _rounds_table(run: Run, rounds: list[Round]) -> str:
    lines = [
        f"#### Peers, round by round: {run.sizes.peer_jobs:,}-job burn-down and"
        f" {run.sizes.peer_latency_jobs:,} jobs one at a time",
        "",
        "| round | system | jobs/s | jobs per completion statement"
        " | other work (CPUs) | p50 ms | p95 ms | p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for index, r in enumerate(rounds, 1):
        for name, d in r.drained.items():
            lat = r.latency[name]
            lines.append(
                f"| {index} | {name} | {d.span.rate:,.0f}"
                f" | {d.span.finish_batch:.1f} | {d.elsewhere:.2f}"
                f" | {lat.p50:.2f} | {lat.p95:.2f} | {lat.p99:.2f} |"
            )
    return "\n".join(lines)
