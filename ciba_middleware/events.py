"""What happened in one fail call, for observers such as metrics and the audit log.

The middleware builds a :class:`FailEvent` only when it has observers, after the answer
is decided, and hands it to each observer in turn; an observer that raises is logged and
ignored, so observability can never change an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .auth import Principal
from .reasons import Action, Reason

__all__ = ["FailEvent", "Observer"]


@dataclass(frozen=True, slots=True)
class FailEvent:
    """One call of the fail API, over HTTP or in process. Never holds a secret or a clear ticket."""

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
    action: Action | None = None
    #: :func:`ciba_middleware.stores.ticket_hash` of the ticket, when one was given.
    ticket_hash: str | None = None
    #: Whether a ticket was deleted; None when no ticket was looked up.
    deleted: bool | None = None
    #: ``missing``, ``scheme``, ``malformed``, ``invalid`` or ``not_covered``.
    auth_failure: str | None = None
    store_error: bool = False
    client_addr: str | None = None
    request_id: str | None = None
    #: Seconds from the start of the call to the answer.
    duration: float = 0.0


Observer = Callable[[FailEvent], None]
