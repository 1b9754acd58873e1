"""The network stores' watchdog: a client-side deadline for calls that would wait on a socket.

psycopg has no client-side timeout for a query: if the server is frozen, or the network
drops packets without a reset, a call would wait for TCP to give up, many minutes. The
watchdog shuts such a call's socket down, which wakes it with a connection error at once.
On an event loop it also stands in for a timer per call (PostgreSQL's ``delete_async``,
the Redis store's reads on the loop), which costs more than the watchdog's guard.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

__all__ = ["Guard", "Unanswered", "Watchdog"]

#: How often the watchdog looks at the calls out, and after how many empty looks it sleeps.
_TICK = 0.1
_IDLE_TICKS = 10


class Unanswered(Exception):
    """A call the watchdog cut short: the server is not answering."""


class Guard:
    __slots__ = ("deadline", "fd", "fired")

    def __init__(self, deadline: float, fd: int) -> None:
        self.deadline = deadline
        self.fd = fd
        self.fired = False


class Watchdog:
    """Shuts down the socket of a call that got no answer in time.

    psycopg has no client-side timeout for a query: if the server is frozen, or the network
    drops packets without a reset, a call would wait for TCP to give up, many minutes.
    Shutting the socket down wakes the waiting call with a connection error at once, and the
    pool then discards the connection. One thread per process: it looks at the calls out
    every tenth of a second while calls come, and sleeps once none has come for a second.
    Only the call that finds it asleep wakes it, so a busy store does not pay a thread
    switch per call.
    """

    def __init__(self) -> None:
        self._guards: set[Guard] = set()
        # A plain lock, taken directly by watch and release (a Condition's own ``with``
        # is one more Python call each time); the condition only to sleep and wake.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopped = False
        self._asleep = True
        self._added = 0
        threading.Thread(target=self._watch, name="ciba-tickets-watchdog", daemon=True).start()

    def watch(self, fd: int, seconds: float) -> Guard:
        """Watch the call about to run on socket ``fd``; :meth:`release` its guard after it.

        Two plain methods rather than a context manager: the generator and its ``with``
        cost more than the lock, on every call.
        """
        guard = Guard(time.monotonic() + seconds, fd)
        with self._lock:
            self._guards.add(guard)
            self._added += 1
            if self._asleep:
                self._asleep = False
                self._cond.notify()
        return guard

    def release(self, guard: Guard) -> None:
        """The call is over. Before the connection goes back to the pool, under the lock
        the watchdog fires under: it never touches a socket no longer ours."""
        with self._lock:
            self._guards.discard(guard)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _watch(self) -> None:
        idle_ticks = 0
        with self._cond:
            while not self._stopped:
                if self._asleep:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for guard in [g for g in self._guards if g.deadline <= now]:
                    self._guards.discard(guard)
                    guard.fired = True
                    _shut_down(guard.fd)
                if self._guards or self._added:
                    idle_ticks = 0
                    self._added = 0
                else:
                    idle_ticks += 1
                    if idle_ticks >= _IDLE_TICKS:
                        self._asleep = True
                        idle_ticks = 0
                        continue
                self._cond.wait(_TICK)


def _shut_down(fd: int) -> None:
    """Shut the socket down for both directions, leaving the descriptor to its owner."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
