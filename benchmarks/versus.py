"""``python -m benchmarks.versus REV``: the end-to-end rows against an earlier commit.

A change that moves code around (a refactor) must not make the rows users see drop: the
fail API as users run it and an app it wraps, under gunicorn and under uvicorn. Each of
these is served twice, from this tree and from ``REV``'s (``git archive`` into a temporary
directory, its own ``benchmarks`` included), by the same interpreter and packages; the
variants run in alternating rounds as in the suite (:func:`benchmarks.endtoend._rounds`),
and each round gives one ratio, this tree / ``REV``. A median near 100% with an
interquartile range around it is no drop; one below the range is.

::

    python -m benchmarks.versus 88e5ef7^                 # 15 rounds of 2 s per variant
    python -m benchmarks.versus main --rounds 5 --seconds 1

The variants (each needs its app in both trees):

- gunicorn, ``from_env()`` with only ``CIBA_TOKENS`` and ``memory://`` (the audit log on),
  the fail API (section 3's ``defaults, memory store``);
- gunicorn, a Flask app wrapped, ``GET /hello`` passing through (section 1);
- uvicorn, the ASGI fail API on the memory store (section 5's ``asgi_fail``);
- uvicorn, an ASGI app wrapped, ``GET /hello`` passing through (section 5).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from . import loadgen
from .apps import FAIL_PATH, HELLO_PATH, TOKEN, defaults_env
from .endtoend import MEMORY, _rounds
from .frameworks import ASGI_APP
from .loadgen import Target
from .profiles import FULL
from .servers import ROOT, servers
from .stats import Row, median, ratios, spread, table
from .workload import bodies, issue, write_bodies

__all__ = ["VARIANTS", "Variant", "compare", "export", "main"]


class Variant(NamedTuple):
    """One row: an app of ``benchmarks.apps`` (``asgi`` False) or ``benchmarks.asgi_apps``."""

    label: str
    app: str
    env: dict[str, str]
    path: str
    asgi: bool = False


VARIANTS = (
    Variant("gunicorn: fail API, defaults (memory)", "defaults", defaults_env(MEMORY.url), FAIL_PATH),
    Variant("gunicorn: Flask app wrapped, passing through", "flask_wrapped", {}, HELLO_PATH),
    Variant("uvicorn: ASGI fail API (memory)", "asgi_fail", {"CIBA_STORE_URL": MEMORY.url}, FAIL_PATH, asgi=True),
    Variant("uvicorn: ASGI app wrapped, passing through", "asgi_wrapped", {}, HELLO_PATH, asgi=True),
)


def export(rev: str, into: Path) -> str:
    """Write the tree of ``rev`` into ``into`` (``git archive``); return its short hash.

    Raises :class:`SystemExit` with git's message when ``rev`` names no commit.
    """
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"], capture_output=True, text=True
    )
    if found.returncode != 0:
        raise SystemExit(f"benchmarks.versus: {rev!r} is not a commit of {ROOT}: {found.stderr.strip()}")
    short = found.stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", short], capture_output=True, check=True)
    with tempfile.TemporaryFile() as tar:
        tar.write(archive.stdout)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as tree:
            tree.extractall(into, filter="data")
    return short


def compare(
    base: Path, name: str, *, rounds: int, seconds: float, log_dir: Path, variants: Sequence[Variant] = VARIANTS
) -> list[Row]:
    """Each variant from this tree and from ``base`` (the tree of ``name``), in alternating
    rounds: one row per variant, the median ratio this / ``name``."""
    profile = FULL
    tickets = profile.tickets
    targets: dict[str, Target] = {}
    with contextlib.ExitStack() as stack:
        for asgi in (False, True):
            group = [v for v in variants if v.asgi is asgi]
            if not group:
                continue
            specs = {f"{side}:{v.label}": (v.app, v.env) for v in group for side in ("this", "base")}
            running = stack.enter_context(
                servers(
                    specs,
                    workers=profile.server_workers,
                    log_dir=log_dir,
                    asgi=ASGI_APP if asgi else None,
                    roots={key: base for key in specs if key.startswith("base:")},
                )
            )
            for key, server in running.items():
                variant = next(v for v in group if key.endswith(f":{v.label}"))
                if variant.path == FAIL_PATH:
                    payloads = bodies(issue(MEMORY, tickets))
                    safe = key.replace(":", "-").replace(" ", "_").replace("/", "_").replace(",", "")
                    path = write_bodies(log_dir / f"bodies-{safe}.txt", payloads)
                    targets[key] = Target(server.url, FAIL_PATH, path, TOKEN)
                else:
                    targets[key] = Target(server.url, HELLO_PATH)
        for target in targets.values():
            loadgen.check_answers(target)
            loadgen.warm(target)
        runs = _rounds(targets, profile, rounds, seconds)
    rows = []
    for variant in variants:
        this = [r.requests_per_s for r in runs[f"this:{variant.label}"]]
        before = [r.requests_per_s for r in runs[f"base:{variant.label}"]]
        per_round = ratios(this, before)
        rows.append(
            Row(
                "versus",
                f"{variant.label}: this tree / {name}",
                median(per_round),
                "%",
                baseline=f"{name} {median(before):,.0f} req/s, this tree {median(this):,.0f}",
                spread=spread(per_round),
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.versus",
        description="The end-to-end rows of this tree against those of an earlier commit, in alternating rounds.",
    )
    parser.add_argument("rev", help="the commit to compare with (anything git rev-parse takes)")
    parser.add_argument("--rounds", type=int, default=FULL.rounds, help=f"rounds (default {FULL.rounds})")
    parser.add_argument(
        "--seconds",
        type=float,
        default=FULL.seconds,
        help=f"seconds of load per variant and round (default {FULL.seconds:g})",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds more than 0")
    if not loadgen.have_wrk():
        print("note: not using wrk (apt-get install wrk); the Python client is slower", file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ciba-versus-") as tmp:
        short = export(args.rev, Path(tmp) / "base")
        log_dir = Path(tmp) / "logs"
        log_dir.mkdir()
        rows = compare(Path(tmp) / "base", short, rounds=args.rounds, seconds=args.seconds, log_dir=log_dir)
    print(f"# this tree against {args.rev} ({short}): {args.rounds} rounds of {args.seconds:g} s per variant")
    print(f"# {len(rows)} rows in {time.monotonic() - started:.0f} s; rounds alternate, figures are medians")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
