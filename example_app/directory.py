"""The demo's clients, users and resources: what a real authorization server keeps in a database.

Every rule of :mod:`example_app.hooks` that fails a request reads its facts here, so
each of the nine fail reasons has a user or client that reaches it (``docs/example-app.md``).
The secrets are demo values, printed on the index page on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CLIENTS", "RESOURCES", "SCOPES", "USERS", "Client", "DeviceUnreachable", "User", "notify_device"]


@dataclass(frozen=True)
class Client:
    """A registered client, authenticated with client_secret_basic."""

    client_id: str
    client_secret: str
    #: Registered for CIBA (grant type ``urn:openid:params:grant-type:ciba``, poll mode).
    ciba: bool
    note: str


@dataclass(frozen=True)
class User:
    """An end-user the backchannel request may name."""

    subject: str
    note: str
    #: The secret user code this user set (CIBA Core 7.1 ``user_code``); None: not required.
    user_code: str | None = None
    #: Clients this user has blocked from asking for authentication.
    blocked_clients: frozenset[str] = field(default_factory=frozenset)
    #: Whether the push service of the user's authentication device answers.
    device_reachable: bool = True


CLIENTS: dict[str, Client] = {
    c.client_id: c
    for c in (
        Client("demo-client", "demo-secret", ciba=True, note="a CIBA client in poll mode"),
        Client("web-client", "web-secret", ciba=False, note="a web client not registered for CIBA"),
    )
}

USERS: dict[str, User] = {
    u.subject: u
    for u in (
        User("alice", "no user code; the happy path"),
        User("bob", "requires the user code 4711", user_code="4711"),
        User("carol", "has blocked demo-client", blocked_clients=frozenset({"demo-client"})),
        User("dave", "the push service of his device is down", device_reachable=False),
    )
}

#: Scopes the demo knows; ``openid`` is required (CIBA Core 7.1).
SCOPES = frozenset({"openid", "profile", "email", "payments"})

#: Resource indicators (RFC 8707) of the protected resources the demo issues tokens for.
RESOURCES = frozenset({"https://api.example.com/payments", "https://api.example.com/accounts"})


class DeviceUnreachable(Exception):
    """The user's authentication device could not be notified: an internal failure."""


def notify_device(user: User, client_id: str, binding_message: str | None) -> None:
    """Ask the user, on their authentication device, to approve the client's request.

    The demo has no devices: it stands in for the push call a real server makes, and fails
    like one for a user whose push service is down.
    """
    if not user.device_reachable:
        raise DeviceUnreachable(f"push service for {user.subject}'s device timed out")
