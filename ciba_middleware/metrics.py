"""Prometheus metrics of the fail API: :class:`Metrics` (an observer), :class:`MetricsEndpoint`
and :class:`MetricsMiddleware`.

:class:`Metrics` counts every fail call it is given as a
:class:`~ciba_middleware.events.FailEvent`; :class:`MetricsEndpoint` answers a scrape at one
path, behind a bearer token of its own (every adapter serves it), and
:class:`MetricsMiddleware` is the same in front of any WSGI app. Both need ``prometheus_client``, an optional
extra (``pip install "ciba-middleware[metrics]"``), imported only when a :class:`Metrics`
is built, so the package works without it.

Series (``docs/observability.md`` shows real output)::

    ciba_fail_calls_total{service, reason, action, outcome}
    ciba_fail_auth_failures_total{kind}
    ciba_fail_store_errors_total
    ciba_fail_duration_seconds{via}          (histogram; the family's calls too)
    ciba_api_calls_total{service, endpoint, action, outcome}   (the CIBA family's calls)
    ciba_tokens_reload_failures_total        (CIBA_TOKENS_FILE contents refused)

The ``service`` label is set only from an authenticated principal covering the service
(or from the wrapped app's own in-process call): an unauthenticated caller chooses the
service ID in the URL, and labelling by it would let anyone create series without bound.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` before start-up: each
worker then writes its counts to files there and a scrape of any worker reports the sum.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .auth import bearer_token, clear_secret_digest, hex_digest
from .core import Answer, new_answer
from .errors import API_PATH, ConfigurationError
from .events import FailEvent, outcome

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from prometheus_client import CollectorRegistry

    from .grants import ReloadingVerifier

__all__ = ["BUCKETS", "INSTALL_HINT", "Metrics", "MetricsEndpoint", "MetricsMiddleware", "child_exit", "outcome"]

# outcome() lives in events; it is re-exported here, where it was first defined.

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "ciba-middleware[metrics]"'

#: Latency buckets in seconds: a call is a store round trip, so well under 1 ms in
#: process with SQLite and a few ms over HTTP; the upper buckets catch a slow store.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_REALM = 'Bearer realm="ciba-middleware-metrics"'
_PATH = re.compile(r"/[!$&'()*+,;=:@A-Za-z0-9\-._~/%]*")


class Metrics:
    """Prometheus counters and a latency histogram, fed as an observer of the middleware.

    ::

        metrics = Metrics()
        app = BackchannelFailMiddleware(
            MetricsMiddleware(app, metrics=metrics, path="/metrics", token_sha256=digest),
            store=store, verifier=verifier, observers=[metrics],
        )

    :param registry: where the series are registered. By default a registry of this
        object's own, so two middlewares in one process do not clash; pass
        ``prometheus_client.REGISTRY`` to expose them with your app's other metrics.
    :raises ConfigurationError: when ``prometheus_client`` is not installed, or when
        ``PROMETHEUS_MULTIPROC_DIR`` is set but unusable.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        try:
            import prometheus_client
            from prometheus_client import values
        except ImportError:
            raise ConfigurationError(f"metrics need prometheus_client: {INSTALL_HINT}") from None
        self._prometheus = prometheus_client
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess_dir is not None:
            if not os.path.isdir(self.multiprocess_dir):
                raise ConfigurationError(
                    f"PROMETHEUS_MULTIPROC_DIR={self.multiprocess_dir!r} is not a directory; create it (empty) "
                    "before the server starts"
                )
            if values.ValueClass is values.MutexValue:
                # prometheus_client picks its storage once, at import: imported before the
                # variable was set, it counts in memory while a scrape would read the files.
                raise ConfigurationError(
                    "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
                    "set it in the environment before the server starts"
                )
        self.registry: CollectorRegistry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self.calls = prometheus_client.Counter(
            "ciba_fail_calls",
            "Fail API calls, by authenticated service, reason, action and outcome.",
            ("service", "reason", "action", "outcome"),
            registry=self.registry,
        )
        self.auth_failures = prometheus_client.Counter(
            "ciba_fail_auth_failures",
            "Fail API calls refused for their credentials (401/403), by which check failed.",
            ("kind",),
            registry=self.registry,
        )
        self.store_errors = prometheus_client.Counter(
            "ciba_fail_store_errors",
            "Fail API calls whose ticket store failed or was unreachable.",
            registry=self.registry,
        )
        self.duration = prometheus_client.Histogram(
            "ciba_fail_duration_seconds",
            "Time from the start of a fail API call to its answer, by http or in_process.",
            ("via",),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.tokens_reload_failures = prometheus_client.Counter(
            "ciba_tokens_reload_failures",
            "CIBA_TOKENS_FILE contents refused (bad, or caught half written): the grants loaded before stayed.",
            registry=self.registry,
        )
        self.api_calls = prometheus_client.Counter(
            "ciba_api_calls",
            "CIBA family calls (backchannel/authentication, auth/token, ...), by authenticated service, "
            "endpoint, action and outcome.",
            ("service", "endpoint", "action", "outcome"),
            registry=self.registry,
        )
        self._calls: dict[tuple[str, str, str, str], Any] = {}
        self._api_calls: dict[tuple[str, str, str, str], Any] = {}
        self._duration = {via: self.duration.labels(via) for via in ("http", "in_process")}

    def __call__(self, event: FailEvent) -> None:
        """Count one call (the observer interface of the middleware)."""
        if event.endpoint is not None:
            self._count_family(event)
            return
        key = (
            event.service() or "",
            event.reason.value if event.reason is not None else "",
            event.action.value if event.action is not None else "",
            outcome(event),
        )
        # labels() takes a lock and checks its arguments on every call: keep the children.
        # They are as many as the series, which the labels above keep bounded.
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(*key)
        child.inc()
        self._count_common(event)

    def _count_family(self, event: FailEvent) -> None:
        key = (
            event.service() or "",
            event.endpoint or "",
            event.action.value if event.action is not None else "",
            outcome(event),
        )
        child = self._api_calls.get(key)
        if child is None:
            child = self._api_calls[key] = self.api_calls.labels(*key)
        child.inc()
        self._count_common(event)

    def _count_common(self, event: FailEvent) -> None:
        """What every call counts, whichever route: its authentication failure, a store
        error, its duration."""
        if event.auth_failure is not None:
            self.auth_failures.labels(event.auth_failure).inc()
        if event.store_error:
            self.store_errors.inc()
        self._duration[event.via].observe(event.duration)

    def count_reload_failures(self, verifier: ReloadingVerifier) -> None:
        """Count the files ``verifier`` refuses (and those it already refused) in
        ``ciba_tokens_reload_failures_total``."""
        if verifier.failures:
            self.tokens_reload_failures.inc(verifier.failures)
        verifier.on_refused = self.tokens_reload_failures.inc

    def exposition_registry(self) -> Any:
        """What a scrape reads: this registry, or in multi-process mode every worker's files."""
        if self.multiprocess_dir is None:
            return self.registry
        from prometheus_client import multiprocess

        registry = self._prometheus.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return registry

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition body and its Content-Type, in the format ``accept`` asks for
        (OpenMetrics or the Prometheus text format)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.exposition_registry()), content_type


