"""A health endpoint for load balancers: :class:`HealthEndpoint` (served by every adapter),
and :class:`HealthMiddleware` (the same in front of any WSGI app).

``GET {path}`` answers ``200 {"store": "ok"}`` when the ticket store answered a ping
within ``timeout`` seconds, and ``503 {"store": "unavailable"}`` otherwise, never cached
(``Cache-Control: no-store``). Every other request goes to the wrapped app after one
string comparison. Off by default; ``CIBA_HEALTH_PATH=/healthz`` turns it on
(``docs/operations.md``).

A ping's result is kept for :data:`CACHED_SECONDS`, so that load balancers probing every
second, several at once, cost at most one ping per worker and second. The ping runs in a
thread of its own and the request waits for it at most ``timeout`` seconds: a store that
hangs makes the answer a 503 on time instead of holding the worker, and no second ping
is started while one is still out.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .core import Answer, new_answer
from .errors import ConfigurationError
from .metrics import check_path
from .stores.base import TicketStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["CACHED_SECONDS", "DEFAULT_TIMEOUT", "MAX_TIMEOUT", "HealthEndpoint", "HealthMiddleware", "StoreProbe"]

log = logging.getLogger(__name__)

#: How long one ping's answer serves the probes that follow it.
CACHED_SECONDS = 1.0
#: How long a probe waits for the store's ping by default, and at most.
DEFAULT_TIMEOUT = 1.0
MAX_TIMEOUT = 60.0

_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))
_OK = json.dumps({"store": "ok"}).encode()
_DOWN = json.dumps({"store": "unavailable"}).encode()


class StoreProbe:
    """Whether ``store`` answers a ping within ``timeout`` seconds, at most one ping at a time.

    :meth:`healthy` is safe to call from many threads; the answer is kept for
    ``cached`` seconds.
    """

    def __init__(self, store: TicketStore, *, timeout: float = DEFAULT_TIMEOUT, cached: float = CACHED_SECONDS) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
            raise ConfigurationError(f"the health timeout must be a number of seconds in (0, 60], not {timeout!r}")
        self.store = store
        self.timeout = float(timeout)
        self.cached = cached
        self._lock = threading.Lock()
        self._known: tuple[float, bool] | None = None
        self._pending: threading.Event | None = None
        self._pid = os.getpid()

    def healthy(self) -> bool:
        if self._pid != os.getpid():
            # Forked with a ping out (gunicorn --preload): that thread is not in this process.
            self._lock, self._pending, self._known, self._pid = threading.Lock(), None, None, os.getpid()
        now = time.monotonic()
        known = self._known
        if known is not None and now - known[0] < self.cached:
            return known[1]
        with self._lock:
            pending = self._pending
            if pending is None:
                pending = self._pending = threading.Event()
                threading.Thread(target=self._ping, args=(pending,), name="ciba-health-ping", daemon=True).start()
        if not pending.wait(self.timeout):
            log.warning("the ticket store did not answer a health ping within %g s", self.timeout)
            self._known = (time.monotonic(), False)
            return False
        known = self._known
        return known is not None and known[1]

    def _ping(self, done: threading.Event) -> None:
        started = time.monotonic()
        try:
            self.store.ping()
            ok = True
        except Exception as exc:
            log.warning("the ticket store failed a health ping: %s", exc)
            ok = False
        # A ping slower than the bound is a failure even when it ends well.
        ok = ok and time.monotonic() - started <= self.timeout
        with self._lock:
            self._known = (time.monotonic(), ok)
            self._pending = None
        done.set()


class HealthEndpoint:
    """The store's health at ``path``, as an :class:`~ciba_middleware.core.Answer`: what
    every adapter serves (:mod:`ciba_middleware.adapter`).

    :param path: e.g. ``/healthz``; exact match, query string ignored; ``GET`` and ``HEAD``.
    :param timeout: seconds a probe waits for the store's ping before answering 503.
    """

    def __init__(self, *, store: TicketStore, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        check_path(path, "health")
        self.path = path
        self.probe = StoreProbe(store, timeout=timeout)

    def answer(self, method: str, authorization: str = "", accept: str = "") -> Answer:
        """The answer to a ``method`` request (may wait up to the timeout for the store)."""
        if method not in ("GET", "HEAD"):
            body = b'{"error": "use GET"}'
            return new_answer(405, [*_HEADERS, ("Allow", "GET, HEAD"), ("Content-Length", str(len(body)))], body)
        status, body = (200, _OK) if self.probe.healthy() else (503, _DOWN)
        return new_answer(status, [*_HEADERS, ("Content-Length", str(len(body)))], b"" if method == "HEAD" else body)


class HealthMiddleware:
    """Serve the store's health at ``path``; pass every other request to ``app``.

    ::

        app = HealthMiddleware(app, store=store, path="/healthz")

    :param path: e.g. ``/healthz``; exact match, query string ignored; ``GET`` and ``HEAD``.
    :param timeout: seconds a probe waits for the store's ping before answering 503.
    """

    def __init__(
        self, app: WSGIApplication, *, store: TicketStore, path: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.app = app
        self.endpoint = HealthEndpoint(store=store, path=path, timeout=timeout)
        self.path = path
        self.probe = self.endpoint.probe

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.app(environ, start_response)
        answer = self.endpoint.answer(environ.get("REQUEST_METHOD", ""))
        start_response(answer.status_line, answer.headers)
        return [answer.body]
