"""The demo's application factory, :func:`create_app`, and its settings.

Configuration comes from the package's ``CIBA_*`` environment variables and the demo's
``CIBA_DEMO_*`` ones, then ``FLASK_CIBA_*`` ones
(``app.config.from_prefixed_env()``), then the ``config`` argument. Nothing is required:

- without ``CIBA_TOKENS`` / ``CIBA_TOKENS_FILE`` a development token for service
  ``715948317`` is generated for this process (``python -m example_app`` prints it);
- the tickets go to the embedded SQLite default, ``sqlite:///ciba-tickets.sqlite3``.

The CIBA family serves the demo's clients: ``CIBA_CLIENTS`` (or ``CIBA_CLIENTS_FILE``) when set,
else the demo's own (``demo-client``, poll; ``web-client``, not registered for CIBA). The
demo also sets, when they are unset, ``CIBA_ISSUER`` (this server's URL under ``python -m
example_app``, else ``http://127.0.0.1:8080``) and ``CIBA_AUTH_REQ_ID_LIFETIME`` (120 s). The
ID tokens are signed by ``CIBA_SIGNING_KEY_FILE`` (generated per process when unset);
``CIBA_POLLING_INTERVAL`` is the polling interval.

The demo's own settings:

``CIBA_DEMO_FAIL_VIA``
    ``in_process`` (default): rejected requests are failed in this process;
    ``http``: through the fail API over HTTP with the ``authlete`` client (:mod:`.remote`).
``CIBA_DEMO_API_BASE_URL``
    For ``http``: the fail API's base URL, i.e. this server's own URL. ``python -m
    example_app`` sets it from ``--host`` and ``--port``.
``CIBA_DEMO_ACCESS_TOKEN``
    For ``http``: the Service Access Token to call with; the generated one by default.
``CIBA_DEMO_HINT_KEY``
    The HMAC key signing login_hint_tokens (:mod:`.hints`); random per process by default,
    so set it when several processes serve the demo.
``CIBA_DEMO_DATABASE``
    The SQLite file of the devices' inbox (:mod:`.pending`), ``ciba-demo.sqlite3``.
``CIBA_DEMO_AUTO_APPROVE``
    Seconds after which every request is approved by its user, unattended (for test suites),
    except one whose binding message is ``deny``, which is denied; unset: users decide on the
    device page.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from ciba_middleware import ConfigurationError, sha256_hex
from ciba_middleware.ciba.delivery import Notifier
from ciba_middleware.ciba.endpoints import CibaEndpoints, CompletionRefused
from ciba_middleware.config import VARIABLES
from ciba_middleware.flask import CibaMiddleware
from ciba_middleware.stores import ticket_hash
from ciba_middleware.stores.base import number_option

from . import device, hints, oidc
from .directory import CLIENTS, RESOURCES, SCOPES, USERS
from .hooks import AutoApprove, DemoHooks
from .pending import PendingRequests
from .remote import RemoteFail

__all__ = ["DEMO_SERVICE_ID", "DemoState", "create_app"]

log = logging.getLogger(__name__)

#: The service the generated development token covers.
DEMO_SERVICE_ID = "715948317"
EXTENSION_KEY = "example_app"
_VIA = ("in_process", "http")


#: The extension, initialised on each app by :func:`create_app`.
ciba = CibaMiddleware()
#: Seconds an auth_req_id lives by default in the demo (``CIBA_AUTH_REQ_ID_LIFETIME``).
DEFAULT_EXPIRES_IN = 120


@dataclass(frozen=True)
class DemoState:
    """What the demo keeps in ``app.extensions["example_app"]``."""

    fail_via: str
    hint_key: bytes
    #: The development token generated because no grants were configured, else None.
    generated_token: str | None
    api_base_url: str | None
    #: The devices' inbox.
    pending: PendingRequests
    #: The backchannel authentication and token endpoints, and ``complete``.
    endpoints: CibaEndpoints
    #: Whether the clients are the demo's own (no CIBA_CLIENTS / CIBA_CLIENTS_FILE).
    demo_clients: bool


def demo_clients(service: str) -> str:
    """The demo's clients as ``CIBA_CLIENTS`` (JSON), for the family."""
    return json.dumps(
        [
            {
                "client_id": c.client_id,
                "service": service,
                "client_secret_sha256": sha256_hex(c.client_secret),
                "scopes": sorted(SCOPES),
            }
            for c in CLIENTS.values()
        ]
    )


