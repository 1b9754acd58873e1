"""StaticTokenVerifier and the TokenVerifier protocol."""

from __future__ import annotations

from typing import Any

import pytest
import webtest

from ciba_middleware import (
    BackchannelFailMiddleware,
    Principal,
    PrincipalKind,
    StaticTokenVerifier,
    TokenVerifier,
    sha256_hex,
)
from ciba_middleware.stores import store_from_url


def test_keeps_only_digests() -> None:
    verifier = StaticTokenVerifier(
        [{"service": "1", "token": "clear-token"}, {"service": "1", "api_secret": "clear-secret"}]
    )
    held = repr(vars(verifier)) if hasattr(verifier, "__dict__") else ""
    assert "clear-token" not in held
    assert "clear-secret" not in held
    assert verifier.verify_bearer("clear-token") == Principal(PrincipalKind.SERVICE, "1", frozenset({"1"}))


def test_principals() -> None:
    verifier = StaticTokenVerifier(
        [
            {"service": "1", "token_sha256": sha256_hex("a")},
            {"organization": "acme", "services": ["1", "2"], "token_sha256": sha256_hex("b")},
            {"service": "3", "api_secret_sha256": sha256_hex("old")},
            {"service": "3", "api_secret_sha256": sha256_hex("new").upper()},
        ]
    )
    org = verifier.verify_bearer("b")
    assert org == Principal(PrincipalKind.ORGANIZATION, "acme", frozenset({"1", "2"}))
    assert org.covers("2")
    assert not org.covers("3")
    # Both secrets of a rotation work, and only for their own key.
    assert verifier.verify_api_key("3", "old") == Principal(PrincipalKind.API_KEY, "3", frozenset({"3"}))
    assert verifier.verify_api_key("3", "new") is not None
    assert verifier.verify_api_key("1", "old") is None
    assert verifier.verify_api_key("3", "") is None
    assert verifier.verify_bearer("") is None
    assert verifier.services == frozenset({"1", "2", "3"})
    assert len(verifier) == 4


def test_no_grants_warns(caplog: pytest.LogCaptureFixture) -> None:
    StaticTokenVerifier([])
    assert "no grants configured" in caplog.text


def test_a_verifier_of_your_own() -> None:
    """Anything with the protocol's two methods plugs in: here, tokens from a database."""

    class Database:
        def verify_bearer(self, token: str) -> Principal | None:
            if token == "from-db":
                return Principal(PrincipalKind.ORGANIZATION, "db-org", frozenset({"7", "8"}))
            return None

        def verify_api_key(self, api_key: str, api_secret: str) -> Principal | None:
            return None

    assert isinstance(Database(), TokenVerifier)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    client = webtest.TestApp(BackchannelFailMiddleware(app, store=store_from_url("memory://"), verifier=Database()))
    ok = client.post_json(
        "/api/8/backchannel/authentication/fail",
        {"reason": "ACCESS_DENIED"},
        headers={"Authorization": "Bearer from-db"},
    )
    assert ok.json["action"] == "FORBIDDEN"
    denied = client.post_json(
        "/api/9/backchannel/authentication/fail",
        {},
        headers={"Authorization": "Bearer from-db"},
        expect_errors=True,
    )
    assert denied.status_int == 403
