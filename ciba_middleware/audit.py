"""The audit log: one JSON object per fail call, through stdlib logging.

:class:`AuditLog` is an observer of :class:`~ciba_middleware.BackchannelFailMiddleware`.
For each call it logs, at INFO under the logger ``ciba_middleware.audit``, a message that
*is* one JSON object on one line (ASCII, so a line is a record whatever the handler)::

    {"time": "2026-11-27T06:52:10.431Z", "event": "ciba_fail", "request_id": "...", ...}

so any handler can route it: a file, stdout, syslog, a log shipper. The same fields are on
the record as ``record.audit`` (a dict) for handlers that build their own JSON.
:func:`route` installs the common handlers (``CIBA_AUDIT_LOG=stdout|stderr|/path``).

A record never holds a token, a secret or a ticket: the event it is built from carries
only the ticket's :func:`~ciba_middleware.stores.base.ticket_hash`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Collection
from typing import Any

from .errors import ConfigurationError
from .events import FailEvent, outcome

__all__ = ["AUDIT_LOGGER", "AuditLog", "audit_record", "route"]

#: The module has no ``log`` of its own: its name is the audit logger's, and everything
#: under that logger is an audit record.
AUDIT_LOGGER = "ciba_middleware.audit"

_TARGET_ATTR = "ciba_audit_target"


def audit_record(event: FailEvent, now: float | None = None, services: Collection[str] | None = None) -> dict[str, Any]:
    """The audit fields of one call, in a fixed order (``docs/observability.md``).

    ``service`` is the service the call was for when the caller was authenticated for it,
    or the call came from the app itself. For a refused call it is the service ID the
    caller named only when that is one of ``services`` (the configured ones), else None:
    a caller may put anything in the URL or the Basic user name, a token included.
    """
    created = time.time() if now is None else now
    principal = event.principal
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z",
        "event": "ciba_fail",
        "request_id": event.request_id,
        "via": event.via,
        "route": event.route,
        "service": event.service(services),
        "principal_kind": principal.kind.value if principal is not None else None,
        "principal_id": principal.id if principal is not None else None,
        "reason": event.reason.value if event.reason is not None else None,
        "action": event.action.value if event.action is not None else None,
        "ticket_hash": event.ticket_hash,
        "deleted": event.deleted,
        "outcome": outcome(event),
        "client_addr": event.client_addr,
        "status": event.status,
        "result_code": event.result_code,
        "auth_failure": event.auth_failure,
        "store_error": event.store_error,
        "duration_ms": round(event.duration * 1000, 3),
    }


class AuditLog:
    """Log each fail call as one JSON line (an observer of the middleware).

    ::

        middleware = BackchannelFailMiddleware(app, store=..., verifier=..., observers=[AuditLog()])

    :param logger: where records go; ``ciba_middleware.audit`` by default.
    :param level: their level, INFO by default. The JSON is built only when the logger
        is enabled for it, so an audit log nobody routes costs one level check.
    :param services: the configured service IDs, so a refused call's claimed service is
        written when it is one of them (:func:`audit_record`).
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        *,
        services: Collection[str] | None = None,
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger(AUDIT_LOGGER)
        self.level = level
        self.services = frozenset(services) if services is not None else None

    def __call__(self, event: FailEvent) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        record = audit_record(event, services=self.services)
        self.logger.log(self.level, "%s", json.dumps(record, separators=(",", ":")), extra={"audit": record})


def route(target: str, services: Collection[str] | None = None) -> AuditLog:
    """An :class:`AuditLog` whose records go to ``target``, for ``CIBA_AUDIT_LOG``.

    ``on``
        records are emitted at INFO under ``ciba_middleware.audit`` (its level is set to
        INFO unless already set) and reach whatever handlers the app's logging config has.
    ``stdout`` / ``stderr``
        also a handler writing the bare JSON lines to that stream; the logger then stops
        propagating, so a root handler does not print each line a second time.
    an absolute path
        the same to that file, appended to (a ``WatchedFileHandler``: it reopens the
        file after logrotate moves it; several workers may append to one file).

    Installing the same target twice adds one handler, so building two middlewares in
    one process does not double the lines.
    """
    logger = logging.getLogger(AUDIT_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if target == "on":
        return AuditLog(logger, services=services)
    if target not in ("stdout", "stderr") and not target.startswith("/"):
        raise ConfigurationError(f"must be on, off, stdout, stderr or an absolute file path, not {target!r}")
    if not any(getattr(h, _TARGET_ATTR, None) == target for h in logger.handlers):
        handler: logging.Handler
        if target == "stdout":
            handler = logging.StreamHandler(sys.stdout)
        elif target == "stderr":
            handler = logging.StreamHandler(sys.stderr)
        else:
            try:
                handler = logging.handlers.WatchedFileHandler(target, encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"cannot open {target!r} for appending: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        setattr(handler, _TARGET_ATTR, target)
        logger.addHandler(handler)
    logger.propagate = False
    return AuditLog(logger, services=services)
