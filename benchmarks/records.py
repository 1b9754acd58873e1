"""Section 4's record rows: a token poll's store work, flat from 1,000 to 1,000,000 records.

CIBA's hot path is the token poll: every pending request is polled every ``interval``, and
each poll reads the request's record and swaps it for one that says when it was polled
(``get`` + ``swap``, issue 25). Its time must not grow with the number of pending requests:
the p50 of a poll with 1,000,000 live records within 1.2x of the p50 with 1,000, on SQLite,
Redis and PostgreSQL.

Stores of their own (SQLite files, Redis key prefixes, PostgreSQL tables), removed whole
afterwards: 1,000 records added through the store; the rest of the large store's added in
bulk (a Redis pipeline of ``SET NX PX``, a PostgreSQL ``COPY`` into the record table;
SQLite through the store's own ``add``, its layout being the store's business). Each poll
is timed alone, one thread, in process; the ratio of the two medians is the row (how the
two sizes are polled in turn: :func:`poll_flatness`).

``python -m benchmarks.records [--quick] [--large N] [--polls N] [--stores sqlite,redis]``
runs these rows alone; the quick profile (and the smoke test) uses 10,000 records.
"""

from __future__ import annotations

import argparse
import datetime
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.base import RecordStore

from .apps import SERVICE
from .profiles import PROFILES, Profile
from .stats import Row, median, table
from .workload import StoreSpec, cleanup, new_run_id, store_specs

#: The stores whose rows the issue asks for (memory:// has no size to speak of).
STORES = ("sqlite", "redis", "postgresql")
SMALL = 1000
#: The records' life: far beyond the run.
TTL = 3600.0
#: A pending request's state, about the size the family keeps; the poll rewrites its last
#: 14 bytes (when it was polled, and the closing of the JSON).
VALUE = (
    b'{"state":"pending","client":"3000300200","subject":null,"scopes":["openid","payments"],'
    b'"delivery":"poll","interval":5,"binding":"W4SCT","hint":"login_hint","acr":null,'
    b'"expires":1797000000,"notification":null,"pad":"' + b"x" * 40 + b'","polled":"000000000000"}'
)
_BATCH = 10_000
#: Alternating rounds of polls on the small and the large store (SQLite, PostgreSQL).
ROUNDS = 10


def _own_url(spec: StoreSpec, part: str) -> str:
    """A store beside the section's own (whose URL ends with its key prefix or table), named
    by ``part``: its records never mix with the other rows' tickets, and it is removed whole."""
    if spec.name == "sqlite":
        return spec.url.removesuffix(".sqlite3") + f"-records-{part}.sqlite3"
    if spec.name == "redis":
        return spec.url + f"records{part}:"  # key_prefix=cibabench:{run}:records{part}:
    return spec.url + f"_rec{part}"  # table=ciba_bench_{run}_rec{part}: records in ..._rec{part}_records


def _poll(store: RecordStore, key: str, count: int) -> bool:
    """A token poll's store work: read the request, write back when it was polled."""
    value = store.get(SERVICE, key)
    if value is None:
        return False
    return store.swap(SERVICE, key, value, value[:-14] + b'%012d"}' % count)


def _time_polls(store: RecordStore, keys: Sequence[str], polls: int, rng: random.Random) -> list[float]:
    """Microseconds of each of ``polls`` polls of keys drawn from ``keys``."""
    perf = time.perf_counter_ns
    times = []
    for i in range(polls):
        key = rng.choice(keys)
        started = perf()
        polled = _poll(store, key, i)
        times.append((perf() - started) / 1000)
        if not polled:
            raise RuntimeError(f"the poll of a live record failed: {key}")
    return times


def _keys(start: int, stop: int) -> list[str]:
    return [f"areq:{i:012d}" for i in range(start, stop)]


def _bulk_add(spec: StoreSpec, store: Any, keys: list[str], value: bytes = VALUE, ttl: float = TTL) -> None:
    """Add records (each ``value``, living ``ttl`` seconds) as the backend's bulk path allows
    (see the module doc). Section 6 adds the CIBA family's pending states the same way."""
    if spec.name == "redis":
        milliseconds = int(ttl * 1000)
        for start in range(0, len(keys), _BATCH):
            pipe = store.client.pipeline(transaction=False)
            for key in keys[start : start + _BATCH]:
                pipe.set(store._record_key(SERVICE, key), value, nx=True, px=milliseconds)
            pipe.execute()
    elif spec.name == "postgresql":
        import psycopg

        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
        with psycopg.connect(store.conninfo, autocommit=True) as conn, conn.cursor() as cursor:
            copy_sql = f"COPY {store._records_qualified} (service, key, value, expires_at) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for key in keys:
                    copy.write_row((SERVICE, key, value, expires))
            cursor.execute(f"ANALYZE {store._records_qualified}")
    else:
        for key in keys:
            store.add(SERVICE, key, value, ttl)


def _unlink_bulk(store: Any, keys: list[str]) -> None:
    """Redis: remove the records of ``keys`` (UNLINK: freed by the server in the background)."""
    for start in range(0, len(keys), _BATCH):
        store.client.unlink(*(store._record_key(SERVICE, key) for key in keys[start : start + _BATCH]))


def _analyze(store: Any) -> None:
    """PostgreSQL: the planner's statistics of the record table, as autovacuum would gather."""
    import psycopg

    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        conn.execute(f"ANALYZE {store._records_qualified}")


