"""SQLite under a thread-per-request server: connections are reused, not leaked."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ciba_middleware.stores import store_from_url


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thread_per_call_does_not_leak_connections(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 't.sqlite3'}")
    ticket = store.issue("1")
    store.exists("1", ticket)
    before = open_files()
    for _ in range(200):
        thread = threading.Thread(target=store.delete, args=("1", ticket))
        thread.start()
        thread.join()
    # One connection (database, WAL and shm files) serves them all, one thread after another.
    assert open_files() - before <= 3
    store.close()


def test_many_threads_at_once_share_the_file(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 't.sqlite3'}")
    tickets = [store.issue("1") for _ in range(64)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda t=t: results.append(store.delete("1", t))) for t in tickets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 64
    assert not any(store.exists("1", t) for t in tickets)
    store.close()


def _open_at_once(path: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        store_from_url(f"sqlite:///{path}").close()
    except Exception as exc:
        errors.put(repr(exc))


@pytest.mark.slow  # processes of their own: left to 3.11 (noxfile.SUBSET)
def test_workers_opening_a_new_file_at_once_all_start(tmp_path: Path) -> None:
    """A server's workers start together on a file none has made yet: SQLite answers "locked"
    at once, without waiting, to the one whose lock would deadlock; none may fail to start."""
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for attempt in range(30):
        barrier = context.Barrier(8)
        path = str(tmp_path / f"new-{attempt}.sqlite3")
        processes = [context.Process(target=_open_at_once, args=(path, barrier, errors)) for _ in range(8)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        assert [process.exitcode for process in processes] == [0] * 8
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
