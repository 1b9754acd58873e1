"""Configuration from ``CIBA_*`` variables: :func:`from_env` and :class:`Settings`.

======================  ==================================================  ==========================
variable                meaning                                             default
======================  ==================================================  ==========================
``CIBA_STORE_URL``      the ticket store (:func:`~ciba_middleware.stores.   ``sqlite:///ciba-tickets.
                        store_from_url`)                                    sqlite3`` (working dir)
``CIBA_TOKENS``         JSON list of grants (:class:`~ciba_middleware.      required, or:
                        StaticTokenVerifier`)
``CIBA_TOKENS_FILE``    path to a file holding that JSON, reloaded when
                        it changes (:mod:`~ciba_middleware.grants`)
``CIBA_TOKENS_RELOAD_   seconds between two looks at that file; 0: only    1
INTERVAL``              on SIGHUP and fork
``CIBA_PATH_PREFIX``    path in front of ``/api``                           empty
``CIBA_MAX_BODY_BYTES`` largest request body (1 to 1048576)                 16384
``CIBA_TICKET_TTL``     seconds a new ticket lives (at most                 600
                        :data:`~ciba_middleware.stores.base.MAX_TTL`)
``CIBA_AUDIT_LOG``      ``on``, ``off``, ``stdout``, ``stderr`` or an       ``on`` (to logging)
                        absolute file path (:func:`~ciba_middleware.
                        audit.route`)
``CIBA_AUDIT_FLUSH``    seconds an audit line may wait in memory, so that   0.02
                        a busy worker's lines share write() calls; 0: each
                        line written before the answer (at most 1)
``CIBA_METRICS_PATH``   where Prometheus metrics are served, e.g.           empty: no metrics
                        ``/metrics`` (:mod:`ciba_middleware.metrics`)
``CIBA_METRICS_TOKEN_   SHA-256 (hex) of the bearer token of that path;     required with the path
SHA256``                ``CIBA_METRICS_TOKEN``: the token in clear (dev)
``CIBA_HEALTH_PATH``    where the store's health is served for load         empty: no health endpoint
                        balancers, e.g. ``/healthz`` (:mod:`ciba_middleware.
                        health`)
``CIBA_HEALTH_TIMEOUT`` seconds a health probe waits for the store's ping   1
``CIBA_OTEL``           ``on``: a span per fail call (:mod:`ciba_middleware.   ``off``
                        otel`, the ``[otel]`` extra)
======================  ==================================================  ==========================

Building the API writes one start-up line per process (:meth:`Settings.build_api`): what is served,
the store (password masked), how many grants, where audit records go.

The same names are read from a Flask app's config by :mod:`ciba_middleware.flask`.
Every problem is a :class:`~ciba_middleware.errors.ConfigurationError` naming the
variable, raised at start-up. The one exception is a bad ``CIBA_TOKENS_FILE`` found by a
process started after the server's first start (:func:`~ciba_middleware.grants.first_start`):
it is logged, and that process serves with the fail API answering 500 until the file is
fixed, rather than stopping the server.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import audit, health, metrics, output
from .auth import StaticTokenVerifier, TokenVerifier, clear_secret_digest, hex_digest
from .core import FailApi
from .errors import API_PATH, ConfigurationError
from .events import Observer
from .grants import (
    DEFAULT_INTERVAL,
    ReloadingVerifier,
    Snapshot,
    Unavailable,
    first_start,
    parse_grants,
    read_snapshot,
)
from .middleware import BackchannelFailMiddleware
from .redact import mask_url
from .response import not_found_app
from .stores import DEFAULT_TTL, TicketStore, store_from_url
from .stores.base import MAX_TTL, checked_ttl, number_option
from .stores.memory import MemoryTicketStore

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["DEFAULT_STORE_URL", "MAX_BODY_BYTES", "Settings", "degraded", "from_env", "not_found_app"]

DEFAULT_STORE_URL = "sqlite:///ciba-tickets.sqlite3"
#: The largest ``CIBA_MAX_BODY_BYTES``: 1 MiB. A real call is well under 1 KiB, and the
#: body is held in memory while it is parsed.
MAX_BODY_BYTES = 1 << 20
#: The longest ``CIBA_TOKENS_RELOAD_INTERVAL``: an hour.
MAX_RELOAD_INTERVAL = 3600.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The checked ``CIBA_*`` settings."""

    store_url: str = DEFAULT_STORE_URL
    grants: tuple[Mapping[str, Any], ...] = ()
    prefix: str = ""
    max_body_bytes: int = 16384
    ticket_ttl: float = DEFAULT_TTL
    #: Which variable the grants came from, for error messages.
    grants_source: str = "CIBA_TOKENS"
    #: ``CIBA_TOKENS_FILE``: the grants file, reloaded when it changes; empty: none.
    tokens_file: str = ""
    #: ``CIBA_TOKENS_RELOAD_INTERVAL``: seconds between two looks at that file.
    tokens_reload_interval: float = DEFAULT_INTERVAL
    #: The file as read by :meth:`from_mapping`; None when it was refused (see
    #: ``tokens_refused``) or there is no file.
    tokens_snapshot: Snapshot | None = field(default=None, compare=False, repr=False)
    #: Why the file was refused by a process after the first start, which serves anyway.
    tokens_refused: str | None = None
    #: ``CIBA_AUDIT_LOG``: ``on``, ``off``, ``stdout``, ``stderr`` or an absolute path.
    audit_log: str = "on"
    #: ``CIBA_AUDIT_FLUSH``: seconds an audit line may wait before it is written.
    audit_flush: float = output.DEFAULT_DELAY
    #: ``CIBA_METRICS_PATH``; empty: no metrics.
    metrics_path: str = ""
    #: SHA-256 (hex) of the metrics endpoint's token; a clear token is hashed when read.
    metrics_token_sha256: str = ""
    #: ``CIBA_HEALTH_PATH``; empty: no health endpoint. ``CIBA_HEALTH_TIMEOUT``, seconds.
    health_path: str = ""
    health_timeout: float = health.DEFAULT_TIMEOUT
    #: ``CIBA_OTEL``: a span per call through OpenTelemetry.
    otel: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Read ``CIBA_*`` keys from ``values`` (``os.environ`` or a Flask config).

        Values may be strings, as in the environment, or already parsed (a list of grants,
        an int), as ``Flask.config.from_prefixed_env`` leaves them.
        """
        store_url = _text(values, "CIBA_STORE_URL", DEFAULT_STORE_URL)
        prefix = _text(values, "CIBA_PATH_PREFIX", "")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix):
            raise ConfigurationError(
                f"CIBA_PATH_PREFIX must be empty or like /authlete (no trailing /), not {prefix!r}"
            )
        interval = _number(
            values,
            "CIBA_TOKENS_RELOAD_INTERVAL",
            DEFAULT_INTERVAL,
            maximum=MAX_RELOAD_INTERVAL,
            what=f"a number of seconds from 0 to {MAX_RELOAD_INTERVAL:.0f}",
        )
        health_path, health_timeout = _health(values)
        return cls(
            store_url=store_url,
            prefix=prefix,
            max_body_bytes=_number(
                values,
                "CIBA_MAX_BODY_BYTES",
                16384,
                integer=True,
                minimum=1,
                maximum=MAX_BODY_BYTES,
                what=f"a whole number of bytes from 1 to {MAX_BODY_BYTES}",
            ),
            ticket_ttl=_ticket_ttl(values),
            audit_log=_audit_log(values),
            audit_flush=_number(
                values,
                "CIBA_AUDIT_FLUSH",
                output.DEFAULT_DELAY,
                maximum=output.MAX_DELAY,
                what=f"a number of seconds from 0 to {output.MAX_DELAY:g}",
            ),
            tokens_reload_interval=interval,
            **_grants(values),
            health_path=health_path,
            health_timeout=health_timeout,
            otel=_switch(values, "CIBA_OTEL"),
            **_metrics(values),
        )

    @classmethod
    def for_store(cls, values: Mapping[str, Any]) -> Settings:
        """Read only what a ticket store needs: ``CIBA_STORE_URL`` and ``CIBA_TICKET_TTL``.

        For tools that reach the store but never authenticate a caller (``ciba-middleware
        ticket``), so they work on a host without ``CIBA_TOKENS``. The result has no grants:
        use :meth:`build_store` only.
        """
        return cls(store_url=_text(values, "CIBA_STORE_URL", DEFAULT_STORE_URL), ticket_ttl=_ticket_ttl(values))

    def build_store(self) -> TicketStore:
        try:
            return store_from_url(self.store_url, default_ttl=self.ticket_ttl)
        except ConfigurationError as exc:
            raise ConfigurationError(f"CIBA_STORE_URL: {exc}") from None

    def build_verifier(self) -> StaticTokenVerifier | ReloadingVerifier:
        """The verifier of the grants: a :class:`~ciba_middleware.grants.ReloadingVerifier`
        over ``CIBA_TOKENS_FILE``, or a :class:`StaticTokenVerifier` of ``CIBA_TOKENS``."""
        if self.tokens_file:
            return ReloadingVerifier(
                self.tokens_file,
                self.tokens_snapshot,
                interval=self.tokens_reload_interval,
                refused=self.tokens_refused,
            )
        try:
            return StaticTokenVerifier(self.grants)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.grants_source}: {exc}") from None

    def build_api(
        self,
        app: WSGIApplication | None = None,
        *,
        observers: Sequence[Observer] = (),
        verifier: TokenVerifier | None = None,
        announce: bool = True,
    ) -> tuple[FailApi, WSGIApplication | None]:
        """The transport-free :class:`~ciba_middleware.core.FailApi` these settings describe.

        The tracing, audit log and metrics observers come first, then ``observers``. With
        ``CIBA_METRICS_PATH``, ``app`` comes back wrapped in a
        :class:`~ciba_middleware.metrics.MetricsMiddleware` that serves them (for adapters
        that wrap a WSGI app), and with ``CIBA_HEALTH_PATH`` in a
        :class:`~ciba_middleware.health.HealthMiddleware`; otherwise it comes back as given.
        ``verifier`` (default: :meth:`build_verifier`) lets processes forked from one that
        built it share it. Writes the start-up line (once per process and line) unless
        ``announce`` is false (a build that only checks the configuration).
        """
        if verifier is None:
            verifier = self.build_verifier()
        chain: list[Observer] = []
        if self.otel:
            from .otel import Tracing

            try:
                # First, so that the audit record carries the span's IDs.
                chain.append(Tracing(prefix=self.prefix))
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_OTEL: {exc}") from None
        audit_log: audit.AuditLog | None = None
        if self.audit_log != "off":
            try:
                audit_log = audit.route(self.audit_log, services=_services(verifier), delay=self.audit_flush)
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_AUDIT_LOG: {exc}") from None
            chain.append(audit_log)
        if self.metrics_path:
            try:
                collected = metrics.Metrics()
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_METRICS_PATH: {exc}") from None
            chain.append(collected)
            if isinstance(verifier, ReloadingVerifier):
                collected.count_reload_failures(verifier)
            if app is not None:
                app = metrics.MetricsMiddleware(
                    app, metrics=collected, path=self.metrics_path, token_sha256=self.metrics_token_sha256
                )
        chain.extend(observers)
        store = self.build_store()
        try:
            if self.health_path and app is not None:
                app = health.HealthMiddleware(app, store=store, path=self.health_path, timeout=self.health_timeout)
            api = FailApi(
                store=store, verifier=verifier, prefix=self.prefix, max_body_bytes=self.max_body_bytes, observers=chain
            )
        except BaseException:
            store.close()
            raise
        if announce:
            _announce(self.describe(_services(verifier) or frozenset(), audit_log))
        return api, app

    def describe(self, services: frozenset[str], audit_log: audit.AuditLog | None) -> str:
        """The start-up line: routes, store (password masked), grants, where audit records go."""
        base = f"{self.prefix}/api"
        audited = "audit log off" if audit_log is None else f"audit records to {audit_log.where()}"
        extras = "".join(
            f"; {name} at {path}"
            for name, path in (("metrics", self.metrics_path), ("health", self.health_path))
            if path
        )
        if self.otel:
            extras += "; OpenTelemetry spans on"
        return (
            f"fail API at POST {base}/{{serviceId}}{API_PATH} (v3) and POST {base}{API_PATH} (v2); "
            f"store {mask_url(self.store_url)}; {_plural(len(self.grants), 'grant')} covering "
            f"{_plural(len(services), 'service')}; {audited}{extras}"
        )

    def build_middleware(
        self,
        app: WSGIApplication,
        *,
        observers: Sequence[Observer] = (),
        verifier: TokenVerifier | None = None,
        announce: bool = True,
    ) -> BackchannelFailMiddleware:
        """The WSGI middleware around ``app`` (:meth:`build_api`, then the adapter).

        With ``CIBA_METRICS_PATH``, ``app`` is wrapped in a :class:`~ciba_middleware.metrics.
        MetricsMiddleware` inside the fail middleware, so the result is still a
        :class:`BackchannelFailMiddleware`.
        """
        api, inner = self.build_api(app, observers=observers, verifier=verifier, announce=announce)
        assert inner is not None
        return BackchannelFailMiddleware.around(inner, api)


def degraded(app: WSGIApplication, problem: str) -> BackchannelFailMiddleware:
    """``app`` behind a fail API that answers every call 500 ``A185103``, for a process
    that could not build its configuration after the server's first start.

    Logs ``problem`` at ERROR. Every other path still reaches ``app``.
    """
    log.error("configuration error: %s; the fail API answers 500 in this process until it is fixed", problem)
    api = FailApi(store=MemoryTicketStore(), verifier=Unavailable(problem))
    return BackchannelFailMiddleware.around(app, api)


def from_env(app: WSGIApplication | None = None, environ: Mapping[str, str] | None = None) -> BackchannelFailMiddleware:
    """Build the middleware around ``app`` from ``CIBA_*`` environment variables.

    With no ``app``, it wraps :func:`not_found_app`, so the result is a complete WSGI
    application serving only the fail API (``ciba_middleware.wsgi:application``).
    Raises :class:`ConfigurationError` naming the variable at fault.
    """
    settings = Settings.from_mapping(os.environ if environ is None else environ)
    return settings.build_middleware(app if app is not None else not_found_app)


#: The start-up lines already written by this process (``(pid, line)``): one each.
_announced: set[tuple[int, str]] = set()


def _announce(line: str) -> None:
    """Write the start-up ``line`` once per process: at INFO under ``ciba_middleware.config``
    when the app's logging has a handler for it, else to stderr as ``ciba-middleware: ...``
    (:func:`ciba_middleware.output.destination`)."""
    key = (os.getpid(), line)
    if key in _announced:
        return
    _announced.add(key)
    target = output.destination(log, logging.INFO)
    if isinstance(target, output.LineHandler):
        target.write(f"ciba-middleware: {line}")
    elif target is not None:
        log.info("%s", line)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _text(values: Mapping[str, Any], name: str, default: str) -> str:
    value = values.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")
    return value.strip()


def _number(
    values: Mapping[str, Any],
    name: str,
    default: Any,
    *,
    what: str,
    integer: bool = False,
    minimum: float = 0.0,
    exclusive_minimum: bool = False,
    maximum: float,
) -> Any:
    """A number variable, parsed and bounded by :func:`~ciba_middleware.stores.base.number_option`."""
    value = values.get(name)
    if value is None or value == "":
        return default
    try:
        return number_option(
            name, name, value, integer=integer, minimum=minimum, exclusive_minimum=exclusive_minimum, maximum=maximum
        )
    except ConfigurationError:
        raise ConfigurationError(f"{name} must be {what}, not {_shown(value)}") from None


def _ticket_ttl(values: Mapping[str, Any]) -> float:
    """``CIBA_TICKET_TTL``, held to the stores' own bound (:func:`~ciba_middleware.stores.base.checked_ttl`)."""
    what = f"a number of seconds above 0 and at most {MAX_TTL:.0f} (366 days)"
    ttl = _number(values, "CIBA_TICKET_TTL", DEFAULT_TTL, maximum=math.inf, what=what)
    try:
        return checked_ttl(ttl, "CIBA_TICKET_TTL")
    except ValueError:
        shown = _shown(values.get("CIBA_TICKET_TTL"))
        raise ConfigurationError(f"CIBA_TICKET_TTL must be {what}, not {shown}") from None


