"""The demo's part of CIBA: its users and its devices, as :class:`~ciba_middleware.ciba.endpoints.Hooks`.

Everything else (client authentication, the request's checks, the auth_req_id, polls,
slow_down, tokens, notifications) is the toolkit's: :mod:`ciba_middleware.ciba.endpoints`.
Each hook that refuses a request fails its ticket through the fail API; between them they
reach the fail API's nine reasons (``docs/example-app.md``):

- ``find_user``: the user of a ``login_hint``, of a ``login_hint_token`` this server signed
  (:mod:`.hints`), or of an ``id_token_hint`` (the toolkit checked it is an ID token of this
  server) -> ``UNKNOWN_USER_ID``;
- ``login_hint_token_expired`` -> ``EXPIRED_LOGIN_HINT_TOKEN``;
- ``user_code_valid`` -> ``INVALID_USER_CODE``; the binding message, by the toolkit's default
  policy -> ``INVALID_BINDING_MESSAGE``;
- ``check``: the client registered for CIBA (``UNAUTHORIZED_CLIENT``), the resources
  (``INVALID_TARGET``), the user's blocked clients (``ACCESS_DENIED``), the user's code
  (``MISSING_USER_CODE``), the device's push service (``SERVER_ERROR``);
- ``start_device``: the request goes to the user's inbox (:mod:`.pending`), shown on the
  device page (:mod:`.device`).
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from ciba_middleware import Reason
from ciba_middleware.ciba.endpoints import AuthenticationRequest, Hooks, PendingRequest, Reject

from . import hints
from .directory import CLIENTS, RESOURCES, USERS, User, notify_device
from .pending import PendingRequests

__all__ = ["DENY", "AutoApprove", "DemoHooks"]

#: The binding message that automated approval denies.
DENY = "deny"

log = logging.getLogger(__name__)


class DemoHooks(Hooks):
    """The demo's users (:mod:`.directory`) and their devices' inbox (:mod:`.pending`)."""

    def __init__(self, hint_key: bytes, inbox: PendingRequests) -> None:
        self.hint_key = hint_key
        self.inbox = inbox

    def find_user(self, request: AuthenticationRequest) -> User | None:
        if request.hint_type == "login_hint":
            subject: str | None = request.hint
        elif request.hint_type == "login_hint_token":
            subject = self._claims(request).get("sub")
        else:
            subject = request.subject
        return USERS.get(subject) if isinstance(subject, str) else None

    def login_hint_token_expired(self, request: AuthenticationRequest) -> bool:
        try:
            return hints.expired(self._claims(request))
        except hints.BadHint:
            return True

    def user_code_valid(self, user: Any, request: AuthenticationRequest) -> bool:
        assert request.user_code is not None
        code: str | None = user.user_code
        return code is None or hmac.compare_digest(code.encode(), request.user_code.encode())

    def check(self, user: Any, request: AuthenticationRequest) -> None:
        client = CLIENTS.get(request.client_id)
        if client is not None and not client.ciba:
            raise Reject(Reason.UNAUTHORIZED_CLIENT, "The client is not registered for CIBA.")
        for resource in request.resources:
            if not _absolute_without_fragment(resource) or resource not in RESOURCES:
                raise Reject(Reason.INVALID_TARGET, "A resource is unknown or not an absolute URI.")
        if request.client_id in user.blocked_clients:
            raise Reject(Reason.ACCESS_DENIED, "The user does not allow this client to ask for authentication.")
        if user.user_code is not None and request.user_code is None:
            raise Reject(Reason.MISSING_USER_CODE, "This user requires a user code.")
        # The device is reached before the request is issued, so that an unreachable one
        # fails the ticket (SERVER_ERROR) rather than leaving a request nobody is asked about.
        notify_device(user, request.client_id, request.binding_message)

    def start_device(self, user: Any, pending: PendingRequest) -> None:
        self.inbox.add(user.subject, pending)

    def _claims(self, request: AuthenticationRequest) -> dict[str, Any]:
        try:
            return hints.read(request.hint, self.hint_key)
        except hints.BadHint as exc:
            log.info("a login_hint_token that is not this server's: it %s", exc)
            return {}


class AutoApprove(DemoHooks):
    """Every user decides every request ``delay`` seconds after it is issued
    (``CIBA_DEMO_AUTO_APPROVE``), so that a test suite runs the flow unattended: approved,
    except a request whose binding message is :data:`DENY`, which is denied (a suite tests
    the user's refusal so).

    ``decide(ticket, subject, approve)`` completes the request; it runs on a timer thread,
    after the client has its auth_req_id.
    """

    def __init__(self, hint_key: bytes, inbox: PendingRequests, decide: Any, delay: float) -> None:
        super().__init__(hint_key, inbox)
        self.decide = decide
        self.delay = delay

    def start_device(self, user: Any, pending: PendingRequest) -> None:
        approve = pending.request.binding_message != DENY
        timer = threading.Timer(self.delay, self.decide, (pending.ticket, user.subject, approve))
        timer.daemon = True
        timer.start()


def _absolute_without_fragment(uri: str) -> bool:
    """RFC 8707 2: an absolute URI (scheme and host) without a fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and "#" not in uri
