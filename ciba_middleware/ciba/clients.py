"""The CIBA clients a service accepts: ``CIBA_CLIENTS`` / ``CIBA_CLIENTS_FILE``.

Each client is a JSON object::

    {"client_id": "app", "service": "715948317", "client_secret_sha256": "<hex>",
     "delivery_mode": "poll", "user_code_required": false}
    {"client_id": "1234", "service": "715948317", "client_secret_sha256": "<hex>",
     "delivery_mode": "ping", "notification_endpoint": "https://app.example/cb"}

Secrets are kept as SHA-256 digests and compared in constant time, as the callers' tokens
are (``client_secret`` in clear is accepted for development, with a warning).

On the wire ``clientId`` is a number, as in Authlete. A ``client_id`` made of digits (at most
18) is that number. Any other ``client_id`` travels as ``clientIdAlias`` (with
``clientIdAliasUsed`` true) beside a stable number: the first 52 bits of
SHA-256(service ID, NUL, client_id), plus one, so that it is the same in every process and
on every host, fits a JavaScript number exactly, and is never 0. Two clients of one service
whose numbers collide are a configuration error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..auth import clear_secret_digest, hex_digest
from ..errors import ConfigurationError
from ..grants import ReloadingVerifier, Snapshot, parse_grants, read_snapshot
from .delivery import insecure_hosts

__all__ = ["DELIVERY_MODES", "Client", "ClientRegistry", "ReloadingClients", "client_number", "parse_clients"]

log = logging.getLogger(__name__)

#: CIBA Core 5's token delivery modes.
DELIVERY_MODES = ("poll", "ping", "push")
_DIGITS = re.compile(r"[0-9]{1,18}")
_KEYS = frozenset(
    {
        "client_id",
        "service",
        "client_secret",
        "client_secret_sha256",
        "delivery_mode",
        "notification_endpoint",
        "user_code_required",
        "client_name",
        "scopes",
    }
)


def client_number(service_id: str, client_id: str) -> tuple[int, bool]:
    """The ``clientId`` number of ``client_id`` in ``service_id``, and whether it is an alias's."""
    if _DIGITS.fullmatch(client_id) and int(client_id) > 0:
        return int(client_id), False
    digest = hashlib.sha256(f"{service_id}\x00{client_id}".encode()).digest()
    return (int.from_bytes(digest[:7], "big") >> 4) + 1, True


