"""What the CIBA family's tests share: clients, a signing key, the environment of a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import GRANTS, OTHER_SERVICE, SERVICE

from ciba_middleware import sha256_hex

ISSUER = "https://op.example"
SECRET = "client-secret-app"
POLL = "app"  # a string client_id: clientIdAlias beside a number
PING = "5001"  # a numeric client_id: clientId itself
PUSH = "pusher"
OTHER = "other-app"  # another poll client of the same service
CODED = "coded"  # a poll client that requires a user code, and may request openid and profile only
NOTIFY = "https://client.example/ciba/notify"
GRANT = "urn:openid:params:grant-type:ciba"

CLIENTS: list[dict[str, Any]] = [
    {"client_id": POLL, "service": SERVICE, "client_secret_sha256": sha256_hex(SECRET), "client_name": "Poller"},
    {
        "client_id": PING,
        "service": SERVICE,
        "client_secret_sha256": sha256_hex(SECRET),
        "delivery_mode": "ping",
        "notification_endpoint": NOTIFY,
    },
    {
        "client_id": PUSH,
        "service": SERVICE,
        "client_secret_sha256": sha256_hex(SECRET),
        "delivery_mode": "push",
        "notification_endpoint": NOTIFY,
    },
    {"client_id": OTHER, "service": SERVICE, "client_secret_sha256": sha256_hex(SECRET)},
    {
        "client_id": CODED,
        "service": SERVICE,
        "client_secret_sha256": sha256_hex(SECRET),
        "user_code_required": True,
        "scopes": ["openid", "profile"],
    },
    # The same client_id in another service: another client.
    {"client_id": POLL, "service": OTHER_SERVICE, "client_secret_sha256": sha256_hex("other-service-secret")},
]


def signing_key(tmp_path: Path, kind: str = "EC") -> tuple[Path, dict[str, Any]]:
    """A private JWK written to a file; returns the path and the JWK."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    if kind == "EC":
        jwk = ECKey.generate_key("P-256").as_dict(private=True)
    elif kind == "RSA":
        jwk = RSAKey.generate_key(2048).as_dict(private=True)
    else:
        jwk = OKPKey.generate_key("Ed25519").as_dict(private=True)
    path = tmp_path / f"signing-{kind}.jwk"
    path.write_text(json.dumps(jwk))
    return path, jwk


def family_env(tmp_path: Path, key_file: Path, **overrides: str) -> dict[str, str]:
    """CIBA_* variables for a server serving the family with the suite's grants and clients."""
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path / 'ciba.sqlite3'}",
        "CIBA_TOKENS": json.dumps(GRANTS),
        "CIBA_CLIENTS": json.dumps(CLIENTS),
        "CIBA_ISSUER": ISSUER,
        "CIBA_SIGNING_KEY_FILE": str(key_file),
    }
    env.update(overrides)
    return env


def form(**params: str) -> str:
    """A client's form body, as the server passes it in ``parameters``."""
    from urllib.parse import urlencode

    return urlencode(params)
