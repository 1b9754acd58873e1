"""SQLite under a thread-per-request server: connections are reused, not leaked."""

from __future__ import annotations

import os
import threading
from pathlib import Path

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