@dataclass(frozen=True)
class Client:
    """One configured client, as the family's handlers use it."""

    client_id: str
    service: str
    number: int
    aliased: bool
    secret_sha256: bytes
    delivery_mode: str
    notification_endpoint: str | None
    user_code_required: bool
    name: str | None
    #: The scopes it may request (``"scopes"``); None: any.
    scopes: frozenset[str] | None = None

    def check_secret(self, secret: str) -> bool:
        """Whether ``secret`` is this client's, compared in constant time on the digests."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self.secret_sha256)

    def wire(self) -> dict[str, Any]:
        """``clientId``, ``clientIdAlias``, ``clientIdAliasUsed`` and ``clientName``, as Authlete sends them."""
        return {
            "clientId": self.number,
            "clientIdAlias": self.client_id if self.aliased else None,
            "clientIdAliasUsed": self.aliased,
            "clientName": self.name,
        }


def _client(entry: object) -> Client:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"must be an object, not {type(entry).__name__}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigurationError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    client_id = _text(entry.get("client_id"), "client_id")
    service = _text(entry.get("service"), "service")
    if len(client_id) > 255:
        raise ConfigurationError("'client_id' must be at most 255 characters")
    secrets = [k for k in ("client_secret", "client_secret_sha256") if k in entry]
    if len(secrets) != 1:
        raise ConfigurationError(f"client {client_id!r} needs exactly one of client_secret_sha256, client_secret")
    if secrets[0] == "client_secret_sha256":
        digest = hex_digest(entry["client_secret_sha256"], "'client_secret_sha256'")
    else:
        clear = entry["client_secret"]
        if not isinstance(clear, str) or not clear:
            raise ConfigurationError("'client_secret' must be a non-empty string")
        digest = clear_secret_digest(
            clear, f"client {client_id!r} has a clear-text 'client_secret'", "use 'client_secret_sha256'", log
        )
    mode = entry.get("delivery_mode", "poll")
    if mode not in DELIVERY_MODES:
        raise ConfigurationError(f"'delivery_mode' must be poll, ping or push, not {mode!r}")
    endpoint = entry.get("notification_endpoint")
    if mode == "poll":
        if endpoint is not None:
            raise ConfigurationError("'notification_endpoint' is for ping and push clients only")
    else:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        # http only for a host listed for development (the delivery's own rule, checked again there).
        schemes = ("https", "http") if parts is not None and (parts.hostname or "") in insecure_hosts() else ("https",)
        if parts is None or parts.scheme not in schemes or not parts.hostname or parts.fragment:
            raise ConfigurationError(
                f"a {mode} client needs 'notification_endpoint', an https URL without fragment, not {endpoint!r}"
            )
    required = entry.get("user_code_required", False)
    if not isinstance(required, bool):
        raise ConfigurationError(f"'user_code_required' must be true or false, not {required!r}")
    name = entry.get("client_name")
    if name is not None and not isinstance(name, str):
        raise ConfigurationError("'client_name' must be a string")
    scopes = entry.get("scopes")
    if scopes is not None:
        if (
            not isinstance(scopes, list)
            or "openid" not in scopes
            or not all(isinstance(s, str) and s and s.isprintable() and " " not in s for s in scopes)
        ):
            raise ConfigurationError(f"'scopes' must be a list of scope names including openid, not {scopes!r}")
        scopes = frozenset(scopes)
    number, aliased = client_number(service, client_id)
    return Client(client_id, service, number, aliased, digest, mode, endpoint, required, name, scopes)


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip() or not value.isprintable():
        raise ConfigurationError(f"{name!r} must be a non-empty printable string without surrounding spaces")
    return value


class ClientRegistry:
    """The configured clients, by service and ``client_id`` (or number).

    >>> r = ClientRegistry([{"client_id": "app", "service": "42", "client_secret": "s"}])
    >>> r.authenticate("42", "app", "s").delivery_mode, r.authenticate("43", "app", "s")
    ('poll', None)
    """

    def __init__(self, clients: Iterable[Mapping[str, Any]]) -> None:
        self._by_id: dict[tuple[str, str], Client] = {}
        self._by_number: dict[tuple[str, int], Client] = {}
        for index, entry in enumerate(clients):
            try:
                client = _client(entry)
            except ConfigurationError as exc:
                raise ConfigurationError(f"client #{index + 1}: {exc}") from None
            if (client.service, client.client_id) in self._by_id:
                raise ConfigurationError(f"client #{index + 1}: {client.client_id!r} is configured twice")
            if (client.service, client.number) in self._by_number:
                raise ConfigurationError(f"client #{index + 1}: {client.client_id!r} has another client's number")
            self._by_id[(client.service, client.client_id)] = client
            self._by_number[(client.service, client.number)] = client

    def find(self, service_id: str, client_id: str) -> Client | None:
        """The client of ``service_id`` named by its ``client_id`` (or its number, in digits)."""
        client = self._by_id.get((service_id, client_id))
        if client is None and _DIGITS.fullmatch(client_id):
            client = self._by_number.get((service_id, int(client_id)))
        return client

    def authenticate(self, service_id: str, client_id: str, secret: str) -> Client | None:
        """The client when ``secret`` is its secret, else None (an unknown client included)."""
        client = self._by_id.get((service_id, client_id)) or self.find(service_id, client_id)
        if client is None:
            # As long as a known client's check: the answer's time tells nothing.
            hmac.compare_digest(hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest(), bytes(32))
            return None
        return client if client.check_secret(secret) else None

    @property
    def services(self) -> frozenset[str]:
        return frozenset(service for service, _ in self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


def parse_clients(raw: object, name: str) -> tuple[Mapping[str, Any], ...]:
    """``CIBA_CLIENTS``'s value (JSON text or a list) as the list of clients, or ConfigurationError."""
    return parse_grants(raw, name)


def _validate_clients(data: bytes, named: str) -> tuple[tuple[Mapping[str, Any], ...], Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{named} is not UTF-8 text (offset {exc.start})") from None
    clients = parse_clients(text, named)
    try:
        return clients, ClientRegistry(clients)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{named}: {exc}") from None


def read_clients(path: str) -> Snapshot:
    """Read and validate ``CIBA_CLIENTS_FILE``, or raise ConfigurationError naming it."""
    return read_snapshot(path, "CIBA_CLIENTS_FILE", _validate_clients)


class ReloadingClients(ReloadingVerifier):
    """The clients of ``CIBA_CLIENTS_FILE``, reloaded as the grants file is
    (:class:`~ciba_middleware.grants.ReloadingVerifier`): a new file is validated whole, and
    a bad one never replaces the clients in force."""

    _validate = staticmethod(_validate_clients)
    _without = "the CIBA family answers 500 until the file is fixed"
    _kept = "the clients loaded before stay in force"

    def __init__(self, path: str, snapshot: Snapshot | None, *, interval: float, refused: str | None = None) -> None:
        super().__init__(path, snapshot, interval=interval, name="CIBA_CLIENTS_FILE", refused=refused)

    def registry(self) -> ClientRegistry:
        """The clients in force, after a look at the file when one is due."""
        self.look_if_due()
        registry: ClientRegistry = self._current()  # type: ignore[assignment]
        return registry
