"""Section 4: store round trips per fail call, counted on the server, RSS over many calls,
and a token poll's record work from 1,000 to 1,000,000 records (benchmarks/records.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciba_middleware.stores import TicketStore, new_ticket

from . import apps, records
from .profiles import Profile
from .servers import ROOT
from .stats import Row
from .workload import POSTGRES_URL, REDIS_URL, Calls, StoreSpec, bodies

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def _calls_for(spec: StoreSpec, count: int) -> Calls:
    """Half the calls name a ticket issued in the store, half a well-formed unknown one."""
    store = spec.open()
    tickets = [store.issue(apps.SERVICE, ttl=3600) if i % 2 == 0 else new_ticket() for i in range(count)]
    store.close()
    return Calls.fail(bodies(tickets))


def _warm_app(spec: StoreSpec) -> tuple[WSGIApplication, TicketStore]:
    """The fail API on a store that has connected and run one call: what is counted next
    is the steady state, not connection set-up (SELECT, SCRIPT LOAD, SET ...)."""
    store = spec.open()
    app = apps.fail_api(store)
    Calls.fail(bodies([new_ticket()])).run(app, 1)
    return app, store


def redis_round_trips(spec: StoreSpec, count: int) -> Row:
    """Commands the server received from clients on the bench's DB during ``count`` calls,
    seen with MONITOR (INFO commandstats counts every client of the shared server)."""
    import redis

    calls = _calls_for(spec, count)
    db = int(REDIS_URL.rsplit("/", 1)[1])
    client = redis.Redis.from_url(REDIS_URL)
    app, store = _warm_app(spec)
    stopper = redis.Redis.from_url(REDIS_URL)
    stopper.ping()  # connected (and its SELECT sent) before the count starts
    before = _commandstats(client)
    seen: list[str] = []
    ready = threading.Event()
    marker = f"cibabench-stop-{os.getpid()}"

    def watch() -> None:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            ready.set()
            for entry in monitor.listen():
                command = entry.get("command", "")
                if marker in command:
                    return
                # Commands a Lua script runs show as "lua": they are not round trips.
                if entry.get("db") == db and entry.get("client_type") != "lua":
                    seen.append(command.split(" ", 1)[0].upper())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.2)
    calls.run(app, count)
    store.close()
    stopper.echo(marker)
    stopper.close()
    thread.join(30)
    after = _commandstats(client)
    client.close()
    kinds = sorted(set(seen))
    global_delta = sum(after.get(k, 0) - before.get(k, 0) for k in after)
    return Row(
        "4 cost per call",
        "redis: round trips per fail call",
        len(seen) / count,
        "",
        target=1.0,
        bound="max",
        detail=f"{len(seen)} commands on DB {db} for {count} calls ({', '.join(kinds)}), by MONITOR; "
        f"INFO commandstats delta {global_delta} (every client of the server)",
    )


def _commandstats(client: Any) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def postgres_round_trips(spec: StoreSpec, count: int) -> Row:
    """Statements on the bench's own table during ``count`` calls, from pg_stat_user_tables
    (pg_stat_statements is not loaded on the shared server): every statement the store
    sends for a delete reads the table by its primary key, so it shows as one index scan."""
    import psycopg

    calls = _calls_for(spec, count)
    table = spec.url.rsplit("table=", 1)[1]
    # Not warmed with a call: its statement's counters could reach the table's after
    # "before" is read. Connecting runs no statement on the table.
    store = spec.open()
    app = apps.fail_api(store)

    def table_stats() -> tuple[int, int, int]:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT coalesce(idx_scan, 0), coalesce(seq_scan, 0), n_tup_del FROM pg_stat_user_tables "
                "WHERE relname = %s",
                (table,),
            ).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    time.sleep(1.2)  # the issuing backends' statistics reach the shared counters
    before = table_stats()
    calls.run(app, count)
    store.close()  # its backends end, and flush their counters
    deadline = time.monotonic() + 5
    after = table_stats()
    while after[0] + after[1] - before[0] - before[1] < count and time.monotonic() < deadline:
        time.sleep(0.3)
        after = table_stats()
    scans = after[0] + after[1] - before[0] - before[1]
    deleted = after[2] - before[2]
    return Row(
        "4 cost per call",
        "postgresql: statements per fail call",
        scans / count,
        "",
        target=1.0,
        bound="max",
        detail=f"{scans} scans of the bench table for {count} calls, {deleted} rows deleted "
        f"(half the tickets existed), by pg_stat_user_tables; autocommit, so one statement is one round trip",
    )


def sqlite_statements(spec: StoreSpec, count: int) -> Row:
    """SQLite is a library, not a server: count the statements its connection runs."""
    calls = _calls_for(spec, count)
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(lambda statement: statements.append(statement) if counting else None)
        return conn

    # Every connection the store opens from here on reports its statements.
    counting = False
    sqlite3.connect = traced  # type: ignore[assignment]
    try:
        app, store = _warm_app(spec)
        counting = True
        calls.run(app, count)
        counting = False
        store.close()
    finally:
        sqlite3.connect = connect
    return Row(
        "4 cost per call",
        "sqlite: statements per fail call",
        len(statements) / count,
        "",
        target=1.0,
        bound="max",
        detail=f"{len(statements)} statements for {count} calls, by sqlite3's trace callback",
    )


def time_per_call(spec: StoreSpec, count: int, memory_us: float | None) -> tuple[Row, float]:
    """Wall time of one fail call in process, one thread, half the tickets existing: what
    a store adds to the middleware's own few microseconds."""
    calls = _calls_for(spec, count)
    app, store = _warm_app(spec)
    try:
        started = time.perf_counter()
        calls.run(app, count)
        per_call = (time.perf_counter() - started) / count * 1e6
    finally:
        store.close()
    detail = "half the tickets existed; one thread, in process"
    if memory_us is not None and spec.name != "memory":
        detail = f"{per_call - memory_us:,.0f} us more than with memory://; {detail}"
    return Row("4 cost per call", f"{spec.name}: time per fail call", per_call, "us", detail=detail), per_call


