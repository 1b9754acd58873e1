"""How long the SQLite store's ``delete_async`` holds the event loop, under write contention.

``python -m benchmarks.sqlite_loop [--calls N] [--writers K]``: K processes issue tickets
into the same file as fast as they can (each issue a write transaction, and now and then
the checkpoint that the commit filling the WAL runs), while this process calls
``delete_async`` on tickets it issued before. Each call's part on the loop (until it
returns, or hands the call to a worker thread) is timed by driving the coroutine's first
step by hand; printed: the median, p99, p99.9 and maximum on-loop time, and how many calls
went to a thread (the database was locked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from ciba_middleware.stores.sqlite import SQLiteTicketStore


def _writer(url: str, stop: float) -> None:
    store = SQLiteTicketStore.from_url(url)
    while time.monotonic() < stop:
        store.issue("writer", 60)
    store.close()


async def _deletes(store: SQLiteTicketStore, tickets: list[str]) -> tuple[list[float], int]:
    on_loop: list[float] = []
    handed = 0
    for ticket in tickets:
        coro = store.delete_async("svc", ticket)
        started = time.perf_counter()
        try:
            waiting = coro.send(None)  # the part on the loop: returns (StopIteration) or hands over
        except StopIteration:
            on_loop.append(time.perf_counter() - started)
            continue
        on_loop.append(time.perf_counter() - started)
        handed += 1
        # The thread's delete, not timed: waited for, then the coroutine finished with it.
        waiting._asyncio_future_blocking = False
        await asyncio.wait([waiting])
        with contextlib.suppress(StopIteration):
            coro.send(None)
    return on_loop, handed


def measure(calls: int, writers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{Path(work) / 'loop.sqlite3'}"
        SQLiteTicketStore.from_url(url).close()
        store = SQLiteTicketStore.from_url(url)
        tickets = [store.issue("svc", 600) for _ in range(calls)]
        stop = time.monotonic() + 60
        context = multiprocessing.get_context("spawn")
        procs = [context.Process(target=_writer, args=(url, stop)) for _ in range(writers)]
        for proc in procs:
            proc.start()
        time.sleep(1.0)  # the writers are writing
        on_loop, handed = asyncio.run(_deletes(store, tickets))
        for proc in procs:
            proc.kill()
            proc.join()
        store.close()
    on_loop.sort()
    return {
        "calls": float(calls),
        "handed to a thread": float(handed),
        "median us": statistics.median(on_loop) * 1e6,
        "p99 us": on_loop[int(len(on_loop) * 0.99)] * 1e6,
        "p99.9 us": on_loop[int(len(on_loop) * 0.999)] * 1e6,
        "max us": on_loop[-1] * 1e6,
    }


def reference(calls: int) -> dict[str, float]:
    """The same timing of a step that does no I/O (the memory store's delete): what the
    machine itself adds (a process preempted on a loaded host waits out others' time slices)."""
    from ciba_middleware.stores.memory import MemoryTicketStore

    store = MemoryTicketStore()
    tickets = [store.issue("svc", 600) for _ in range(calls)]
    timings = []
    for ticket in tickets:
        started = time.perf_counter()
        store.delete("svc", ticket)
        timings.append(time.perf_counter() - started)
    timings.sort()
    return {
        "median us": statistics.median(timings) * 1e6,
        "p99.9 us": timings[int(len(timings) * 0.999)] * 1e6,
        "max us": timings[-1] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--writers", type=int, default=1)
    args = parser.parse_args()
    for name, value in measure(args.calls, args.writers).items():
        print(f"{name}: {value:,.1f}")
    for name, value in reference(args.calls).items():
        print(f"reference, memory store's delete, {name}: {value:,.1f}")


if __name__ == "__main__":
    main()
