"""Section 5: the ASGI middleware under uvicorn, and the Django middleware under gunicorn.

Each figure is a ratio against a baseline served by the same server with the same
settings, in alternating rounds, like sections 1 and 3:

- the ASGI fail API (memory store; SQLite too, for reference) against a raw ASGI floor
  that reads the same body from ``receive``, parses it and sends a fixed JSON
  (``benchmarks.asgi_apps``);
- ASGI pass-through: a minimal ASGI app inside the middleware against the same app bare;
- Django pass-through: a minimal Django project with ``CibaMiddleware`` first in
  ``MIDDLEWARE`` against the same project without it (``benchmarks.django_apps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import loadgen
from .apps import FAIL_PATH, HELLO_PATH, TOKEN
from .endtoend import _rounds
from .loadgen import Target
from .profiles import Profile
from .servers import servers
from .stats import Row, median, ratios, spread
from .workload import StoreSpec, bodies, issue, write_bodies

SECTION = "5 ASGI, Django"
#: The targets of issue 15.
FAIL_TARGET = 0.85
PASS_THROUGH_TARGET = 0.98

ASGI_APP = "benchmarks.asgi_apps:application"
DJANGO_APP = "benchmarks.django_apps:application"


def all_rows(profile: Profile, stores: Sequence[StoreSpec], log_dir: Path) -> list[Row]:
    return [
        *asgi_fail(profile, stores, log_dir),
        *asgi_pass_through(profile, log_dir),
        *django_pass_through(profile, log_dir),
    ]


def _pass_through_row(name: str, runs: dict[str, list[loadgen.Throughput]], what: str) -> Row:
    bare = [r.requests_per_s for r in runs["bare"]]
    wrapped = [r.requests_per_s for r in runs["wrapped"]]
    per_round = ratios(wrapped, bare)
    return Row(
        SECTION,
        name,
        median(per_round),
        "%",
        baseline=f"bare {what} {median(bare):,.0f} req/s, wrapped {median(wrapped):,.0f}",
        target=PASS_THROUGH_TARGET,
        spread=spread(per_round),
    )


def _hello_rounds(
    specs: dict[str, tuple[str, dict[str, str]]],
    profile: Profile,
    log_dir: Path,
    *,
    wsgi: str = "benchmarks.apps:application",
    asgi: str | None = None,
) -> dict[str, list[loadgen.Throughput]]:
    with servers(specs, workers=profile.server_workers, log_dir=log_dir, wsgi=wsgi, asgi=asgi) as running:
        targets = {name: Target(s.url, HELLO_PATH) for name, s in running.items()}
        for target in targets.values():
            loadgen.check_answers(target)
            loadgen.warm(target)
        return _rounds(targets, profile, profile.passthrough_rounds, profile.passthrough_seconds)


def asgi_pass_through(profile: Profile, log_dir: Path) -> list[Row]:
    specs: dict[str, tuple[str, dict[str, str]]] = {"bare": ("asgi_bare", {}), "wrapped": ("asgi_wrapped", {})}
    runs = _hello_rounds(specs, profile, log_dir, asgi=ASGI_APP)
    return [_pass_through_row("uvicorn: ASGI app wrapped / bare", runs, "ASGI app")]


def django_pass_through(profile: Profile, log_dir: Path) -> list[Row]:
    specs: dict[str, tuple[str, dict[str, str]]] = {"bare": ("django_bare", {}), "wrapped": ("django_wrapped", {})}
    runs = _hello_rounds(specs, profile, log_dir, wsgi=DJANGO_APP)
    return [_pass_through_row("gunicorn: Django wrapped / bare", runs, "Django")]


def asgi_fail(profile: Profile, stores: Sequence[StoreSpec], log_dir: Path) -> list[Row]:
    by_name = {spec.name: spec for spec in stores}
    memory, sqlite = by_name["memory"], by_name["sqlite"]
    files = {
        name: write_bodies(log_dir / f"bodies-asgi-{name}.txt", bodies(issue(spec, profile.tickets)))
        for name, spec in (("floor", memory), ("memory", memory), ("sqlite", sqlite))
    }
    specs: dict[str, tuple[str, dict[str, str]]] = {
        "floor": ("asgi_floor", {}),
        "memory": ("asgi_fail", {"CIBA_STORE_URL": memory.url}),
        "sqlite": ("asgi_fail", {"CIBA_STORE_URL": sqlite.url}),
    }
    with servers(specs, workers=profile.server_workers, log_dir=log_dir, asgi=ASGI_APP) as running:
        targets = {name: Target(s.url, FAIL_PATH, files[name], TOKEN) for name, s in running.items()}
        for target in targets.values():
            loadgen.check_answers(target)
        for target in targets.values():
            loadgen.warm(target)
        runs = _rounds(targets, profile, profile.rounds, profile.seconds)
    floor = [r.requests_per_s for r in runs["floor"]]
    rows = [Row(SECTION, "uvicorn: raw ASGI floor (baseline)", median(floor), "req/s")]
    goals: dict[str, float | None] = {"memory": FAIL_TARGET, "sqlite": None}
    for name, goal in goals.items():
        through = [r.requests_per_s for r in runs[name]]
        per_round = ratios(through, floor)
        rows.append(
            Row(
                SECTION,
                f"uvicorn: ASGI fail API ({name}) / raw ASGI floor",
                median(per_round),
                "%",
                baseline=f"{median(through):,.0f} req/s",
                target=goal,
                spread=spread(per_round),
                detail="" if goal else "reference: a store on a file, its delete on the loop (section asgi)",
            )
        )
    return rows
