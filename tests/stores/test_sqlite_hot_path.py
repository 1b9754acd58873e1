"""What keeps an SQLite delete cheap, and the guarantees kept with it.

A delete writes one page (no index beside the table), or none when the ticket is not
there; expired rows are swept by a scan instead; a locked database is waited for, up to
the store's timeout, in finer steps than SQLite's own; and a process forked from one that
used the store opens connections of its own, whether or not the fork ran Python's
``os.register_at_fork`` hooks (uWSGI's workers do not).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ciba_middleware.errors import StoreError
from ciba_middleware.stores.sqlite import SWEEP_INTERVAL, SQLiteTicketStore


def wal_size(path: Path) -> int:
    return os.path.getsize(f"{path}-wal")


def rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM ciba_tickets").fetchone()
    return int(count)


def test_a_delete_writes_one_page_and_a_miss_writes_none(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = SQLiteTicketStore(str(path))
    ticket = store.issue("42", ttl=60)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (page,) = conn.execute("PRAGMA page_size").fetchone()
    before = wal_size(path)
    assert store.delete("42", "T" * 43) is False
    assert store.delete("43", ticket) is False
    assert wal_size(path) == before
    assert store.delete("42", ticket) is True
    assert wal_size(path) == before + 24 + page  # one WAL frame: its header and one page
    store.close()


def test_the_index_of_an_earlier_version_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE ciba_tickets (ticket TEXT PRIMARY KEY, service TEXT NOT NULL, expires_at REAL NOT NULL)"
            " WITHOUT ROWID"
        )
        conn.execute("CREATE INDEX ciba_tickets_expires_at ON ciba_tickets (expires_at)")
        conn.execute("INSERT INTO ciba_tickets VALUES (?, '42', ?)", ("t" * 43, time.time() + 60))
    store = SQLiteTicketStore(str(path))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall() == []
    assert store.delete("42", "t" * 43) is True
    store.close()


def test_expired_rows_are_swept_at_the_first_issue_then_once_an_interval(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    first = SQLiteTicketStore(str(path))
    live = first.issue("42", ttl=60)
    for _ in range(3):
        first.issue("42", ttl=0.05)
    time.sleep(0.1)
    assert rows(path) == 4  # expired, never seen, not yet swept
    assert first.sweep() == 3
    assert first.sweep() == 0
    for _ in range(3):
        first.issue("42", ttl=0.05)
    time.sleep(0.1)
    first.issue("42", ttl=60)  # within SWEEP_INTERVAL of the first store's sweep
    assert rows(path) == 5
    assert SWEEP_INTERVAL >= 1  # this test takes far less
    second = SQLiteTicketStore(str(path))
    second.issue("42", ttl=60)  # a store's first issue sweeps
    assert rows(path) == 3
    assert first.delete("42", live) is True
    first.close()
    second.close()


@contextlib.contextmanager
def write_locked(path: Path, seconds: float) -> Iterator[None]:
    """Another connection holds the write lock for ``seconds``, from a thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(seconds, lambda: conn.execute("ROLLBACK"))
    timer.start()
    try:
        yield
    finally:
        timer.join()
        conn.close()


def test_a_locked_database_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = SQLiteTicketStore(str(path), timeout=5)
    ticket = store.issue("42", ttl=60)
    with write_locked(path, 0.3):
        started = time.monotonic()
        assert store.delete("42", ticket) is True
        assert time.monotonic() - started >= 0.25
    store.close()


def test_a_database_locked_longer_than_the_timeout_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = SQLiteTicketStore(str(path), timeout=0.3)
    ticket = store.issue("42", ttl=60)
    with write_locked(path, 1.5):
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"^sqlite: database is locked$"):
            store.delete("42", ticket)
        assert 0.3 <= time.monotonic() - started < 1.2
    assert store.delete("42", ticket) is True
    store.close()


def _libc_fork() -> int:
    """fork(2) itself, as uWSGI forks its workers: Python's at-fork hooks do not run."""
    return int(ctypes.CDLL(None, use_errno=True).fork())


def _opened(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count


@pytest.mark.parametrize("fork", [pytest.param(os.fork, id="os.fork"), pytest.param(_libc_fork, id="no-hooks")])
def test_a_forked_process_opens_its_own_connection(tmp_path: Path, fork: Callable[[], int]) -> None:
    path = tmp_path / "t.sqlite3"
    store = SQLiteTicketStore(str(path))
    tickets = [store.issue("42", ttl=60) for _ in range(2)]
    assert store.exists("42", tickets[0])  # an idle connection, which the child inherits
    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # the child: report, then leave without cleanup
        try:
            before = _opened(path)
            deleted = store.delete("42", tickets[0])
            os.write(write, f"{deleted} {_opened(path) - before}".encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the child did not finish")
        time.sleep(0.01)
    report = os.read(read, 100).decode()
    os.close(read)
    assert report == "True 1"  # deleted, on a file descriptor of its own
    # The parent's connection was left alone and still works.
    assert not store.exists("42", tickets[0])
    assert store.delete("42", tickets[1]) is True
    store.close()
