"""Ping and push notifications to the client's ``notification_endpoint`` (CIBA Core 10.2, 10.3).

The endpoint is an address a client registered: calling it is a trust boundary (server-side
request forgery, as Keycloak and others learned). :class:`Notifier` therefore

- sends to ``https`` URLs only, and never to a private, loopback, link-local, reserved or
  multicast address: it resolves the host, checks every address, then connects to an
  address it checked (so a DNS answer that changes between the check and the connection
  cannot redirect it), with TLS verified against the host's name. A host named exactly in
  ``CIBA_NOTIFICATION_INSECURE_HOSTS`` (comma-separated, for development and tests) is
  exempt from both rules;
- gives each attempt a timeout, never follows a redirect, and does not retry after 401,
  403, a redirect or any other 4xx: the client refused, and asking again changes nothing;
- retries 5xx answers, timeouts and connection failures (not a certificate that does not
  verify) a bounded number of times with
  exponential back-off, on a worker thread fed by a bounded queue, never on the request's
  thread;
- records every outcome in the audit log (``"event": "ciba_notification"``) and, with
  metrics on, in ``ciba_notifications_total{service,mode,outcome}``. A push notification
  that finally fails carries the tokens the client will never get: it is logged at ERROR.

Outcomes: ``delivered`` (2xx), ``rejected`` (401, 403, 3xx, other 4xx), ``failed`` (retries
exhausted), ``refused`` (the URL or an address is not allowed; nothing was sent),
``dropped`` (the queue was full or the notifier closed).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import linewriter
from ..audit import AuditLog

if TYPE_CHECKING:
    from ..core import FailApi
    from ..metrics import Metrics

__all__ = [
    "INSECURE_HOSTS_VARIABLE",
    "Notification",
    "Notifier",
    "Refused",
    "allowed_address",
    "insecure_hosts",
]

log = logging.getLogger(__name__)

INSECURE_HOSTS_VARIABLE = "CIBA_NOTIFICATION_INSECURE_HOSTS"
#: The most of an answer's body read (and thrown away): the status is what counts.
_MAX_ANSWER = 65536


def insecure_hosts(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The host names of ``CIBA_NOTIFICATION_INSECURE_HOSTS``: lower-cased, exact names
    (no wildcards), an IP literal written as in the URL without brackets."""
    raw = (os.environ if environ is None else environ).get(INSECURE_HOSTS_VARIABLE, "")
    return frozenset(name.strip().lower().strip("[]") for name in raw.split(",") if name.strip())


def allowed_address(address: str) -> bool:
    """Whether a notification may go to ``address``: a public unicast address.

    >>> allowed_address("93.184.215.14"), allowed_address("10.0.0.1"), allowed_address("::ffff:127.0.0.1")
    (True, False, False)
    """
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Refused(Exception):
    """The notification's URL or address is not allowed; nothing was sent."""


@dataclass(frozen=True)
class Notification:
    """One notification to send: ``body`` (JSON) to ``endpoint`` with the client's bearer token."""

    service_id: str
    client_id: str
    #: ``ping`` or ``push``.
    mode: str
    endpoint: str
    #: The client's ``client_notification_token``; never logged.
    token: str
    body: str
    #: The request's ticket as a short hash, for the log and the audit record.
    ticket_hash: str

    def __repr__(self) -> str:  # no token, no body (a push body holds tokens)
        return f"Notification({self.mode} to {self.endpoint!r} for {self.client_id!r}, ticket {self.ticket_hash})"


@dataclass(frozen=True)
class Attempt:
    """The end of one delivery: its outcome, the last status (None without an answer), the
    attempts made and why it ended."""

    outcome: str
    status: int | None
    attempts: int
    detail: str


