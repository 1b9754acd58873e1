"""What happened in one fail call, for observers such as metrics and the audit log.

The middleware builds a :class:`FailEvent` only when it has observers, after the answer
is decided, and hands it to each observer in turn; an observer that raises is logged and
ignored, so observability can never change an answer. An observer may return a new event
(the tracing observer adds the span's IDs), which the observers after it get instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from .auth import Principal
from .reasons import Action, Reason

if TYPE_CHECKING:
    from .ciba.answers import ApiAction

__all__ = ["FailEvent", "Observer", "by_position", "notify", "outcome"]

log = logging.getLogger(__name__)


class FailEvent(NamedTuple):
    """One call of the fail API, or of the CIBA family (``endpoint`` set), over HTTP or in
    process. Never holds a secret or a clear ticket.

    A named tuple, immutable as a frozen dataclass would be, but built four times faster
    (measured: about 0.8 us against 3 us for twenty fields), and it is built on every
    observed call. ``event._replace(field=...)`` gives a changed copy.
    """

    via: Literal["http", "in_process"]
    #: ``v3`` (``/api/{serviceId}/...``), ``v2`` (``/api/...``), or None in process.
    route: Literal["v3", "v2"] | None
    #: The service in the URL (v3), the API key given (v2), or the argument (in process).
    service_id: str | None
    principal: Principal | None
    #: HTTP status of the API's own answer: 200 on success.
    status: int
    result_code: str
    reason: Reason | None = None
    #: The answer's ``action``: the fail API's, or a family route's (:class:`ApiAction`).
    action: Action | ApiAction | None = None
    #: :func:`ciba_middleware.stores.ticket_hash` of the ticket, when one was given.
    ticket_hash: str | None = None
    #: Whether a ticket was deleted; None when no ticket was looked up.
    deleted: bool | None = None
    #: ``missing``, ``scheme``, ``malformed``, ``invalid``, ``dpop`` or ``not_covered``.
    auth_failure: str | None = None
    store_error: bool = False
    client_addr: str | None = None
    request_id: str | None = None
    #: Seconds from the start of the call to the answer.
    duration: float = 0.0
    #: Seconds spent in the store's delete; None when no ticket was looked up in it.
    store_duration: float | None = None
    #: The HTTP method (None in process) and the caller's ``traceparent`` header, as sent.
    method: str | None = None
    traceparent: str | None = None
    #: The call's span (32 and 16 lowercase hex digits), set by a tracing observer
    #: (:mod:`ciba_middleware.otel`) for the observers after it.
    trace_id: str | None = None
    span_id: str | None = None
    #: The family's route (``auth/token``, ...), or None for the fail API.
    endpoint: str | None = None

    def service(self, configured: Collection[str] | None = None) -> str | None:
        """The service this call may be logged or counted under, or None.

        The service the call was for when its caller was authenticated for it, or when the
        call came from the app itself. For a refused call, the service ID the caller named
        only when it is one of ``configured``: a caller may put anything in the URL or the
        Basic user name, a token included, and labelling by it would let anyone create
        series or log lines without bound.
        """
        service = self.service_id
        principal = self.principal
        if self.via == "in_process" or (principal is not None and service is not None and principal.covers(service)):
            return service
        if configured is not None and service in configured:
            return service
        return None


def by_position(names: tuple[str, ...], where: str) -> None:
    """Check, once at import, that code building or reading events by position (``where``)
    lists :class:`FailEvent`'s fields in their order.

    The hot path builds an event with ``tuple.__new__`` and the audit line unpacks it, both by
    position (:mod:`ciba_middleware.tuples`): a field added or moved here would otherwise shift
    every value after it without an error.
    """
    if names != FailEvent._fields:
        raise ImportError(f"{where} lists FailEvent's fields as {names}, not in their order {FailEvent._fields}")


#: Called with each event; may return a new one for the observers that follow (or None).
Observer = Callable[[FailEvent], "FailEvent | None"]


def outcome(event: FailEvent) -> str:
    """What a call did, as one label value.

    ``deleted`` (a ticket was deleted), ``not_found`` (a ticket was given but not found,
    expired, of another service or malformed), ``no_ticket`` (none given), ``rejected``
    (the call itself was refused: 4xx), ``store_error`` (the ticket store failed) or
    ``error`` (any other 5xx). A call of the CIBA family that was answered (200, whatever
    its action) is ``answered``.
    """
    if event.store_error:
        return "store_error"
    if event.status >= 500:
        return "error"
    if event.status != 200:
        return "rejected"
    if event.endpoint is not None:
        return "answered"
    if event.deleted is None:
        return "no_ticket"
    return "deleted" if event.deleted else "not_found"


def notify(observers: Sequence[Observer], event: FailEvent) -> FailEvent:
    """Give ``event`` to each observer; one that raises is logged and ignored.

    An observer that returns a :class:`FailEvent` hands it to those after it; the last
    such event is returned.
    """
    for observer in observers:
        try:
            changed = observer(event)
        except Exception:
            log.exception("fail API observer %r raised; ignored", observer)
        else:
            if isinstance(changed, FailEvent):
                event = changed
    return event
