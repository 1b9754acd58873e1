"""``python -m benchmarks [--quick] [--sections 1,2,3,4,5,6,asgi]``: run the suite, print the table.

The full profile takes about 8 minutes on 2 cores; ``--quick`` runs every row once, briefly,
as a smoke test (its figures mean little). ``--profile-hot-path`` profiles the fail API in
process with pyinstrument instead. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import asgi_users, chart, costs, endtoend, family, frameworks, inprocess, loadgen
from .profiles import PROFILES
from .stats import Row, table
from .workload import cleanup, new_run_id, store_specs


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    import gunicorn

    wrk = "wrk" if loadgen.have_wrk() else "Python client (no wrk)"
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, gunicorn {gunicorn.__version__}, load generator: {wrk}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def profile_hot_path(calls: int, profiler_name: str = "pyinstrument") -> None:
    """``calls`` in-process fail calls, under pyinstrument (or bare, for py-spy)."""
    from ciba_middleware.stores import new_ticket

    from . import apps
    from .workload import Calls, bodies

    prepared = Calls.fail(bodies(new_ticket() for _ in range(1000)))
    app = apps.fail_api()
    prepared.run(app, 1000)
    if profiler_name == "none":
        prepared.run(app, calls)
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001)
    profiler.start()
    prepared.run(app, calls)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke profile: every row, briefly")
    parser.add_argument("--sections", default="1,2,3,4,5,6,asgi", help="which sections to run (default: all)")
    parser.add_argument("--rate", type=float, help="the offered load for p50/p99 (default: half the slowest)")
    parser.add_argument("--workers", type=int, help="gunicorn workers per server (default: one per core)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file as JSON")
    parser.add_argument("--chart", type=Path, help="also draw the shares as a PNG here (docs/performance.png)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and the bodies")
    parser.add_argument("--profile-hot-path", type=int, metavar="CALLS", help="profile CALLS in-process calls")
    parser.add_argument(
        "--profiler", choices=("pyinstrument", "none"), default="pyinstrument", help="none: for py-spy from outside"
    )
    args = parser.parse_args(argv)

    if args.profile_hot_path:
        profile_hot_path(args.profile_hot_path, args.profiler)
        return 0

    profile = PROFILES["quick" if args.quick else "full"]
    if args.workers:
        profile = dataclasses.replace(profile, workers=args.workers)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not loadgen.have_wrk():
        print("note: not using wrk (apt-get install wrk); the Python client is slower", file=sys.stderr)
    started = time.monotonic()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"# ciba-middleware benchmarks, {profile.name} profile, {stamp}")
    print(f"# {machine()}")
    workers, connections = profile.server_workers, profile.connections
    print(f"# gunicorn: {workers} sync workers per server; wrk: 1 thread, {connections} connections")
    run_id = new_run_id()
    work_dir = Path(tempfile.mkdtemp(prefix="ciba-bench-"))
    stores = store_specs(work_dir, run_id)
    rows: list[Row] = []
    failed = False
    try:
        for section in sections:
            section_started = time.monotonic()
            if section in ("1", "2"):
                rows += inprocess.all_rows(profile, [section], work_dir)
            if section == "1":
                rows += endtoend.pass_through(profile, work_dir)
            elif section == "3":
                rows += endtoend.fail_end_to_end(profile, stores, work_dir, args.rate)
                rows += endtoend.audit_cpu(profile, work_dir)
                rows += endtoend.audit_instructions(profile, work_dir)
            elif section == "4":
                rows += costs.all_rows(profile, stores, work_dir)
            elif section == "5":
                rows += frameworks.all_rows(profile, stores, work_dir)
            elif section == "6":
                rows += family.all_rows(profile, stores, work_dir)
            elif section == "asgi":
                rows += asgi_users.all_rows(profile, stores, work_dir)
            print(f"# section {section} done in {time.monotonic() - section_started:.0f} s", file=sys.stderr)
    except Exception:
        failed = True
        traceback.print_exc()
        print("# the run failed: the rows measured so far follow", file=sys.stderr)
    finally:
        for spec in stores:
            cleanup(spec, run_id)
        if not args.keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(f"# {len(rows)} rows in {time.monotonic() - started:.0f} s; rounds alternate, figures are medians")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2, default=str))
    if args.chart:
        chart.draw(rows, args.chart, f"ciba-middleware benchmarks, {profile.name} profile, {stamp}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
