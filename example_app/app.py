"""The demo's application factory, :func:`create_app`, and its settings.

Configuration comes from ``CIBA_*`` environment variables, then ``FLASK_CIBA_*`` ones
(``app.config.from_prefixed_env()``), then the ``config`` argument. Nothing is required:

- without ``CIBA_TOKENS`` / ``CIBA_TOKENS_FILE`` a development token for service
  ``715948317`` is generated for this process (``python -m example_app`` prints it);
- the tickets go to the embedded SQLite default, ``sqlite:///ciba-tickets.sqlite3``.

The demo's own settings:

``CIBA_DEMO_FAIL_VIA``
    ``in_process`` (default): views fail requests through the extension, in this process;
    ``http``: through the fail API over HTTP with the ``authlete`` client (:mod:`.remote`).
``CIBA_DEMO_API_BASE_URL``
    For ``http``: the fail API's base URL, i.e. this server's own URL. ``python -m
    example_app`` sets it from ``--host`` and ``--port``.
``CIBA_DEMO_ACCESS_TOKEN``
    For ``http``: the Service Access Token to call with; the generated one by default.
``CIBA_DEMO_HINT_KEY``
    The HMAC key signing login_hint_tokens and id_token_hints (:mod:`.hints`); random per
    process by default, so set it when several processes serve the demo.
``CIBA_DEMO_SIGNING_KEY``
    The private EC P-256 JWK (JSON) signing ID tokens (:mod:`.oidc`); new per process by
    default, so set it too when several processes serve the demo.
``CIBA_DEMO_DATABASE``
    The SQLite file of the pending requests (:mod:`.pending`), ``ciba-demo.sqlite3``.
``CIBA_DEMO_ISSUER``
    The issuer (``iss``, discovery); ``python -m example_app`` sets it from ``--host`` and
    ``--port``; otherwise the URL each request came to.
``CIBA_DEMO_INTERVAL``
    Seconds a client waits between polls of the token endpoint, 1 to 60 (default 5).
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from joserfc.jwk import ECKey

from ciba_middleware import ConfigurationError, sha256_hex
from ciba_middleware.flask import BackchannelFail, CibaMiddleware
from ciba_middleware.stores.base import number_option

from . import backchannel, device, hints, oidc
from .backchannel import INTERVAL, ciba
from .directory import CLIENTS, RESOURCES, SCOPES, USERS
from .pending import PendingRequests
from .remote import RemoteFail

__all__ = ["DEMO_SERVICE_ID", "DemoState", "create_app"]

log = logging.getLogger(__name__)

#: The service the generated development token covers.
DEMO_SERVICE_ID = "715948317"
EXTENSION_KEY = "example_app"
_VIA = ("in_process", "http")


@dataclass(frozen=True)
class DemoState:
    """What the demo keeps in ``app.extensions["example_app"]``."""

    fail_via: str
    hint_key: bytes
    #: The development token generated because no grants were configured, else None.
    generated_token: str | None
    api_base_url: str | None
    #: The pending requests, after their auth_req_id.
    pending: PendingRequests
    #: Signs ID tokens; its public half is at /jwks.
    signing_key: ECKey
    #: The configured issuer, or None to take the request's URL.
    issuer: str | None
    #: Seconds between polls of the token endpoint.
    interval: int


def create_app(config: Mapping[str, Any] | None = None, *, own_url: str | None = None) -> Flask:
    """Build the demo app. ``own_url`` is this server's URL, the default fail API base URL.

    Raises :class:`ciba_middleware.ConfigurationError` for a bad setting.
    """
    app = Flask("example_app")
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("CIBA_")})
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)

    generated = None
    if app.config.get("CIBA_TOKENS") in (None, "") and app.config.get("CIBA_TOKENS_FILE") in (None, ""):
        generated = secrets.token_urlsafe(32)
        service = str(app.config.get("CIBA_SERVICE_ID") or DEMO_SERVICE_ID)
        app.config["CIBA_SERVICE_ID"] = service
        app.config["CIBA_TOKENS"] = [{"service": service, "token_sha256": sha256_hex(generated)}]
        log.warning("no CIBA_TOKENS: generated a development token for service %s, for this process only", service)

    via = str(app.config.get("CIBA_DEMO_FAIL_VIA") or "in_process").strip().lower()
    if via not in _VIA:
        raise ConfigurationError(f"CIBA_DEMO_FAIL_VIA must be in_process or http, not {via!r}")
    hint_key = app.config.get("CIBA_DEMO_HINT_KEY")
    state = DemoState(
        fail_via=via,
        hint_key=str(hint_key).encode() if hint_key else secrets.token_bytes(32),
        generated_token=generated,
        api_base_url=(str(app.config.get("CIBA_DEMO_API_BASE_URL") or own_url or "").rstrip("/") or None),
        pending=_pending(app.config.get("CIBA_DEMO_DATABASE")),
        signing_key=oidc.load_signing_key(app.config.get("CIBA_DEMO_SIGNING_KEY")),
        issuer=(str(app.config.get("CIBA_DEMO_ISSUER") or own_url or "").rstrip("/") or None),
        interval=number_option(
            "example_app",
            "CIBA_DEMO_INTERVAL",
            app.config.get("CIBA_DEMO_INTERVAL") or INTERVAL,
            integer=True,
            minimum=1,
            maximum=60,
        ),
    )

    token = app.config.get("CIBA_DEMO_ACCESS_TOKEN") or generated
    if via == "http" and not state.api_base_url:
        raise ConfigurationError(
            "CIBA_DEMO_FAIL_VIA=http needs CIBA_DEMO_API_BASE_URL, this server's own URL (http://127.0.0.1:8080)"
        )
    if via == "http" and not token:
        raise ConfigurationError(
            "CIBA_DEMO_FAIL_VIA=http needs CIBA_DEMO_ACCESS_TOKEN, a token CIBA_TOKENS grants for the service"
        )

    ciba.init_app(app)
    app.extensions[EXTENSION_KEY] = state
    app.register_blueprint(backchannel.bp)
    app.register_blueprint(oidc.bp)
    app.register_blueprint(device.bp)
    app.add_url_rule("/", "index", index)

    if via == "http":
        ciba_state = CibaMiddleware.state(app)
        # Replaces the extension's in-process handler: same exception, another way to fail.
        app.register_error_handler(
            BackchannelFail,
            RemoteFail(str(state.api_base_url) + ciba_state.settings.prefix, ciba_state.service_id, str(token)),
        )
    return app


def _pending(path: object) -> PendingRequests:
    try:
        return PendingRequests(str(path or "ciba-demo.sqlite3"))
    except sqlite3.Error as exc:
        raise ConfigurationError(f"CIBA_DEMO_DATABASE: cannot open the SQLite file {path!r}: {exc}") from None


def index() -> Response:
    """What there is to try: endpoints, clients, users, and fresh sample hint tokens."""
    state: DemoState = current_app.extensions[EXTENSION_KEY]
    ciba_state = CibaMiddleware.state()
    base = request.host_url.rstrip("/")
    fail_api = f"{base}{ciba_state.settings.prefix}/api/{ciba_state.service_id}/backchannel/authentication/fail"
    key = state.hint_key
    now = int(time.time())
    response = jsonify(
        {
            "discovery": f"{base}/.well-known/openid-configuration",
            "backchannel_authentication_endpoint": f"{base}/backchannel/authentication",
            "token_endpoint": f"{base}/token",
            "authentication_device": f"{base}/device",
            "fail_api": fail_api,
            "fail_via": state.fail_via,
            "service_id": ciba_state.service_id,
            "clients": [
                {"client_id": c.client_id, "client_secret": c.client_secret, "ciba": c.ciba, "note": c.note}
                for c in CLIENTS.values()
            ],
            "users": [{"login_hint": u.subject, "note": u.note} for u in USERS.values()],
            "scopes": sorted(SCOPES),
            "resources": sorted(RESOURCES),
            "sample_hints": {
                "login_hint_token for alice (valid 10 minutes)": hints.mint({"sub": "alice", "exp": now + 600}, key),
                "login_hint_token for alice (expired)": hints.mint({"sub": "alice", "exp": now - 60}, key),
                "id_token_hint for alice": hints.mint(
                    {"iss": base, "sub": "alice", "aud": "demo-client", "iat": now, "exp": now + 3600}, key
                ),
            },
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response
