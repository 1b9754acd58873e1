"""What keeps an SQLite delete cheap, and the guarantees kept with it.

The store checks on every call that it still runs in the process that opened its
connections (a ``getpid``, not an ``os.register_at_fork`` hook): a process forked from one
that used the store opens connections of its own, whether or not the fork ran Python's
at-fork hooks (uWSGI's workers do not).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ciba_middleware.stores.sqlite import SQLiteTicketStore


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
