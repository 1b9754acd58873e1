"""Sections 1 (under gunicorn) and 3: real servers, real sockets, alternating rounds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import loadgen
from .apps import FAIL_PATH, HELLO_PATH, TOKEN
from .loadgen import Target
from .profiles import Profile
from .servers import servers
from .stats import Row, median, ratios, spread
from .workload import StoreSpec, bodies, issue, write_bodies

#: Throughput targets against the raw floor, per store (issue 6).
TARGETS = {"memory": 0.90, "redis": 0.75, "sqlite": 0.60, "postgresql": 0.60}
#: Networked stores with a reference variant: the floor plus one bare round trip.
CEILINGS = {"redis": "floor_redis", "postgresql": "floor_postgresql"}


def _rounds(
    targets: dict[str, Target], profile: Profile, rounds: int, seconds: float
) -> dict[str, list[loadgen.Throughput]]:
    """Each round runs every variant once, the order rotating; each round starts at a new
    part of the bodies, so that as long as there are tickets, every call deletes one."""
    names = list(targets)
    results: dict[str, list[loadgen.Throughput]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            targets[name].offset = index * profile.tickets // rounds
            result = loadgen.throughput(targets[name], seconds=seconds, connections=profile.connections)
            if result.bad:
                raise RuntimeError(f"{name}: {result.bad} of {result.requests} requests failed")
            results[name].append(result)
    return results


def pass_through(profile: Profile, log_dir: Path) -> list[Row]:
    specs: dict[str, tuple[str, dict[str, str]]] = {"bare": ("flask_bare", {}), "wrapped": ("flask_wrapped", {})}
    with servers(specs, workers=profile.server_workers, log_dir=log_dir) as running:
        targets = {name: Target(server.url, HELLO_PATH) for name, server in running.items()}
        for target in targets.values():
            loadgen.check_answers(target)
            loadgen.warm(target)
        runs = _rounds(targets, profile, profile.passthrough_rounds, profile.passthrough_seconds)
    bare = [r.requests_per_s for r in runs["bare"]]
    wrapped = [r.requests_per_s for r in runs["wrapped"]]
    per_round = ratios(wrapped, bare)
    return [
        Row(
            "1 pass-through",
            "gunicorn: Flask wrapped / bare",
            median(per_round),
            "%",
            baseline=f"bare Flask {median(bare):,.0f} req/s, wrapped {median(wrapped):,.0f}",
            target=0.98,
            spread=spread(per_round),
        )
    ]


def fail_end_to_end(
    profile: Profile, stores: Sequence[StoreSpec], log_dir: Path, fixed_rate: float | None
) -> list[Row]:
    usable = [spec for spec in stores if spec.available]
    rows: list[Row] = [
        Row(
            "3 end to end",
            f"gunicorn: {spec.name} store / raw floor",
            float("nan"),
            "%",
            detail=f"not measured: {spec.why}",
        )
        for spec in stores
        if not spec.available
    ]
    # Each variant gets bodies naming tickets that exist in its store (fresh ones for the
    # floor and memory://), the same mix of reasons, the same token.
    files: dict[str, Path] = {}
    memory_like = next(spec for spec in usable if spec.name == "memory")
    # The ceilings delete tickets of their own from the same store.
    ceilings = [spec for spec in usable if spec.name in CEILINGS]
    for name, spec in [
        ("floor", memory_like),
        *((spec.name, spec) for spec in usable),
        *((f"{spec.name}_ceiling", spec) for spec in ceilings),
    ]:
        files[name] = write_bodies(log_dir / f"bodies-{name}.txt", bodies(issue(spec, profile.tickets)))
    specs: dict[str, tuple[str, dict[str, str]]] = {"floor": ("floor", {})}
    for spec in usable:
        specs[spec.name] = ("fail", {"CIBA_STORE_URL": spec.url})
    for spec in ceilings:
        specs[f"{spec.name}_ceiling"] = (CEILINGS[spec.name], {"BENCH_STORE_URL": spec.url})
    with servers(specs, workers=profile.server_workers, log_dir=log_dir) as running:
        targets = {name: Target(server.url, FAIL_PATH, files[name], TOKEN) for name, server in running.items()}
        for target in targets.values():
            loadgen.check_answers(target)
        for target in targets.values():
            loadgen.warm(target)
        runs = _rounds(targets, profile, profile.rounds, profile.seconds)
        floor = [r.requests_per_s for r in runs["floor"]]
        offered = fixed_rate or profile.rate
        latencies = {}
        for name, target in targets.items():
            target.offset = 0
            latencies[name] = loadgen.fixed_rate(target, rate=offered, seconds=profile.latency_seconds)
    floor_latency = latencies["floor"]
    rows.insert(
        0,
        Row(
            "3 end to end",
            "gunicorn: raw floor (baseline)",
            median(floor),
            "req/s",
            detail=f"p50 {floor_latency.p50_ms:.2f} ms, p99 {floor_latency.p99_ms:.2f} ms "
            f"at {offered:,.0f} req/s offered",
        ),
    )
    for spec in usable:
        name = spec.name
        through = [r.requests_per_s for r in runs[name]]
        per_round = ratios(through, floor)
        latency = latencies[name]
        bad = f", {latency.bad} failed" if latency.bad else ""
        detail = f"p50 {latency.p50_ms:.2f} ms, p99 {latency.p99_ms:.2f} ms at {offered:,.0f} req/s offered{bad}"
        if name in CEILINGS:
            ceiling = [r.requests_per_s for r in runs[f"{name}_ceiling"]]
            of_ceiling = median(ratios(through, ceiling))
            detail += f"; {of_ceiling:.0%} of the ceiling below"
        rows.insert(
            len([r for r in rows if r.value == r.value]),
            Row(
                "3 end to end",
                f"gunicorn: {name} store / raw floor",
                median(per_round),
                "%",
                baseline=f"{median(through):,.0f} req/s",
                target=TARGETS.get(name),
                spread=spread(per_round),
                detail=detail,
                extra={"p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms},
            ),
        )
    rows += [
        Row(
            "3 end to end",
            f"reference: floor + one {spec.name} round trip / raw floor",
            float("nan"),
            "%",
            detail=f"not measured: {spec.why}",
        )
        for spec in stores
        if not spec.available and spec.name in CEILINGS
    ]
    for spec in ceilings:
        name = f"{spec.name}_ceiling"
        through = [r.requests_per_s for r in runs[name]]
        per_round = ratios(through, floor)
        latency = latencies[name]
        how = "a bare socket, the store's Lua delete" if spec.name == "redis" else "one psycopg connection, the DELETE"
        rows.append(
            Row(
                "3 end to end",
                f"reference: floor + one {spec.name} round trip / raw floor",
                median(per_round),
                "%",
                baseline=f"{median(through):,.0f} req/s",
                spread=spread(per_round),
                detail=f"{how}; the ceiling of a fail API that waits for its store; "
                f"p50 {latency.p50_ms:.2f} ms, p99 {latency.p99_ms:.2f} ms at {offered:,.0f} req/s offered",
                extra={"p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms},
            )
        )
    return rows