def create_app(config: Mapping[str, Any] | None = None, *, own_url: str | None = None) -> Flask:
    """Build the demo app. ``own_url`` is this server's URL, the default fail API base URL.

    Raises :class:`ciba_middleware.ConfigurationError` for a bad setting.
    """
    app = Flask("example_app")
    # The package's variables and the demo's own, as from_env reads the environment: other
    # CIBA_* names there (a test suite's, say) are not the demo's business.
    app.config.update({k: v for k, v in os.environ.items() if k in VARIABLES or k.startswith("CIBA_DEMO_")})
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    # The demo's own settings leave app.config: the extension takes only the package's CIBA_*
    # variables there, and refuses any other (docs/flask.md). CIBA_NOTIFICATION_INSECURE_HOSTS
    # is the toolkit's, read from the environment (docs/configuration.md).
    demo = {
        name: app.config.pop(name)
        for name in list(app.config)
        if name.startswith("CIBA_DEMO_") or name == "CIBA_NOTIFICATION_INSECURE_HOSTS"
    }

    generated = None
    if app.config.get("CIBA_TOKENS") in (None, "") and app.config.get("CIBA_TOKENS_FILE") in (None, ""):
        generated = secrets.token_urlsafe(32)
        service = str(app.config.get("CIBA_SERVICE_ID") or DEMO_SERVICE_ID)
        app.config["CIBA_SERVICE_ID"] = service
        app.config["CIBA_TOKENS"] = [{"service": service, "token_sha256": sha256_hex(generated)}]
        log.warning("no CIBA_TOKENS: generated a development token for service %s, for this process only", service)
    own_clients = app.config.get("CIBA_CLIENTS") in (None, "") and app.config.get("CIBA_CLIENTS_FILE") in (None, "")
    if own_clients:
        app.config["CIBA_CLIENTS"] = demo_clients(str(app.config.get("CIBA_SERVICE_ID") or DEMO_SERVICE_ID))
    if app.config.get("CIBA_ISSUER") in (None, ""):
        app.config["CIBA_ISSUER"] = (own_url or "http://127.0.0.1:8080").rstrip("/")
    if app.config.get("CIBA_AUTH_REQ_ID_LIFETIME") in (None, ""):
        app.config["CIBA_AUTH_REQ_ID_LIFETIME"] = str(DEFAULT_EXPIRES_IN)

    via = str(demo.get("CIBA_DEMO_FAIL_VIA") or "in_process").strip().lower()
    if via not in _VIA:
        raise ConfigurationError(f"CIBA_DEMO_FAIL_VIA must be in_process or http, not {via!r}")
    hint_key_setting = demo.get("CIBA_DEMO_HINT_KEY")
    hint_key = str(hint_key_setting).encode() if hint_key_setting else secrets.token_bytes(32)
    api_base_url = str(demo.get("CIBA_DEMO_API_BASE_URL") or own_url or "").rstrip("/") or None
    token = demo.get("CIBA_DEMO_ACCESS_TOKEN") or generated
    if via == "http" and not api_base_url:
        raise ConfigurationError(
            "CIBA_DEMO_FAIL_VIA=http needs CIBA_DEMO_API_BASE_URL, this server's own URL (http://127.0.0.1:8080)"
        )
    if via == "http" and not token:
        raise ConfigurationError(
            "CIBA_DEMO_FAIL_VIA=http needs CIBA_DEMO_ACCESS_TOKEN, a token CIBA_TOKENS grants for the service"
        )
    auto = demo.get("CIBA_DEMO_AUTO_APPROVE")
    auto_delay = (
        None
        if auto in (None, "")
        else number_option("example_app", "CIBA_DEMO_AUTO_APPROVE", auto, minimum=0, maximum=60)
    )
    inbox = _pending(demo.get("CIBA_DEMO_DATABASE"))

    ciba.init_app(app)
    ciba_state = CibaMiddleware.state(app)
    api = ciba_state.middleware.api
    if api.family is None:  # CIBA_CLIENTS is set above, so only a bad value reaches here
        raise ConfigurationError("the demo needs the CIBA family: set CIBA_CLIENTS")
    fail = None
    if via == "http":
        remote = RemoteFail(str(api_base_url) + ciba_state.settings.prefix, ciba_state.service_id, str(token))
        fail = remote.fail
    served = CibaEndpoints(
        api,
        ciba_state.service_id,
        DemoHooks(hint_key, inbox),
        notifier=Notifier.for_api(api),
        server_error_status=ciba_state.server_error_status,
        realm="example_app",
        fail=fail,
    )
    if auto_delay is not None:
        served.hooks = AutoApprove(hint_key, inbox, _approver(served), float(auto_delay))
    app.extensions[EXTENSION_KEY] = DemoState(
        fail_via=via,
        hint_key=hint_key,
        generated_token=generated,
        api_base_url=api_base_url,
        pending=inbox,
        endpoints=served,
        demo_clients=own_clients,
    )
    oidc.mount(app, served)
    app.register_blueprint(oidc.bp)
    app.register_blueprint(device.bp)
    app.add_url_rule("/", "index", index)
    return app


def _approver(served: CibaEndpoints) -> Any:
    def approve(ticket: str, subject: str, approve: bool) -> None:
        try:
            if approve:
                served.complete(ticket, "AUTHORIZED", subject=subject)
            else:
                served.complete(ticket, "ACCESS_DENIED", error_description="The user denied the request.")
        except CompletionRefused as exc:
            log.info("automated approval of %s refused: %s", ticket_hash(ticket), exc)
        except Exception:
            log.exception("automated approval of %s failed", ticket_hash(ticket))

    return approve


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
    family = state.endpoints.api.family
    assert family is not None
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
            ]
            if state.demo_clients
            else "from CIBA_CLIENTS",
            "users": [{"login_hint": u.subject, "note": u.note} for u in USERS.values()],
            "scopes": sorted(SCOPES),
            "resources": sorted(RESOURCES),
            "sample_hints": {
                "login_hint_token for alice (valid 10 minutes)": hints.mint({"sub": "alice", "exp": now + 600}, key),
                "login_hint_token for alice (expired)": hints.mint({"sub": "alice", "exp": now - 60}, key),
                "id_token_hint for alice": family.key.sign(
                    {"iss": family.options.issuer, "sub": "alice", "aud": "demo-client", "iat": now, "exp": now + 3600}
                ),
            },
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response
