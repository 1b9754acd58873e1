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
                        audit.build_audit_log`)
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
``CIBA_PUBLIC_URL``     the server's public base URL, e.g. ``https://as.     empty: the URL each request
                        example.com``, which DPoP proofs name in ``htu``    says it was sent to
``CIBA_SERVICE_ID``     the service of the views' in-process calls          the grants' only service
                        (:func:`~ciba_middleware.adapter.view_service`)
``CIBA_SERVER_ERROR_    the client's status for ``server_error`` after a    500
STATUS``                view's ``BackchannelFail`` (400-599)
======================  ==================================================  ==========================

The CIBA family (:mod:`ciba_middleware.ciba`) is served when clients are configured:
``CIBA_CLIENTS`` (JSON list) or ``CIBA_CLIENTS_FILE`` (reloaded as the tokens file is),
``CIBA_ISSUER`` (required with them), ``CIBA_SIGNING_KEY_FILE``, ``CIBA_AUTH_REQ_ID_LIFETIME``
(600), ``CIBA_POLLING_INTERVAL`` (5), ``CIBA_ACCESS_TOKEN_LIFETIME`` (3600), and for
``/service/configuration`` ``CIBA_JWKS_URI``, ``CIBA_TOKEN_ENDPOINT``,
``CIBA_BACKCHANNEL_AUTHENTICATION_ENDPOINT`` (``docs/configuration.md``).

:data:`VARIABLES` lists them: the one list every integration reads (Django's
``CIBA_MIDDLEWARE`` keys and Flask's ``app.config`` keys are these names; one it does not
know is an error, never silently ignored).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import audit, health, linewriter, metrics
from .adapter import Site, server_error_status, view_service
from .auth import StaticTokenVerifier, TokenVerifier, clear_secret_digest, hex_digest
from .core import FailApi, check_public_url
from .errors import API_PATH, ConfigurationError
from .events import Observer
from .grants import (
    DEFAULT_INTERVAL,
    ReloadingVerifier,
    Snapshot,
    Unavailable,
    first_start,
    last_good,
    parse_grants,
    read_snapshot,
    remember,
)
from .middleware import BackchannelFailMiddleware
from .redact import mask_url
from .response import not_found_app
from .stores import DEFAULT_TTL, TicketStore, store_from_url
from .stores.base import MAX_TTL, checked_ttl, number_option
from .stores.memory import MemoryTicketStore

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "DEFAULT_STORE_URL",
    "MAX_BODY_BYTES",
    "VARIABLES",
    "Settings",
    "degraded",
    "from_env",
    "not_found_app",
    "unknown_variables",
]

DEFAULT_STORE_URL = "sqlite:///ciba-tickets.sqlite3"
#: The largest ``CIBA_MAX_BODY_BYTES``: 1 MiB. A real call is well under 1 KiB, and the
#: body is held in memory while it is parsed.
MAX_BODY_BYTES = 1 << 20
#: The longest ``CIBA_TOKENS_RELOAD_INTERVAL``: an hour.
MAX_RELOAD_INTERVAL = 3600.0

log = logging.getLogger(__name__)

#: The CIBA family's settings beside its clients: each needs clients configured.
_FAMILY_VARIABLES = (
    "CIBA_ISSUER",
    "CIBA_SIGNING_KEY_FILE",
    "CIBA_AUTH_REQ_ID_LIFETIME",
    "CIBA_POLLING_INTERVAL",
    "CIBA_ACCESS_TOKEN_LIFETIME",
    "CIBA_JWKS_URI",
    "CIBA_TOKEN_ENDPOINT",
    "CIBA_BACKCHANNEL_AUTHENTICATION_ENDPOINT",
)

#: Every ``CIBA_*`` variable the package reads: the one list of settings.
VARIABLES = (
    "CIBA_STORE_URL",
    "CIBA_TOKENS",
    "CIBA_TOKENS_FILE",
    "CIBA_TOKENS_RELOAD_INTERVAL",
    "CIBA_PATH_PREFIX",
    "CIBA_MAX_BODY_BYTES",
    "CIBA_TICKET_TTL",
    "CIBA_AUDIT_LOG",
    "CIBA_AUDIT_FLUSH",
    "CIBA_METRICS_PATH",
    "CIBA_METRICS_TOKEN_SHA256",
    "CIBA_METRICS_TOKEN",
    "CIBA_HEALTH_PATH",
    "CIBA_HEALTH_TIMEOUT",
    "CIBA_OTEL",
    "CIBA_PUBLIC_URL",
    "CIBA_SERVICE_ID",
    "CIBA_SERVER_ERROR_STATUS",
    # The CIBA family (ciba_middleware.ciba): its clients, then the rest of its settings.
    "CIBA_CLIENTS",
    "CIBA_CLIENTS_FILE",
    *_FAMILY_VARIABLES,
)


def unknown_variables(names: Iterable[str]) -> list[str]:
    """The ``CIBA_*`` names among ``names`` that are not settings (:data:`VARIABLES`), sorted."""
    return sorted(n for n in names if n.startswith("CIBA_") and n not in VARIABLES)


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
    audit_flush: float = linewriter.DEFAULT_DELAY
    #: ``CIBA_METRICS_PATH``; empty: no metrics.
    metrics_path: str = ""
    #: SHA-256 (hex) of the metrics endpoint's token; a clear token is hashed when read.
    metrics_token_sha256: str = ""
    #: ``CIBA_HEALTH_PATH``; empty: no health endpoint. ``CIBA_HEALTH_TIMEOUT``, seconds.
    health_path: str = ""
    health_timeout: float = health.DEFAULT_TIMEOUT
    #: ``CIBA_OTEL``: a span per call through OpenTelemetry.
    otel: bool = False
    #: The CIBA family's settings (:class:`FamilySettings`); None: the family is not served.
    family: FamilySettings | None = None
    #: ``CIBA_PUBLIC_URL``: the server's public base URL, for DPoP's ``htu``; empty: none.
    public_url: str = ""
    #: ``CIBA_SERVICE_ID``: the views' service; empty: the grants' only service.
    service_id: str = ""
    #: ``CIBA_SERVER_ERROR_STATUS``: the client's status for ``server_error``.
    server_error_status: int = 500

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
                linewriter.DEFAULT_DELAY,
                maximum=linewriter.MAX_DELAY,
                what=f"a number of seconds from 0 to {linewriter.MAX_DELAY:g}",
            ),
            tokens_reload_interval=interval,
            **_grants(values),
            health_path=health_path,
            health_timeout=health_timeout,
            otel=_switch(values, "CIBA_OTEL"),
            **_metrics(values),
            family=_family(values, interval),
            public_url=_public_url(values),
            service_id=_service_id(values),
            server_error_status=server_error_status(values.get("CIBA_SERVER_ERROR_STATUS")),
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
        *,
        observers: Sequence[Observer] = (),
        verifier: TokenVerifier | None = None,
        announce: bool = True,
        views: bool = False,
    ) -> Site:
        """Everything these settings describe, for any adapter: the transport-free
        :class:`~ciba_middleware.core.FailApi`, the health and metrics endpoints when
        configured, and what views need (:class:`~ciba_middleware.adapter.Site`).

        The tracing, audit log and metrics observers come first, then ``observers``.
        ``verifier`` (default: :meth:`build_verifier`) lets processes forked from one that
        built it share it. Writes the start-up line (once per process and line) unless
        ``announce`` is false (a build that only checks the configuration). With ``views``
        (Flask's and Django's integrations, whose views fail in process) the views' service
        is settled now, before anything is opened: ``CIBA_SERVICE_ID``, else the only service
        of the grants, else a :class:`ConfigurationError`; without, it is looked up when a
        view first needs it.
        """
        if verifier is None:
            verifier = self.build_verifier()
        service_id = view_service(self.service_id or None, verifier) if self.service_id or views else None
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
                audit_log = audit.build_audit_log(self.audit_log, services=_services(verifier), delay=self.audit_flush)
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_AUDIT_LOG: {exc}") from None
            chain.append(audit_log)
        scrapes: metrics.MetricsEndpoint | None = None
        if self.metrics_path:
            try:
                collected = metrics.Metrics()
            except ConfigurationError as exc:
                raise ConfigurationError(f"CIBA_METRICS_PATH: {exc}") from None
            chain.append(collected)
            if isinstance(verifier, ReloadingVerifier):
                collected.count_reload_failures(verifier)
            scrapes = metrics.MetricsEndpoint(
                metrics=collected, path=self.metrics_path, token_sha256=self.metrics_token_sha256
            )
        chain.extend(observers)
        store = self.build_store()
        try:
            probe = None
            if self.health_path:
                probe = health.HealthEndpoint(store=store, path=self.health_path, timeout=self.health_timeout)
            family = self.family.build(store) if self.family is not None else None
            api = FailApi(
                store=store,
                verifier=verifier,
                prefix=self.prefix,
                max_body_bytes=self.max_body_bytes,
                observers=chain,
                public_url=self.public_url,
                family=family,
            )
        except BaseException:
            store.close()
            raise
        if announce:
            _announce(self.describe(_services(verifier) or frozenset(), audit_log))
        return Site(api, probe, scrapes, service_id, self.server_error_status)

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
        if self.public_url:
            extras += f"; public URL {self.public_url}"
        if self.family is not None:
            extras += (
                f"; CIBA family at {base}[/{{serviceId}}]/backchannel/authentication[/issue|/complete], "
                f"/auth/token, /auth/introspection, /service/jwks/get, /service/configuration "
                f"({_plural(len(self.family.clients), 'client')} from {self.family.clients_source})"
            )
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
        views: bool = False,
    ) -> BackchannelFailMiddleware:
        """The WSGI middleware around ``app`` (:meth:`build_api`, then the adapter), serving
        the health and metrics endpoints too when they are configured."""
        site = self.build_api(observers=observers, verifier=verifier, announce=announce, views=views)
        return BackchannelFailMiddleware.around(app, site)


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
    (:func:`ciba_middleware.linewriter.destination`)."""
    key = (os.getpid(), line)
    if key in _announced:
        return
    _announced.add(key)
    target = linewriter.destination(log, logging.INFO)
    if isinstance(target, linewriter.LineHandler):
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
        kept = last_good(path)
        if kept is not None:
            # A worker replacing another of a server that read a good file: it serves
            # those grants, and takes the file again as soon as it is good.
            log.error("%s; the last good grants of this server stay in force (version %s)", exc, kept.version)
            return {**found, "grants": kept.grants, "tokens_snapshot": kept, "tokens_refused": str(exc)}
        if first_start():
            raise
        log.error("%s; this process answers the fail API with 500 until the file is fixed", exc)
        return {**found, "tokens_refused": str(exc)}
    remember(path, snapshot)
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


def _public_url(values: Mapping[str, Any]) -> str:
    url = _text(values, "CIBA_PUBLIC_URL", "")
    return check_public_url(url, "CIBA_PUBLIC_URL") if url else ""


def _service_id(values: Mapping[str, Any]) -> str:
    value = values.get("CIBA_SERVICE_ID")
    if value is None or value == "":
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)  # as Flask's from_prefixed_env leaves FLASK_CIBA_SERVICE_ID=715948317
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"CIBA_SERVICE_ID must be a service ID (a string), not {value!r}")
    return value.strip()


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


# -- the CIBA family --------------------------------------------------------------------

#: The bounds of the family's durations, in seconds.
MAX_LIFETIME = 86400
MAX_ACCESS_TOKEN_LIFETIME = 30 * 86400
MAX_POLLING_INTERVAL = 600


@dataclass(frozen=True)
class FamilySettings:
    """The checked ``CIBA_*`` settings of the CIBA family (``docs/configuration.md``)."""

    clients: tuple[Mapping[str, Any], ...]
    clients_source: str
    issuer: str
    clients_file: str = ""
    clients_snapshot: Snapshot | None = field(default=None, compare=False, repr=False)
    clients_refused: str | None = None
    clients_reload_interval: float = DEFAULT_INTERVAL
    signing_key_file: str = ""
    auth_req_id_lifetime: int = 600
    polling_interval: int = 5
    access_token_lifetime: int = 3600
    jwks_uri: str | None = None
    token_endpoint: str | None = None
    backchannel_authentication_endpoint: str | None = None

    def build_clients(self) -> Any:
        """A :class:`~ciba_middleware.ciba.clients.ClientRegistry`, or the reloading file's."""
        from .ciba.clients import ClientRegistry, ReloadingClients

        if self.clients_file:
            return ReloadingClients(
                self.clients_file,
                self.clients_snapshot,
                interval=self.clients_reload_interval,
                refused=self.clients_refused,
            ).registry
        try:
            return ClientRegistry(self.clients)
        except ConfigurationError as exc:
            raise ConfigurationError(f"CIBA_CLIENTS: {exc}") from None

    def build_key(self) -> Any:
        """The ID tokens' :class:`~ciba_middleware.ciba.keys.SigningKey`."""
        from .ciba.keys import SigningKey

        try:
            if self.signing_key_file:
                return SigningKey.from_file(self.signing_key_file)
            return SigningKey.generate()
        except ConfigurationError as exc:
            text = str(exc)
            raise ConfigurationError(
                text if text.startswith("CIBA_SIGNING_KEY_FILE") else f"CIBA_SIGNING_KEY_FILE: {text}"
            ) from None

    def build(self, store: TicketStore) -> Any:
        """The :class:`~ciba_middleware.ciba.family.Family` on ``store``."""
        from .ciba.family import Family, FamilyOptions

        options = FamilyOptions(
            issuer=self.issuer,
            auth_req_id_lifetime=self.auth_req_id_lifetime,
            interval=self.polling_interval,
            access_token_lifetime=self.access_token_lifetime,
            jwks_uri=self.jwks_uri,
            token_endpoint=self.token_endpoint,
            backchannel_authentication_endpoint=self.backchannel_authentication_endpoint,
        )
        try:
            return Family(store=store, clients=self.build_clients(), key=self.build_key(), options=options)
        except ConfigurationError as exc:
            text = str(exc)
            if text.startswith("the CIBA family keeps records"):
                raise ConfigurationError(f"CIBA_STORE_URL: {text}") from None
            raise


def _family(values: Mapping[str, Any], interval: float) -> FamilySettings | None:
    """The family's settings, or None when no client is configured (then none of its
    variables may be set)."""
    from .ciba.clients import parse_clients, read_clients

    inline = values.get("CIBA_CLIENTS")
    path = values.get("CIBA_CLIENTS_FILE")
    if inline not in (None, "") and path not in (None, ""):
        raise ConfigurationError("set CIBA_CLIENTS or CIBA_CLIENTS_FILE, not both")
    if inline in (None, "") and path in (None, ""):
        for name in _FAMILY_VARIABLES:
            if values.get(name) not in (None, ""):
                raise ConfigurationError(
                    f"{name} is set but neither CIBA_CLIENTS nor CIBA_CLIENTS_FILE: no CIBA client"
                )
        return None
    found: dict[str, Any] = {}
    if inline not in (None, ""):
        # Checked whole when the API is built (build_clients), which check does too.
        found.update(clients=parse_clients(inline, "CIBA_CLIENTS"), clients_source="CIBA_CLIENTS")
    else:
        file = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        found.update(clients_source="CIBA_CLIENTS_FILE", clients_file=file, clients_reload_interval=interval)
        try:
            snapshot = read_clients(file)
        except ConfigurationError as exc:
            if first_start():
                raise
            log.error("%s; this process serves no CIBA client until the file is fixed", exc)
            found.update(clients=(), clients_refused=str(exc))
        else:
            found.update(clients=snapshot.grants, clients_snapshot=snapshot)
    issuer = _text(values, "CIBA_ISSUER", "")
    if not issuer:
        raise ConfigurationError("CIBA_ISSUER is not set: the ID tokens of the CIBA clients need an issuer (iss)")
    _url(issuer, "CIBA_ISSUER", query=False)
    key_file = _text(values, "CIBA_SIGNING_KEY_FILE", "")
    urls: dict[str, Any] = {}
    for name, key in (
        ("CIBA_JWKS_URI", "jwks_uri"),
        ("CIBA_TOKEN_ENDPOINT", "token_endpoint"),
        ("CIBA_BACKCHANNEL_AUTHENTICATION_ENDPOINT", "backchannel_authentication_endpoint"),
    ):
        value = _text(values, name, "")
        if value:
            _url(value, name, query=True)
            urls[key] = value
    settings = FamilySettings(
        **found,
        issuer=issuer,
        signing_key_file=key_file,
        auth_req_id_lifetime=_number(
            values,
            "CIBA_AUTH_REQ_ID_LIFETIME",
            600,
            integer=True,
            minimum=1,
            maximum=MAX_LIFETIME,
            what=f"a whole number of seconds from 1 to {MAX_LIFETIME}",
        ),
        polling_interval=_number(
            values,
            "CIBA_POLLING_INTERVAL",
            5,
            integer=True,
            minimum=0,
            maximum=MAX_POLLING_INTERVAL,
            what=f"a whole number of seconds from 0 to {MAX_POLLING_INTERVAL}",
        ),
        access_token_lifetime=_number(
            values,
            "CIBA_ACCESS_TOKEN_LIFETIME",
            3600,
            integer=True,
            minimum=1,
            maximum=MAX_ACCESS_TOKEN_LIFETIME,
            what=f"a whole number of seconds from 1 to {MAX_ACCESS_TOKEN_LIFETIME}",
        ),
        **urls,
    )
    if key_file:
        settings.build_key()  # a bad key stops the start, here
    return settings


def _url(value: str, name: str, *, query: bool) -> None:
    """An https URL (http only to localhost, for development), or ConfigurationError naming ``name``."""
    parts = urlsplit(value)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if (
        not parts.hostname
        or (parts.scheme != "https" and not (parts.scheme == "http" and local))
        or parts.fragment
        or (parts.query and not query)
    ):
        raise ConfigurationError(
            f"{name} must be an https URL{'' if query else ' without query'} or fragment "
            f"(http only for localhost), not {_shown(value)}"
        )