def _remove(spec: StoreSpec, url: str, store: Any) -> None:
    if spec.name == "redis":
        client = store.client
        prefix = url.rsplit("key_prefix=", 1)[1]
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=_BATCH):
            batch.append(key)
            if len(batch) >= _BATCH:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    elif spec.name == "postgresql":
        import psycopg

        with psycopg.connect(store.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS {store._records_qualified}, "{store.table}"')
    store.close()
    if spec.name == "sqlite":
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def poll_flatness(spec: StoreSpec, large: int, polls: int) -> Row:
    """The row: p50 of a poll with ``large`` live records over the p50 with 1,000.

    SQLite and PostgreSQL: two stores side by side (two files, two tables), 1,000 records in
    one and ``large`` in the other, polled in alternating rounds, so that the machine's load
    falls on both alike. Redis: one store, polled before the bulk is added, with it, and
    after it was removed (two key prefixes would share one database's keyspace, and the
    small store would be as large as the other).
    """
    name = f"{spec.name}: token poll get+swap p50, large / {SMALL:,} live records"
    if not spec.available:
        return Row("4 cost per call", name, float("nan"), "x", detail=f"not measured: {spec.why}")
    opened: list[tuple[str, Any]] = []

    def open_store(part: str) -> Any:
        url = _own_url(spec, part)
        store = store_from_url(url)
        opened.append((url, store))
        return store

    try:
        small_store = open_store("small")
        if not isinstance(small_store, RecordStore):
            why = f"not measured: the {spec.name} store keeps no records in this version"
            return Row("4 cost per call", name, float("nan"), "x", detail=why)
        rng = random.Random(25)
        small_keys, bulk_keys = _keys(0, SMALL), _keys(SMALL, large)
        all_keys = small_keys + bulk_keys
        for key in small_keys:
            small_store.add(SERVICE, key, VALUE, TTL)
        small_times: list[float] = []
        large_times: list[float] = []
        if spec.name == "redis":
            _time_polls(small_store, small_keys, min(200, polls), rng)  # warm-up
            small_times += _time_polls(small_store, small_keys, polls // 2, rng)
            started = time.monotonic()
            _bulk_add(spec, small_store, bulk_keys)
            loaded = time.monotonic() - started
            large_times += _time_polls(small_store, all_keys, polls, rng)
            _unlink_bulk(small_store, bulk_keys)
            small_times += _time_polls(small_store, small_keys, polls - polls // 2, rng)
        else:
            large_store = open_store("large")
            for key in small_keys:
                large_store.add(SERVICE, key, VALUE, TTL)
            started = time.monotonic()
            _bulk_add(spec, large_store, bulk_keys)
            loaded = time.monotonic() - started
            if spec.name == "postgresql":
                _analyze(small_store)
                _analyze(large_store)
            for store, keys in ((small_store, small_keys), (large_store, all_keys)):
                _time_polls(store, keys, min(200, polls), rng)  # warm-up
            per_round = max(1, polls // ROUNDS)
            for index in range(ROUNDS):
                order = [(small_store, small_keys, small_times), (large_store, all_keys, large_times)]
                for store, keys, times in order[:: 1 if index % 2 == 0 else -1]:
                    times += _time_polls(store, keys, per_round, rng)
        small, big = median(small_times), median(large_times)
    finally:
        for url, store in opened:
            _remove(spec, url, store)
    how = "before and after the bulk, one store" if spec.name == "redis" else f"{ROUNDS} alternating rounds, two stores"
    return Row(
        "4 cost per call",
        name,
        big / small,
        "x",
        target=1.2,
        bound="max",
        detail=f"p50 {big:,.0f} us with {large:,} records, {small:,.0f} us with {SMALL:,}; {len(large_times):,} and "
        f"{len(small_times):,} polls (get + swap, one thread, in process; {how}); "
        f"{len(bulk_keys):,} added in {loaded:.0f} s",
    )


def all_rows(profile: Profile, stores: Sequence[StoreSpec]) -> list[Row]:
    by_name = {spec.name: spec for spec in stores}
    rows = []
    for name in STORES:
        spec = by_name.get(name)
        if spec is None:
            rows.append(
                Row(
                    "4 cost per call",
                    f"{name}: token poll get+swap p50, large / {SMALL:,} live records",
                    float("nan"),
                    "x",
                    detail="not measured: not configured",
                )
            )
            continue
        rows.append(poll_flatness(spec, profile.records_large, profile.record_polls))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.records", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke profile's sizes")
    parser.add_argument("--large", type=int, help="live records of the large store (default: the profile's)")
    parser.add_argument("--polls", type=int, help="polls timed per store size (default: the profile's)")
    parser.add_argument("--stores", default=",".join(STORES), help="which stores (default: all three)")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    large = args.large or profile.records_large
    polls = args.polls or profile.record_polls
    if large <= SMALL:
        parser.error(f"--large must be above {SMALL}")
    wanted = [name.strip() for name in args.stores.split(",") if name.strip()]
    run_id = new_run_id()
    work_dir = Path(tempfile.mkdtemp(prefix="ciba-bench-"))
    specs = store_specs(work_dir, run_id)
    try:
        rows = [poll_flatness(spec, large, polls) for spec in specs if spec.name in wanted]
    finally:
        for spec in specs:
            cleanup(spec, run_id)
        shutil.rmtree(work_dir, ignore_errors=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
