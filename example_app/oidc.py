"""The demo's OpenID Provider routes, on the CIBA toolkit.

- ``POST /backchannel/authentication`` and ``POST /token``: :class:`~ciba_middleware.ciba.endpoints.CibaEndpoints`,
  mounted with :func:`~ciba_middleware.ciba.mount.flask_view`; the demo's part is its hooks
  (:mod:`.hooks`);
- ``GET /.well-known/openid-configuration``: the server's metadata with CIBA's (CIBA Core 4):
  poll, ping and push;
- ``GET /jwks``: the public key that signs ID tokens (the family's, ``CIBA_SIGNING_KEY_FILE``).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from ciba_middleware.ciba import GRANT_TYPE
from ciba_middleware.ciba.endpoints import CibaEndpoints
from ciba_middleware.ciba.mount import flask_view

from .directory import SCOPES

__all__ = ["bp", "endpoints", "mount"]

bp = Blueprint("oidc", __name__)

JSON = "application/json;charset=UTF-8"


def endpoints(app: Flask | None = None) -> CibaEndpoints:
    """The app's endpoints (built by :func:`example_app.create_app`)."""
    found: CibaEndpoints = (app or current_app).extensions["example_app"].endpoints
    return found


def mount(app: Flask, served: CibaEndpoints) -> None:
    """The two endpoints, one line each."""
    app.add_url_rule(
        "/backchannel/authentication",
        view_func=flask_view(served.backchannel_authentication, "backchannel_authentication"),
        methods=["POST"],
    )
    app.add_url_rule("/token", view_func=flask_view(served.token, "token"), methods=["POST"])


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=200, content_type=JSON)


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """OpenID Provider metadata (OIDC Discovery 3) with the CIBA parameters of CIBA Core 4."""
    family = endpoints().api.family
    assert family is not None
    base = request.host_url.rstrip("/")
    return _json(
        {
            "issuer": family.options.issuer,
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "backchannel_authentication_endpoint": f"{base}/backchannel/authentication",
            "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
            "backchannel_user_code_parameter_supported": True,
            "grant_types_supported": [GRANT_TYPE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            # No authorization endpoint: CIBA only, so no response type either.
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [family.key.alg],
            "scopes_supported": sorted(SCOPES),
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "at_hash"],
            "x_demo_authentication_device": f"{base}/device",
        }
    )


@bp.get("/jwks")
def jwks() -> Response:
    family = endpoints().api.family
    assert family is not None
    return _json(family.key.jwks())
