"""The audit log: one JSON object per fail call, on one line.

:class:`AuditLog` is an observer of :class:`~ciba_middleware.core.FailApi`. For each call
it writes one line that *is* one JSON object (ASCII, so a line is a record whatever
reads it)::

    {"time": "2026-11-27T06:52:10.431Z", "event": "ciba_fail", "request_id": "...", ...}

Where the line goes is decided by :func:`ciba_middleware.linewriter.destination`, looked up
again at the first line of each second of the clock (:meth:`AuditLog.__call__`):
through :mod:`logging` (logger ``ciba_middleware.audit``, level INFO, the fields also on
the record as ``record.audit``) when the app's logging has a handler for it; straight to
the :class:`~ciba_middleware.linewriter.LineHandler` of ``CIBA_AUDIT_LOG=stdout|stderr|/path``
when it is the only one; to stderr when no logging is configured at all (the default
``on``, under a bare gunicorn, ``flask run`` or uWSGI). :func:`build_audit_log` installs the targets.

The line is made by :func:`audit_line` from a template, not by ``json.dumps`` of a dict
and a ``LogRecord``: that was about five times the cost of the call it described
(``docs/observability.md`` has the measurements). :func:`audit_record` gives the same
fields as a dict, for handlers that build their own JSON.

A record never holds a token, a secret or a ticket: the event it is built from carries
only the ticket's :func:`~ciba_middleware.stores.base.ticket_hash`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from json.encoder import encode_basestring_ascii
from typing import Any

from . import linewriter
from .auth import PrincipalKind
from .ciba.answers import ApiAction
from .errors import ConfigurationError
from .events import FailEvent, by_position, outcome
from .linewriter import LineHandler
from .reasons import Action, Reason

__all__ = ["AUDIT_LOGGER", "AuditLog", "audit_line", "audit_record", "build_audit_log", "route"]

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
    ``trace_id`` and ``span_id`` come last, and only when the call had a span.
    """
    created = time.time() if now is None else now
    principal = event.principal
    record = {
        "time": _time(created),
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
    if event.trace_id is not None:
        record["trace_id"] = event.trace_id
        record["span_id"] = event.span_id
    if event.endpoint is not None:
        # A call of the CIBA family: its route, after the fail API's members.
        record["event"] = "ciba_api"
        record["endpoint"] = event.endpoint
    return record


_BOOL = {None: "null", True: "true", False: "false"}
_STATUS = {status: str(status) for status in range(100, 600)}


_UNPACKED = (
    *("via", "route", "service_id", "principal", "status", "result_code", "reason", "action", "ticket_hash"),
    *("deleted", "auth_failure", "store_error", "client_addr", "request_id", "duration", "store_duration"),
    *("method", "traceparent", "trace_id", "span_id", "endpoint"),
)
by_position(_UNPACKED, "audit.audit_line")


def audit_line(event: FailEvent, now: float | None = None, services: Collection[str] | None = None) -> str:
    """:func:`audit_record` as its JSON line, without building the dict: the same members
    in the same order, ``duration_ms`` with exactly three decimals (the tests check that
    ``json.loads`` of the line is the record). One f-string: about half the cost of the
    ``%`` template it replaced, and a fifth of ``json.dumps`` (``docs/observability.md``).

    Only the time, the request ID, the ticket's hash, the duration and the span change from
    call to call; the members between them are the same for every call of one caller with
    one outcome, so their text is made once and remembered (:func:`_parts`)."""
    # The fields by position (_UNPACKED, checked at import), in one unpacking, rather than
    # one attribute read each.
    (
        via,
        route,
        _,
        principal,
        status,
        result_code,
        reason,
        action,
        ticket,
        deleted,
        failure,
        store_error,
        client,
        request_id,
        duration,
        _,
        _,
        _,
        trace_id,
        span_id,
        endpoint,
    ) = event
    # Everything the remembered members are made of, each bounded by the configuration and
    # the code, never by what callers send: the service the line names (FailEvent.service:
    # a service a caller merely claims is None unless configured), the principal by its kind
    # and ID (the grants'), and the enums and codes. The client's address and the claimed
    # service ID vary with callers: they are not part of the key, and the address is written
    # per line.
    service = event.service(services)
    key = (
        via,
        route,
        service,
        None if principal is None else principal.kind,
        None if principal is None else principal.id,
        reason,
        action,
        deleted,
        status,
        result_code,
        failure,
        store_error,
        endpoint,
    )
    parts = _PARTS.get(key)
    if parts is None:
        parts = _parts(event, service, key)
    # The time: the second's text remembered, the millisecond's from a table (as _time).
    millis = int((time.time() if now is None else now) * 1000)
    second, head = _second
    if second != millis // 1000:
        head = _head(millis // 1000)
    trace = ""
    if trace_id is not None:
        trace = f',"trace_id":{_string(trace_id)},"span_id":{_string(span_id)}'
    return (
        f'{{"time":"{head}{_MILLISECONDS[millis % 1000]}","event":{parts[3]},'
        f'"request_id":{"null" if request_id is None else _escape(request_id)},{parts[0]}'
        f'"ticket_hash":{"null" if ticket is None else _escape(ticket)},{parts[1]}'
        f'"client_addr":{_known(client) or _recurring(client)},{parts[2]}'
        f'"duration_ms":{duration * 1000:.3f}{trace}{parts[4]}}}'
    )


def _parts(event: FailEvent, service: str | None, key: tuple[object, ...]) -> tuple[str, str, str, str, str]:
    """The members of ``event``'s line from ``via`` to ``action``, from ``deleted`` to
    ``outcome`` and from ``status`` to ``store_error``, each with its trailing comma; the
    ``event`` member's value; and what follows the duration and the span (a call of the
    CIBA family's ``endpoint``, after the fail API's members, as :func:`audit_record` has
    it). Remembered under ``key`` (a table of at most _PARTS_MAX, emptied when full)."""
    via, route, _, principal, status, result_code, reason, action, _, deleted, failure, store_error = event[:12]
    # Every free string is escaped; the enums, the route and ``via`` are ours and plain
    # ASCII. The enums' texts, and the strings that recur from call to call (the service,
    # the principal, the client), come from tables: formatting an enum member calls
    # Enum.__format__, in Python, and escaping costs more than a lookup.
    parts = (
        f'"via":"{via}","route":{"null" if route is None else f"{_QUOTE}{route}{_QUOTE}"},'
        f'"service":{_known(service) or _recurring(service)},'
        f'"principal_kind":{"null" if principal is None else _known(principal.kind) or _string(principal.kind)},'
        f'"principal_id":{"null" if principal is None else _known(principal.id) or _recurring(principal.id)},'
        f'"reason":{_known(reason) or _string(reason)},"action":{_known(action) or _string(action)},',
        f'"deleted":{_BOOL[deleted]},"outcome":"{outcome(event)}",',
        f'"status":{_STATUS.get(status) or str(status)},"result_code":"{result_code}",'
        f'"auth_failure":{"null" if failure is None else _escape(failure)},'
        f'"store_error":{_BOOL[store_error]},',
        '"ciba_fail"' if event.endpoint is None else '"ciba_api"',
        "" if event.endpoint is None else f',"endpoint":{_string(event.endpoint)}',
    )
    if len(_PARTS) >= _PARTS_MAX:
        _PARTS.clear()
    _PARTS[key] = parts
    return parts


#: The remembered middles of lines (:func:`_parts`), by what they are made of.
_PARTS: dict[tuple[object, ...], tuple[str, str, str, str, str]] = {}
_PARTS_MAX = 4096


_QUOTE = '"'
_escape = encode_basestring_ascii
# JSON text of None, of each enum member, and of up to _RECURRING strings seen before.
_KNOWN: dict[object, str] = {None: "null"}
for _enum in (Reason, Action, ApiAction, PrincipalKind):
    _KNOWN.update((member, encode_basestring_ascii(member.value)) for member in _enum)
_known = _KNOWN.get
_RECURRING = 1024 + len(_KNOWN)


def _recurring(value: str | None) -> str:
    """``value`` as JSON, remembered while the table has room (a caller may vary it)."""
    text = _string(value)
    if len(_KNOWN) < _RECURRING:
        _KNOWN[value] = text
    return text


def _string(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


# The millisecond of the last record and its text, and the second's text: strftime once
# a second, the milliseconds from a table, and nothing at all for the same millisecond.
_last: tuple[int, str] = (-1, "")
_second: tuple[int, str] = (-1, "")
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


def _time(created: float) -> str:
    global _last
    millis = int(created * 1000)
    last, text = _last
    if millis == last:
        return text
    whole = millis // 1000
    second, head = _second
    if second != whole:
        head = _head(whole)
    text = head + _MILLISECONDS[millis % 1000]
    _last = (millis, text)
    return text


def _head(whole: int) -> str:
    """The text of the second ``whole`` (to the seconds), remembered as the current one."""
    global _second
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    _second = (whole, head)
    return head


class AuditLog:
    """Write each fail call as one JSON line (an observer of the fail API).

    ::

        middleware = BackchannelFailMiddleware(app, store=..., verifier=..., observers=[AuditLog()])

    :param logger: where records go; ``ciba_middleware.audit`` by default.
    :param level: their level, INFO by default. Nothing is built when no handler would
        take a record of that level (:func:`ciba_middleware.linewriter.destination`).
    :param services: the configured service IDs, so a refused call's claimed service is
        written when it is one of them (:func:`audit_record`).
    :param fallback: where lines go when the logging system has no handler at all:
        stderr by default, None to drop them as :mod:`logging` would.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        *,
        services: Collection[str] | None = None,
        fallback: LineHandler | None = linewriter.STDERR,
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger(AUDIT_LOGGER)
        self.level = level
        self.services = frozenset(services) if services is not None else None
        self.fallback = fallback
        # The end of the second of the clock in which the destination was last looked up,
        # and what it was.
        self._target: tuple[float, object] = (-1.0, None)

    def __call__(self, event: FailEvent) -> None:
        now = time.time()
        until, target = self._target
        if not until - 1.0 <= now < until:
            # Where lines go is looked up once per second of the clock, not per line: the
            # walk of the loggers cost a tenth of the call. A logging configuration changed
            # at runtime is followed from the next second on (or at once when the clock is
            # set back).
            target = linewriter.destination(self.logger, self.level, self.fallback)
            self._target = (int(now) + 1.0, target)
        if target is None:
            return
        if isinstance(target, LineHandler):
            # On an event loop the line is made by the handler's writer thread, off the loop;
            # the time is the call's, taken now.
            target.write_later(audit_line, event, now, self.services)
            return
        record = audit_record(event, now, self.services)
        self.logger.log(self.level, "%s", audit_line(event, now, self.services), extra={"audit": record})

    def where(self) -> str:
        """Where a record would go now, in words, for the start-up line."""
        target = linewriter.destination(self.logger, self.level, self.fallback)
        if target is None:
            return "nowhere (no handler takes INFO)"
        if isinstance(target, LineHandler):
            return target.target
        return f"logging ({self.logger.name})"


def build_audit_log(
    target: str, services: Collection[str] | None = None, delay: float = linewriter.DEFAULT_DELAY
) -> AuditLog:
    """An :class:`AuditLog` whose records go to ``target``, for ``CIBA_AUDIT_LOG``.

    ``on``
        records go to the app's logging when it has a handler for them (under the logger
        ``ciba_middleware.audit``, whose level is set to INFO unless already set), and to
        stderr when no logging is configured at all.
    ``stdout`` / ``stderr``
        a :class:`~ciba_middleware.linewriter.LineHandler` writing the bare JSON lines to that
        stream; the logger then stops propagating, so a root handler does not print each
        line a second time.
    an absolute path
        the same to that file, appended to (``O_APPEND``: several workers may append to
        one file; it is reopened after logrotate moves it).

    Lines written by the package itself (to stderr when nothing is configured, or to the
    target) wait up to ``delay`` seconds in memory, so that a busy worker's lines share
    ``write()`` calls (``CIBA_AUDIT_FLUSH``; :class:`~ciba_middleware.linewriter.LineHandler`).

    Installing the same target twice adds one handler, so building two middlewares in
    one process does not double the lines.
    """
    logger = logging.getLogger(AUDIT_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if target == "on":
        fallback = linewriter.STDERR if delay == linewriter.STDERR.delay else LineHandler("stderr", delay)
        return AuditLog(logger, services=services, fallback=fallback)
    if target not in ("stdout", "stderr") and not target.startswith("/"):
        raise ConfigurationError(f"must be on, off, stdout, stderr or an absolute file path, not {target!r}")
    if not any(getattr(h, _TARGET_ATTR, None) == target for h in logger.handlers):
        try:
            handler = LineHandler(target, delay)
        except OSError as exc:
            raise ConfigurationError(f"cannot open {target!r} for appending: {exc.strerror}") from None
        setattr(handler, _TARGET_ATTR, target)
        logger.addHandler(handler)
    logger.propagate = False
    return AuditLog(logger, services=services)


#: The name :func:`build_audit_log` had before: it routes the records, and builds the log.
route = build_audit_log