def _shown(value: object, limit: int = 64) -> str:
    """A configured value quoted in a message: its repr, cut short."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _grants(values: Mapping[str, Any]) -> dict[str, Any]:
    inline = values.get("CIBA_TOKENS")
    path = values.get("CIBA_TOKENS_FILE")
    if inline not in (None, "") and path not in (None, ""):
        raise ConfigurationError("set CIBA_TOKENS or CIBA_TOKENS_FILE, not both")
    if inline not in (None, ""):
        return {"grants": parse_grants(inline, "CIBA_TOKENS"), "grants_source": "CIBA_TOKENS"}
    if path in (None, ""):
        raise ConfigurationError(
            "CIBA_TOKENS (or CIBA_TOKENS_FILE) is not set: no caller could authenticate. "
            "Create a token with `ciba-middleware token new --service ID`."
        )
    path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    found: dict[str, Any] = {"grants_source": "CIBA_TOKENS_FILE", "tokens_file": path}
    try:
        snapshot = read_snapshot(path)
    except ConfigurationError as exc:
        if first_start():
            raise
        # A worker replacing one that had good grants: serve, and wait for a good file.
        log.error("%s; this process answers the fail API with 500 until the file is fixed", exc)
        return {**found, "tokens_refused": str(exc)}
    return {**found, "grants": snapshot.grants, "tokens_snapshot": snapshot}


def _services(verifier: TokenVerifier) -> frozenset[str] | None:
    """The services the grants cover, when the verifier can tell."""
    services = getattr(verifier, "services", None)
    return services if isinstance(services, frozenset) else None


def _audit_log(values: Mapping[str, Any]) -> str:
    target = _text(values, "CIBA_AUDIT_LOG", "on")
    if target.lower() in ("on", "off", "stdout", "stderr"):
        return target.lower()
    if not target.startswith("/"):
        raise ConfigurationError(
            f"CIBA_AUDIT_LOG must be on, off, stdout, stderr or an absolute file path, not {target!r}"
        )
    return target


def _metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    path = _text(values, "CIBA_METRICS_PATH", "")
    digest = _text(values, "CIBA_METRICS_TOKEN_SHA256", "").lower()
    clear = values.get("CIBA_METRICS_TOKEN")
    if digest and clear not in (None, ""):
        raise ConfigurationError("set CIBA_METRICS_TOKEN_SHA256 or CIBA_METRICS_TOKEN, not both")
    if clear not in (None, ""):
        if not isinstance(clear, str):
            raise ConfigurationError(f"CIBA_METRICS_TOKEN must be a string, not {type(clear).__name__}")
        digest = clear_secret_digest(
            clear, "CIBA_METRICS_TOKEN is in clear text", "set CIBA_METRICS_TOKEN_SHA256", log
        ).hex()
    if not path:
        if digest:
            raise ConfigurationError("a metrics token is set but CIBA_METRICS_PATH is not: metrics are off")
        return {}
    try:
        metrics.check_path(path)
    except ConfigurationError as exc:
        raise ConfigurationError(f"CIBA_METRICS_PATH: {exc}") from None
    if not digest:
        raise ConfigurationError(
            "CIBA_METRICS_PATH is set but neither CIBA_METRICS_TOKEN_SHA256 nor CIBA_METRICS_TOKEN: "
            "the metrics endpoint needs a token of its own"
        )
    hex_digest(digest, "CIBA_METRICS_TOKEN_SHA256")
    return {"metrics_path": path, "metrics_token_sha256": digest}


def _switch(values: Mapping[str, Any], name: str) -> bool:
    value = values.get(name)
    if value is None or value == "" or value is False:
        return False
    if value is True:
        return True
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("on", "off"):
        return text == "on"
    raise ConfigurationError(f"{name} must be on or off, not {value!r}")


def _health(values: Mapping[str, Any]) -> tuple[str, float]:
    path = _text(values, "CIBA_HEALTH_PATH", "")
    timeout = _number(
        values,
        "CIBA_HEALTH_TIMEOUT",
        health.DEFAULT_TIMEOUT,
        what=f"a number of seconds above 0 and at most {health.MAX_TIMEOUT:g}",
        exclusive_minimum=True,
        maximum=health.MAX_TIMEOUT,
    )
    if not path:
        if values.get("CIBA_HEALTH_TIMEOUT") not in (None, ""):
            raise ConfigurationError(
                "CIBA_HEALTH_TIMEOUT is set but CIBA_HEALTH_PATH is not: the health endpoint is off"
            )
        return "", timeout
    try:
        metrics.check_path(path, "health")
    except ConfigurationError as exc:
        raise ConfigurationError(f"CIBA_HEALTH_PATH: {exc}") from None
    if path == _text(values, "CIBA_METRICS_PATH", ""):
        raise ConfigurationError(f"CIBA_HEALTH_PATH must differ from CIBA_METRICS_PATH, both are {path!r}")
    if timeout > health.MAX_TIMEOUT:
        raise ConfigurationError(f"CIBA_HEALTH_TIMEOUT must be at most {health.MAX_TIMEOUT:g} seconds, not {timeout:g}")
    return path, timeout
