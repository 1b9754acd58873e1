"""The benchmark suite runs, briefly, and prints every row (``python -m benchmarks --quick``).

Never a time assertion: the figures of a smoke run mean nothing. The suite's own checks
still hold: every variant must answer 200 with the same body before it is timed, or the
run fails. Stores that are unreachable here print a row saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    "in process: Flask wrapped / bare",
    "in process: time the middleware adds",
    "gunicorn: Flask wrapped / bare",
    "in process: defaults (audit lines written) / raw floor",
    "in process: audit log off (memory) / raw floor",
    "in process: audit log on / off",
    "in process: fail API (audit off) / Flask route",
    "reference: same checks, one flat function / raw floor",
    "duplicate-member check: share of a call",
    "audit record: the line from its template",
    "audit record: built and written to a file (the default: lines share write()s)",
    "audit record: built and written to a file at once (CIBA_AUDIT_FLUSH=0)",
    "audit record the former way (dict, json.dumps, LogRecord, StreamHandler)",
    "audit record nobody takes (handlers, none at INFO)",
    "gunicorn: raw floor (baseline)",
    "gunicorn: defaults, memory store / raw floor",
    "gunicorn: audit log off, memory store / raw floor",
    "gunicorn: defaults, sqlite store / raw floor",
    "gunicorn: audit log off, sqlite store / raw floor",
    "gunicorn: defaults, redis store / raw floor",
    "gunicorn: defaults, postgresql store / raw floor",
    "gunicorn: defaults, redis store / its ceiling",
    "gunicorn: defaults, postgresql store / its ceiling",
    "gunicorn: audit log on / off, memory store",
    "gunicorn: audit log on / off, sqlite store",
    "gunicorn: health endpoint probed 1/s, on / off",
    "gunicorn worker CPU per request: audit log off",
    "gunicorn worker CPU per request: defaults (audit line written)",
    "gunicorn worker CPU: the audit line's share",
    "gunicorn worker instructions per request: audit log off",
    "gunicorn worker instructions per request: defaults (audit line written)",
    "gunicorn worker instructions: the audit line's share",
    "reference: floor + one redis round trip / raw floor",
    "reference: floor + one postgresql round trip / raw floor",
    "redis: round trips per fail call",
    "postgresql: statements per fail call",
    "sqlite: statements per fail call",
    "memory: time per fail call",
    "sqlite: time per fail call",
    "redis: time per fail call",
    "postgresql: time per fail call",
    "memory: RSS growth",
    "sqlite: RSS growth",
    "redis: RSS growth",
    "postgresql: RSS growth",
    "sqlite: token poll get+swap p50, large / 1,000 live records",
    "redis: token poll get+swap p50, large / 1,000 live records",
    "postgresql: token poll get+swap p50, large / 1,000 live records",
    "uvicorn: raw ASGI floor (baseline)",
    "uvicorn: ASGI fail API (memory) / raw ASGI floor",
    "uvicorn: ASGI fail API (sqlite) / raw ASGI floor",
    "uvicorn: ASGI app wrapped / bare",
    "gunicorn: Django wrapped / bare",
    "gunicorn: raw floor (the family's baseline)",
    "gunicorn: auth/token authorization_pending, defaults (sqlite) / raw floor",
    "gunicorn: fail API, defaults (sqlite), family served too / raw floor",
    "gunicorn: fail API, family served too / not (sqlite)",
    "sqlite: auth/token poll p50, 10,000 / 1,000 pending requests",
    "redis: auth/token poll p50, 10,000 / 1,000 pending requests",
    "postgresql: auth/token poll p50, 10,000 / 1,000 pending requests",
    "in process: auth/token exchange that succeeds, sqlite / Keycloak's 120 grants/s per vCPU",
    "in process: auth/token exchange that succeeds, memory / Keycloak's 120 grants/s per vCPU",
    *(
        f"{server}: {row}"
        for server in ("uvicorn", "hypercorn")
        for row in (
            "raw ASGI floor of from_env's rows",
            "from_env, defaults (SQLite), audit on / raw ASGI floor",
            "from_env, memory store, audit on / raw ASGI floor",
            "from_env, redis store, audit on / raw ASGI floor",
            "from_env, postgresql store, audit on / raw ASGI floor",
            "from_env, postgresql store / its async ceiling",
            "from_env, redis store / its async ceiling",
            "from_env, sqlite store / its ceiling",
        )
    ),
]


@pytest.fixture(scope="module")
def chart_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chart") / "performance.png"


@pytest.fixture(scope="module")
def quick_run(chart_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--chart", str(chart_path)],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS)
def test_the_quick_profile_prints_every_row(quick_run: str, row: str) -> None:
    lines = [line for line in quick_run.splitlines() if line.startswith("|") and row in line]
    assert len(lines) == 1, f"row {row!r} not printed once in:\n{quick_run}"
    cells = [cell.strip() for cell in lines[0].strip("|").split("|")]
    # value column: a figure, or n/a with the reason in the detail column
    assert cells[2], lines[0]
    if cells[2] == "n/a":
        assert "not measured:" in cells[-1], lines[0]


@pytest.mark.slow
def test_the_chart_is_drawn(quick_run: str, chart_path: Path) -> None:
    assert chart_path.read_bytes().startswith(b"\x89PNG\r\n")
    assert chart_path.stat().st_size > 10_000


@pytest.mark.slow
def test_the_table_names_the_machine_and_the_profile(quick_run: str) -> None:
    assert "quick profile" in quick_run
    assert "cores" in quick_run
    assert "Python" in quick_run


def test_the_hot_path_profile_runs() -> None:
    pytest.importorskip("pyinstrument")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--profile-hot-path", "2000"],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "respond" in done.stdout