def rss_growth(spec: StoreSpec, count: int) -> Row:
    """RSS of a fresh process after a warm-up, then after ``count`` more calls."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.rss", spec.url, str(count)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    growth = (result["after_kib"] - result["before_kib"]) / 1024
    return Row(
        "4 cost per call",
        f"{spec.name}: RSS growth over {count:,} calls",
        growth,
        "MB",
        target=5.0,
        bound="max",
        detail=f"RSS {result['before_kib'] / 1024:.1f} MB after {result['warmup']:,} warm-up calls, "
        f"{result['after_kib'] / 1024:.1f} MB after {count:,} more ({result['seconds']:.1f} s)",
    )


def all_rows(profile: Profile, stores: Sequence[StoreSpec], log_dir: Path) -> list[Row]:
    rows: list[Row] = []
    by_name = {spec.name: spec for spec in stores}
    for name, counter in (
        ("redis", redis_round_trips),
        ("postgresql", postgres_round_trips),
        ("sqlite", sqlite_statements),
    ):
        spec = by_name.get(name)
        label = "statements" if name != "redis" else "round trips"
        if spec is None or not spec.available:
            why = spec.why if spec else "not configured"
            rows.append(
                Row(
                    "4 cost per call", f"{name}: {label} per fail call", float("nan"), "", detail=f"not measured: {why}"
                )
            )
            continue
        rows.append(counter(spec, profile.count_calls))
    memory_us: float | None = None
    for spec in stores:
        if not spec.available:
            detail = f"not measured: {spec.why}"
            rows.append(Row("4 cost per call", f"{spec.name}: time per fail call", float("nan"), "us", detail=detail))
            continue
        row, per_call = time_per_call(spec, profile.count_calls, memory_us)
        memory_us = per_call if spec.name == "memory" else memory_us
        rows.append(row)
    for spec in stores:
        if not spec.available:
            rows.append(
                Row(
                    "4 cost per call",
                    f"{spec.name}: RSS growth",
                    float("nan"),
                    "MB",
                    detail=f"not measured: {spec.why}",
                )
            )
            continue
        rows.append(rss_growth(spec, profile.rss_calls))
    rows += records.all_rows(profile, stores)
    return rows
