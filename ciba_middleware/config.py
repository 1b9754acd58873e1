"""Configuration from ``CIBA_*`` variables: :func:`from_env` and :class:`Settings`.

======================  ==================================================  ==========================
variable                meaning                                             default
======================  ==================================================  ==========================
``CIBA_STORE_URL``      the ticket store (:func:`~ciba_middleware.stores.   ``sqlite:///ciba-tickets.
                        store_from_url`)                                    sqlite3`` (working dir)
``CIBA_TOKENS``         JSON list of grants (:class:`~ciba_middleware.      required, or:
                        StaticTokenVerifier`)
``CIBA_TOKENS_FILE``    path to a file holding that JSON
``CIBA_PATH_PREFIX``    path in front of ``/api``                           empty
``CIBA_MAX_BODY_BYTES`` largest request body                                16384
``CIBA_TICKET_TTL``     seconds a new ticket lives                          600
``CIBA_AUDIT_LOG``      ``on``, ``off``, ``stdout``, ``stderr`` or an       ``on`` (to logging)
                        absolute file path (:func:`~ciba_middleware.
                        audit.route`)
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
variable, raised at start-up.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import audit, health, metrics, output
from .auth import StaticTokenVerifier, clear_secret_digest, hex_digest
from .core import FailApi
from .errors import API_PATH, ConfigurationError
from .events import Observer
from .middleware import BackchannelFailMiddleware
from .redact import mask_url
from .response import not_found_app
from .stores import DEFAULT_TTL, TicketStore, store_from_url

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["DEFAULT_STORE_URL", "Settings", "from_env", "not_found_app"]

DEFAULT_STORE_URL = "sqlite:///ciba-tickets.sqlite3"

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
    #: ``CIBA_AUDIT_LOG``: ``on``, ``off``, ``stdout``, ``stderr`` or an absolute path.
    audit_log: str = "on"
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
        grants_source, grants = _grants(values)
        health_path, health_timeout = _health(values)
        return cls(
            store_url=store_url,
            grants=grants,
            grants_source=grants_source,
            prefix=prefix,
            max_body_bytes=int(_number(values, "CIBA_MAX_BODY_BYTES", 16384, integer=True)),
            ticket_ttl=_number(values, "CIBA_TICKET_TTL", DEFAULT_TTL),
            audit_log=_audit_log(values),
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
        return cls(
            store_url=_text(values, "CIBA_STORE_URL", DEFAULT_STORE_URL),
            ticket_ttl=_number(values, "CIBA_TICKET_TTL", DEFAULT_TTL),
        )

    def build_store(self) -> TicketStore:
        try:
            return store_from_url(self.store_url, default_ttl=self.ticket_ttl)
        except ConfigurationError as exc:
            raise ConfigurationError(f"CIBA_STORE_URL: {exc}") from None

    def build_verifier(self) -> StaticTokenVerifier:
        try:
            return StaticTokenVerifier(self.grants)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.grants_source}: {exc}") from None

    def build_api(
        self, app: WSGIApplication | None = None, *, observers: Sequence[Observer] = (), announce: bool = True
    ) -> tuple[FailApi, WSGIApplication | None]:
        """The transport-free :class:`~ciba_middleware.core.FailApi` these settings describe.

        The tracing, audit log and metrics observers come first, then ``observers``. With
        ``CIBA_METRICS_PATH``, ``app`` comes back wrapped in a
        :class:`~ciba_middleware.metrics.MetricsMiddleware` that serves them (for adapters
        that wrap a WSGI app), and with ``CIBA_HEALTH_PATH`` in a
        :class:`~ciba_middleware.health.HealthMiddleware`; otherwise it comes back as given.
        Writes the start-up line (once per process and line) unless ``announce`` is false (a build
        that only checks the configuration).
        """
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
                audit_log = audit.route(self.audit_log, services=verifier.services)
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_AUDIT_LOG: {exc}") from None
            chain.append(audit_log)
        if self.metrics_path:
            try:
                collected = metrics.Metrics()
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_METRICS_PATH: {exc}") from None
            chain.append(collected)
            if app is not None:
                app = metrics.MetricsMiddleware(
                    app, metrics=collected, path=self.metrics_path, token_sha256=self.metrics_token_sha256
                )
        chain.extend(observers)
        store = self.build_store()
        if self.health_path and app is not None:
            app = health.HealthMiddleware(app, store=store, path=self.health_path, timeout=self.health_timeout)
        api = FailApi(
            store=store,
            verifier=verifier,
            prefix=self.prefix,
            max_body_bytes=self.max_body_bytes,
            observers=chain,
        )
        if announce:
            _announce(self.describe(verifier.services, audit_log))
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
        self, app: WSGIApplication, *, observers: Sequence[Observer] = (), announce: bool = True
    ) -> BackchannelFailMiddleware:
        """The WSGI middleware around ``app`` (:meth:`build_api`, then the adapter).

        With ``CIBA_METRICS_PATH``, ``app`` is wrapped in a :class:`~ciba_middleware.metrics.
        MetricsMiddleware` inside the fail middleware, so the result is still a
        :class:`BackchannelFailMiddleware`.
        """
        api, inner = self.build_api(app, observers=observers, announce=announce)
        assert inner is not None
        return BackchannelFailMiddleware.around(inner, api)


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


def _number(values: Mapping[str, Any], name: str, default: float, *, integer: bool = False) -> float:
    value = values.get(name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise ConfigurationError(f"{name} must be {kind}, not {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")
    return number


def _grants(values: Mapping[str, Any]) -> tuple[str, tuple[Mapping[str, Any], ...]]:
    inline = values.get("CIBA_TOKENS")
    path = values.get("CIBA_TOKENS_FILE")
    if inline not in (None, "") and path not in (None, ""):
        raise ConfigurationError("set CIBA_TOKENS or CIBA_TOKENS_FILE, not both")
    if inline not in (None, ""):
        name, raw = "CIBA_TOKENS", inline
    elif path not in (None, ""):
        name = "CIBA_TOKENS_FILE"
        try:
            with open(str(path), encoding="utf-8") as f:
                raw = f.read()
        except OSError as exc:
            raise ConfigurationError(f"CIBA_TOKENS_FILE: cannot read {path!r}: {exc.strerror}") from None
    else:
        raise ConfigurationError(
            "CIBA_TOKENS (or CIBA_TOKENS_FILE) is not set: no caller could authenticate. "
            "Create a token with `ciba-middleware token new --service ID`."
        )
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{name} must be a non-empty JSON list of grants")
    return name, tuple(raw)


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
    timeout = _number(values, "CIBA_HEALTH_TIMEOUT", health.DEFAULT_TIMEOUT)
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
