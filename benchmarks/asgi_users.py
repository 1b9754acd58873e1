"""Section "asgi": the ASGI fail API as its users run it, under uvicorn and hypercorn.

Each server, one worker (uvicorn with httptools), serves in alternating rounds, like
sections 3 and 5:

- the raw ASGI floor (``asgi_floor``: read and parse the body, answer a fixed JSON);
- :func:`ciba_middleware.asgi.from_env` with only ``CIBA_TOKENS`` and the store set, the
  audit line on (``asgi_from_env``), on SQLite (the default store), memory, Redis and
  PostgreSQL;
- the stores' ceilings (``asgi_floor_sqlite``, ``asgi_floor_postgresql``,
  ``asgi_floor_redis``: the floor plus the store's one statement on a bare connection, on
  the loop or awaited); the PostgreSQL row is measured against its own, the SQLite and
  Redis ones show how much of the floor any ASGI fail API on that store can reach on
  this machine.

Each row is the share of its baseline, per round; then, under load with 64 connections,
each variant's p99 latency (wrk ``--latency``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import loadgen
from .apps import FAIL_PATH, TOKEN, defaults_env
from .endtoend import _rounds
from .loadgen import Target
from .profiles import Profile
from .servers import servers
from .stats import Row, median, ratios, spread
from .workload import StoreSpec, bodies, issue, write_bodies

SECTION = "5 ASGI as users run it"
ASGI_APP = "benchmarks.asgi_apps:application"
#: The shares of the raw ASGI floor of issue 27.
TARGETS = {"sqlite": 0.55, "memory": 0.70, "redis": 0.45}
#: The stores measured against their ceilings too (``asgi_apps``'s app: the floor plus the
#: store's one statement), and the target of that share: PostgreSQL's (issue 27); SQLite's
#: and Redis's are information, the ceiling's own share of the floor beside them.
CEILINGS = {
    "sqlite": ("asgi_floor_sqlite", None),
    "postgresql": ("asgi_floor_postgresql", 0.85),
    "redis": ("asgi_floor_redis", None),
}
SERVERS = ("uvicorn", "hypercorn")
#: Connections of the p99 measurement.
LOADED_CONNECTIONS = 64


def all_rows(profile: Profile, stores: Sequence[StoreSpec], log_dir: Path) -> list[Row]:
    rows: list[Row] = []
    for server in SERVERS:
        rows += server_rows(server, profile, stores, log_dir)
    return rows


def server_rows(server: str, profile: Profile, stores: Sequence[StoreSpec], log_dir: Path) -> list[Row]:
    usable = {spec.name: spec for spec in stores if spec.available}
    rows = [
        Row(
            SECTION,
            f"{server}: from_env, {spec.name} store, audit on / raw ASGI floor",
            float("nan"),
            "%",
            detail=f"not measured: {spec.why}",
        )
        for spec in stores
        if not spec.available and spec.name in (*TARGETS, "postgresql")
    ]
    memory = usable["memory"]
    variants: dict[str, tuple[StoreSpec, str, dict[str, str]]] = {"floor": (memory, "asgi_floor", {})}
    for name in ("sqlite", "memory", "redis", "postgresql"):
        if name in usable:
            variants[name] = (usable[name], "asgi_from_env", defaults_env(usable[name].url))
    for name, (app, _) in CEILINGS.items():
        if name in usable:
            variants[f"{name}_ceiling"] = (usable[name], app, {"BENCH_STORE_URL": usable[name].url})
    # Enough tickets for the rounds and the loaded run after them.
    tickets = profile.tickets * 2
    files = {
        name: write_bodies(log_dir / f"bodies-{server}-{name}.txt", bodies(issue(spec, tickets)))
        for name, (spec, _, _) in variants.items()
    }
    specs = {name: (app, env) for name, (_, app, env) in variants.items()}
    with servers(specs, workers=1, log_dir=log_dir, asgi=ASGI_APP, asgi_server=server) as running:
        targets = {name: Target(s.url, FAIL_PATH, files[name], TOKEN) for name, s in running.items()}
        for target in targets.values():
            loadgen.check_answers(target)
        for target in targets.values():
            loadgen.warm(target)
        runs = _rounds(targets, profile, profile.rounds, profile.seconds)
        loaded: dict[str, loadgen.Throughput] = {}
        for name, target in targets.items():
            target.offset = profile.tickets
            loaded[name] = loadgen.throughput(target, seconds=profile.loaded_seconds, connections=LOADED_CONNECTIONS)

    def through(name: str) -> list[float]:
        return [r.requests_per_s for r in runs[name]]

    def p99(name: str) -> str:
        result = loaded[name]
        bad = f", {result.bad} failed" if result.bad else ""
        rate = f"{result.requests_per_s:,.0f} req/s"
        return f"p99 {result.p99_ms:.2f} ms with {LOADED_CONNECTIONS} connections ({rate}){bad}"

    floor = through("floor")
    rows.insert(
        0, Row(SECTION, f"{server}: raw ASGI floor of from_env's rows", median(floor), "req/s", detail=p99("floor"))
    )
    for name in ("sqlite", "memory", "redis", "postgresql"):
        if name not in runs:
            continue
        per_round = ratios(through(name), floor)
        label = "defaults (SQLite)" if name == "sqlite" else f"{name} store"
        rows.append(
            Row(
                SECTION,
                f"{server}: from_env, {label}, audit on / raw ASGI floor",
                median(per_round),
                "%",
                baseline=f"{median(through(name)):,.0f} req/s",
                target=TARGETS.get(name),
                spread=spread(per_round),
                detail=p99(name),
                extra={"p99_ms_64": loaded[name].p99_ms},
            )
        )
    for name, (_, wanted) in CEILINGS.items():
        label = f"{server}: from_env, {name} store / its {'ceiling' if name == 'sqlite' else 'async ceiling'}"
        ceiling = f"{name}_ceiling"
        if ceiling not in runs:
            rows.append(Row(SECTION, label, float("nan"), "%", detail=f"not measured: no {name}"))
            continue
        per_round = ratios(through(name), through(ceiling))
        reach = median(ratios(through(ceiling), floor))
        rows.append(
            Row(
                SECTION,
                label,
                median(per_round),
                "%",
                baseline=f"ceiling {median(through(ceiling)):,.0f} req/s, {reach:.1%} of the floor",
                target=wanted,
                spread=spread(per_round),
                detail="the ceiling: the floor plus the store's one statement on a bare connection "
                + ("on the loop; " if name == "sqlite" else "awaited; ")
                + p99(ceiling),
            )
        )
    return rows