class MetricsEndpoint:
    """:class:`Metrics` at ``path`` for callers with its bearer token, as an
    :class:`~ciba_middleware.core.Answer`: what every adapter serves.

    :param path: e.g. ``/metrics``; exact match, query string ignored.
    :param token_sha256: the SHA-256 (hex) of the token Prometheus sends as
        ``Authorization: Bearer <token>``. A token of its own: the fail API's tokens let a
        caller fail tickets, this one only reads counts.
    :param token: the token in clear text instead, for development (logged warning).
    """

    def __init__(
        self, *, metrics: Metrics, path: str, token_sha256: str | None = None, token: str | None = None
    ) -> None:
        check_path(path)
        if (token_sha256 is None) == (token is None):
            raise ConfigurationError("give exactly one of token_sha256 and token for the metrics endpoint")
        if token is not None:
            if not token:
                raise ConfigurationError("the metrics token must not be empty")
            digest = clear_secret_digest(
                token, "the metrics endpoint uses a clear-text token", "configure its SHA-256", log
            )
        else:
            assert token_sha256 is not None
            digest = hex_digest(token_sha256, "the metrics token_sha256")
        self.metrics = metrics
        self.path = path
        self._digest = digest

    def answer(self, method: str, authorization: str = "", accept: str = "") -> Answer:
        """The answer to a scrape: ``method``, the ``Authorization`` and ``Accept`` headers."""
        if method not in ("GET", "HEAD"):
            return _plain(405, b"use GET\n", [("Allow", "GET, HEAD")])
        if not self._authorized(authorization):
            return _plain(401, b"unauthorized\n", [("WWW-Authenticate", _REALM)])
        try:
            body, content_type = self.metrics.render(accept)
        except Exception:
            log.exception("rendering the metrics failed")
            return _plain(500, b"metrics unavailable\n", [])
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        return new_answer(200, headers, b"" if method == "HEAD" else body)

    def _authorized(self, header: str) -> bool:
        token = bearer_token(header)
        if token is None:
            return False
        given = hashlib.sha256(token.encode("ascii")).digest()
        return hmac.compare_digest(given, self._digest)


class MetricsMiddleware:
    """Serve :class:`Metrics` at ``path`` to callers with its bearer token; pass the rest on.

    Put it inside :class:`~ciba_middleware.BackchannelFailMiddleware` (around the app) or
    outside it: the paths cannot overlap. Every request to another path goes to ``app``
    after one string comparison. The parameters after ``app`` are :class:`MetricsEndpoint`'s.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        metrics: Metrics,
        path: str,
        token_sha256: str | None = None,
        token: str | None = None,
    ) -> None:
        self.endpoint = MetricsEndpoint(metrics=metrics, path=path, token_sha256=token_sha256, token=token)
        self.app = app
        self.metrics = metrics
        self.path = path

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.app(environ, start_response)
        answer = self.endpoint.answer(
            environ.get("REQUEST_METHOD", ""), environ.get("HTTP_AUTHORIZATION", ""), environ.get("HTTP_ACCEPT", "")
        )
        start_response(answer.status_line, answer.headers)
        return [answer.body]


def check_path(path: str, what: str = "metrics") -> None:
    """Raise ConfigurationError unless ``path`` can serve ``what`` (metrics, health):
    absolute, no query, not one of the fail API's paths."""
    if not isinstance(path, str) or not _PATH.fullmatch(path) or "//" in path:
        example = "/metrics" if what == "metrics" else "/healthz"
        raise ConfigurationError(f"the {what} path must look like {example}, not {path!r}")
    if path.endswith(API_PATH):
        raise ConfigurationError(f"the {what} path must not end with {API_PATH}, the fail API's own routes")


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: drop a dead worker's live-gauge files (``prometheus_client``'s
    ``mark_process_dead``). Counters and histograms keep its counts, as they should.

    In ``gunicorn.conf.py``: ``from ciba_middleware.metrics import child_exit``.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _plain(status: int, body: bytes, headers: list[tuple[str, str]]) -> Answer:
    return new_answer(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers], body
    )