class Notifier:
    """Delivers notifications on a worker thread (started on the first :meth:`submit`).

    ::

        notifier = Notifier.for_api(api)  # the api's audit log and metrics
        endpoints = CibaEndpoints(api, service_id, hooks, notifier=notifier)

    :param hosts: the insecure hosts; by default ``CIBA_NOTIFICATION_INSECURE_HOSTS``.
    :param timeout: seconds for each attempt's connect and each read.
    :param retries: attempts after the first, for 5xx answers, timeouts and connection errors.
    :param backoff: seconds before the first retry, doubled before each next one.
    :param queue_size: notifications waiting at most; one more is dropped, loudly.
    :param ssl_context: the TLS context (default: the system's trust store, verified).
    :param audit: where outcomes are recorded; None: not recorded.
    :param metrics: the :class:`~ciba_middleware.metrics.Metrics` to count in; None: not counted.
    :param resolve: host and port to addresses (default: :func:`socket.getaddrinfo`); tests
        pass their own to check refusals without DNS.
    """

    def __init__(
        self,
        *,
        hosts: frozenset[str] | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 1.0,
        queue_size: int = 1000,
        ssl_context: ssl.SSLContext | None = None,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError(f"retries must be 0 to 10, not {retries!r}")
        if not backoff >= 0:
            raise ValueError(f"backoff must be 0 or more, not {backoff!r}")
        self.hosts = insecure_hosts() if hosts is None else frozenset(h.lower() for h in hosts)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self.audit = audit
        self._counter = _counter(metrics) if metrics is not None else None
        self._resolve = resolve if resolve is not None else _resolve
        self._queue: queue.Queue[Notification | None] = queue.Queue(queue_size)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        #: Called with each notification and its end, after it is recorded (tests wait on it).
        self.on_outcome: Callable[[Notification, Attempt], None] | None = None

    @classmethod
    def for_api(cls, api: FailApi, **options: Any) -> Notifier:
        """A notifier recording in ``api``'s audit log and metrics (its observers)."""
        from ..metrics import Metrics

        audit = next((o for o in api.observers if isinstance(o, AuditLog)), None)
        metrics = next((o for o in api.observers if isinstance(o, Metrics)), None)
        return cls(audit=audit, metrics=metrics, **options)

    # -- the queue -------------------------------------------------------------------------

    def submit(self, notification: Notification) -> bool:
        """Queue ``notification``; False when it was dropped (queue full, or closed)."""
        if self._closed.is_set():
            self._record(notification, Attempt("dropped", None, 0, "the notifier is closed"))
            return False
        self._start()
        try:
            self._queue.put_nowait(notification)
        except queue.Full:
            self._record(notification, Attempt("dropped", None, 0, "the notification queue is full"))
            return False
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking notifications, deliver those queued (retries cut short), and stop the worker."""
        self._closed.set()
        with self._lock:
            worker = self._worker
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="ciba-notifier", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            notification = self._queue.get()
            if notification is None:
                return
            try:
                self.deliver(notification)
            except Exception:  # the worker must outlive any one notification
                log.exception("delivering %r failed unexpectedly", notification)

    # -- one notification ----------------------------------------------------------------------

    def deliver(self, notification: Notification) -> Attempt:
        """Send ``notification`` now, with the retries, on this thread; record and return the end."""
        attempts = 0
        while True:
            attempts += 1
            status: int | None = None
            try:
                answered = self._send(notification)
            except Refused as exc:
                return self._record(notification, Attempt("refused", None, attempts, str(exc)))
            except ssl.SSLCertVerificationError as exc:
                # Another try meets the same certificate.
                return self._record(notification, Attempt("failed", None, attempts, _describe(exc)))
            except (OSError, http.client.HTTPException) as exc:
                detail = _describe(exc)
            else:
                status = answered
                if 200 <= answered < 300:
                    return self._record(notification, Attempt("delivered", answered, attempts, f"HTTP {answered}"))
                if answered < 500:
                    why = "a redirect, not followed" if 300 <= answered < 400 else "refused by the client"
                    return self._record(
                        notification, Attempt("rejected", answered, attempts, f"HTTP {answered}: {why}")
                    )
                detail = f"HTTP {answered}"
            if attempts > self.retries or self._closed.is_set():
                return self._record(notification, Attempt("failed", status, attempts, detail))
            delay = self.backoff * 2 ** (attempts - 1)
            log.info("%r: attempt %d: %s; retrying in %.1fs", notification, attempts, detail, delay)
            if self._closed.wait(delay):
                return self._record(notification, Attempt("failed", status, attempts, f"{detail}; closed"))

    def target(self, url: str) -> tuple[str, str, int, str, list[str]]:
        """Check ``url`` and resolve its host: scheme, host, port, request target and the
        addresses to connect to. Raises :class:`Refused`."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused(f"the notification endpoint is not a URL: {exc}") from None
        host = (parts.hostname or "").lower()
        if not host:
            raise Refused("the notification endpoint has no host")
        exempt = host in self.hosts
        if parts.scheme != "https" and not (parts.scheme == "http" and exempt):
            raise Refused(f"the notification endpoint must be https, not {parts.scheme or 'schemeless'}")
        port = port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise Refused(f"the host does not resolve: {exc}") from None
        if not addresses:
            raise Refused("the host does not resolve")
        if not exempt:
            for address in addresses:
                if not allowed_address(address):
                    raise Refused(
                        f"the host resolves to {address}, a private, loopback, link-local or reserved address "
                        f"(allow the host in {INSECURE_HOSTS_VARIABLE} for development)"
                    )
        path = parts.path or "/"
        return parts.scheme, host, port, path + (f"?{parts.query}" if parts.query else ""), addresses

    def _send(self, notification: Notification) -> int:
        scheme, host, port, path, addresses = self.target(notification.endpoint)
        sock = _connect(addresses, port, self.timeout)
        try:
            if scheme == "https":
                sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            # The connection is made: http.client uses it as is, and names the host in Host.
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
            connection.sock = sock
            body = notification.body.encode("utf-8")
            connection.request(
                "POST",
                path,
                body,
                {
                    "Authorization": f"Bearer {notification.token}",
                    "Content-Type": "application/json",
                    "Cache-Control": "no-store",
                },
            )
            answer = connection.getresponse()
            answer.read(_MAX_ANSWER)
            return answer.status
        finally:
            sock.close()

    # -- records -------------------------------------------------------------------------------

    def _record(self, notification: Notification, attempt: Attempt) -> Attempt:
        if attempt.outcome == "delivered":
            log.info("%r delivered (%s, %d attempt(s))", notification, attempt.detail, attempt.attempts)
        elif notification.mode == "push":
            # The tokens (or the error) in a push notification reach the client no other way.
            log.error(
                "PUSH NOTIFICATION LOST: %r %s after %d attempt(s): %s; the client never gets its result",
                notification,
                attempt.outcome,
                attempt.attempts,
                attempt.detail,
            )
        else:
            log.warning(
                "%r %s after %d attempt(s): %s; the client can still poll",
                notification,
                attempt.outcome,
                attempt.attempts,
                attempt.detail,
            )
        if self.audit is not None:
            _audit(self.audit, notification, attempt)
        if self._counter is not None:
            self._counter.labels(notification.service_id, notification.mode, attempt.outcome).inc()
        if self.on_outcome is not None:
            self.on_outcome(notification, attempt)
        return attempt


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    """A connection to the first of ``addresses`` (checked already) that answers."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def _audit(audit: AuditLog, notification: Notification, attempt: Attempt) -> None:
    target = linewriter.destination(audit.logger, audit.level, audit.fallback)
    if target is None:
        return
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "event": "ciba_notification",
        "service": notification.service_id,
        "client_id": notification.client_id,
        "mode": notification.mode,
        "endpoint": notification.endpoint,
        "ticket_hash": notification.ticket_hash,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "attempts": attempt.attempts,
        "detail": attempt.detail,
    }
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=True)
    if isinstance(target, linewriter.LineHandler):
        target.write(line)
    else:
        audit.logger.log(audit.level, "%s", line, extra={"audit": record})


_COUNTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _counter(metrics: Metrics) -> Any:
    """``ciba_notifications_total`` on the registry of ``metrics`` (once per registry)."""
    counter = _COUNTERS.get(metrics)
    if counter is None:
        from prometheus_client import Counter

        counter = _COUNTERS[metrics] = Counter(
            "ciba_notifications",
            "Ping and push notifications, by service, mode and outcome (delivered, rejected, failed, "
            "refused, dropped).",
            ("service", "mode", "outcome"),
            registry=metrics.registry,
        )
    return counter
