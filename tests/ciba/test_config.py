"""The family's CIBA_* variables: each bad value is one line naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SERVICE

from ciba_middleware import sha256_hex
from ciba_middleware.config import Settings
from ciba_middleware.errors import ConfigurationError
from ciba_middleware.response import not_found_app

from ._family import CLIENTS, family_env, signing_key


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return family_env(tmp_path, signing_key(tmp_path)[0])


def refused(env: dict[str, str], **changes: str | None) -> str:
    values = {**env, **{k: v for k, v in changes.items() if v is not None}}
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_mapping(values).build_middleware(not_found_app, announce=False).store.close()
    message = str(raised.value)
    assert "\n" not in message
    return message


def client(**changes: object) -> str:
    entry = {"client_id": "c", "service": SERVICE, "client_secret_sha256": sha256_hex("s"), **changes}
    return json.dumps([{k: v for k, v in entry.items() if v is not None}])


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        pytest.param({"CIBA_CLIENTS": "[1"}, "CIBA_CLIENTS is not valid JSON", id="json"),
        pytest.param({"CIBA_CLIENTS": "[]"}, "CIBA_CLIENTS must be a non-empty JSON list", id="empty"),
        pytest.param({"CIBA_CLIENTS": client(delivery_mode="fast")}, "CIBA_CLIENTS: client #1:", id="mode"),
        pytest.param({"CIBA_CLIENTS": client(delivery_mode="ping")}, "notification_endpoint", id="endpoint"),
        pytest.param(
            {"CIBA_CLIENTS": client(delivery_mode="ping", notification_endpoint="http://x.example/cb")},
            "an https URL",
            id="http-endpoint",
        ),
        pytest.param({"CIBA_CLIENTS": client(client_secret_sha256=None)}, "exactly one of", id="no-secret"),
        pytest.param({"CIBA_CLIENTS": client(client_secret_sha256="zz")}, "64 hexadecimal digits", id="bad-digest"),
        pytest.param({"CIBA_CLIENTS": client(colour="red")}, "unknown key 'colour'", id="unknown-key"),
        pytest.param({"CIBA_CLIENTS": client(user_code_required="yes")}, "user_code_required", id="user-code"),
        pytest.param({"CIBA_CLIENTS": client(scopes="openid")}, "'scopes' must be a list", id="scopes-not-a-list"),
        pytest.param({"CIBA_CLIENTS": client(scopes=["profile"])}, "including openid", id="scopes-without-openid"),
        pytest.param({"CIBA_CLIENTS": client(scopes=["openid", "a b"])}, "'scopes' must be", id="scope-with-space"),
        pytest.param({"CIBA_CLIENTS": json.dumps([CLIENTS[0], CLIENTS[0]])}, "is configured twice", id="duplicate"),
        pytest.param({"CIBA_CLIENTS_FILE": "/nonexistent"}, "set CIBA_CLIENTS or CIBA_CLIENTS_FILE", id="both"),
        pytest.param(
            {"CIBA_CLIENTS": None, "CIBA_CLIENTS_FILE": "/nonexistent/clients.json"},
            "CIBA_CLIENTS_FILE: cannot read '/nonexistent/clients.json'",
            id="file-missing",
        ),
        pytest.param({"CIBA_ISSUER": None}, "CIBA_ISSUER is not set", id="no-issuer"),
        pytest.param({"CIBA_ISSUER": "op.example"}, "CIBA_ISSUER must be an https URL", id="issuer"),
        pytest.param({"CIBA_ISSUER": "https://op.example?x=1"}, "CIBA_ISSUER must be", id="issuer-query"),
        pytest.param({"CIBA_SIGNING_KEY_FILE": "/nonexistent"}, "CIBA_SIGNING_KEY_FILE: cannot read", id="key"),
        pytest.param({"CIBA_AUTH_REQ_ID_LIFETIME": "0"}, "CIBA_AUTH_REQ_ID_LIFETIME must be", id="lifetime"),
        pytest.param({"CIBA_POLLING_INTERVAL": "1.5"}, "CIBA_POLLING_INTERVAL must be", id="interval"),
        pytest.param({"CIBA_ACCESS_TOKEN_LIFETIME": "x"}, "CIBA_ACCESS_TOKEN_LIFETIME must be", id="at-lifetime"),
        pytest.param({"CIBA_JWKS_URI": "ftp://x"}, "CIBA_JWKS_URI must be", id="jwks-uri"),
        pytest.param({"CIBA_TOKEN_ENDPOINT": "x"}, "CIBA_TOKEN_ENDPOINT must be", id="token-endpoint"),
        pytest.param(
            {"CIBA_BACKCHANNEL_AUTHENTICATION_ENDPOINT": "x"},
            "CIBA_BACKCHANNEL_AUTHENTICATION_ENDPOINT must be",
            id="bc-endpoint",
        ),
        pytest.param(
            {"CIBA_CLIENTS": None, "CIBA_SIGNING_KEY_FILE": None}, "CIBA_ISSUER is set but neither", id="no-clients"
        ),
        pytest.param({"CIBA_STORE_URL": "redis://127.0.0.1:1/0?x=1"}, "CIBA_STORE_URL", id="store"),
    ],
)
def test_bad_values(env: dict[str, str], changes: dict[str, str | None], named: str) -> None:
    assert named in refused(env, **changes)


@pytest.mark.parametrize("kind", ["bad-json", "public", "curve", "alg"])
def test_bad_signing_keys(env: dict[str, str], tmp_path: Path, kind: str) -> None:
    from joserfc.jwk import ECKey

    path = tmp_path / "bad.jwk"
    if kind == "bad-json":
        path.write_text("{")
    elif kind == "public":
        path.write_text(json.dumps(ECKey.generate_key("P-256").as_dict(private=False)))
    elif kind == "curve":
        path.write_text(json.dumps(ECKey.generate_key("P-384").as_dict(private=True)))
    else:
        path.write_text(json.dumps({**ECKey.generate_key("P-256").as_dict(private=True), "alg": "RS256"}))
    assert refused(env, CIBA_SIGNING_KEY_FILE=str(path)).startswith("CIBA_SIGNING_KEY_FILE")


@pytest.mark.parametrize(("kind", "alg"), [("EC", "ES256"), ("RSA", "RS256"), ("OKP", "EdDSA")])
def test_each_kind_of_key(env: dict[str, str], tmp_path: Path, kind: str, alg: str) -> None:
    path, _ = signing_key(tmp_path, kind)
    settings = Settings.from_mapping({**env, "CIBA_SIGNING_KEY_FILE": str(path)})
    assert settings.family is not None
    key = settings.family.build_key()
    assert key.alg == alg
    assert key.verify(key.sign({"sub": "a"})) == {"sub": "a"}


def test_generated_key_warns(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    env.pop("CIBA_SIGNING_KEY_FILE")
    middleware = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    middleware.store.close()
    assert "CIBA_SIGNING_KEY_FILE is not set" in caplog.text


def test_memory_and_sqlite_stores_keep_records(env: dict[str, str]) -> None:
    for url in ("memory://", env["CIBA_STORE_URL"]):
        middleware = Settings.from_mapping({**env, "CIBA_STORE_URL": url}).build_middleware(
            not_found_app, announce=False
        )
        assert middleware.api.family is not None
        middleware.store.close()


def test_clients_file_is_reloaded_and_a_bad_edit_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    from werkzeug.test import Client

    from .test_routes import Family

    path = tmp_path / "clients.json"
    path.write_text(json.dumps(CLIENTS[:1]))
    values = {**env, "CIBA_CLIENTS_FILE": str(path), "CIBA_TOKENS_RELOAD_INTERVAL": "0"}
    values.pop("CIBA_CLIENTS")
    middleware = Settings.from_mapping(values).build_middleware(not_found_app, announce=False)
    try:
        family = Family(Client(middleware))
        assert family.authenticate()["action"] == "USER_IDENTIFICATION"
        registry = middleware.api.family.clients  # type: ignore[union-attr]
        assert len(registry) == 1
        path.write_text("[{")
        reloader = middleware.api.family._clients.__self__  # type: ignore[union-attr]
        assert not reloader.reload()
        assert family.authenticate()["action"] == "USER_IDENTIFICATION"  # the good clients stay
        path.write_text(json.dumps(CLIENTS[3:4]))
        assert reloader.reload()
        _status, body = family.post(
            "backchannel/authentication",
            {"parameters": "scope=openid&login_hint=a", "clientId": "app", "clientSecret": "client-secret-app"},
        )
        assert body["action"] == "UNAUTHORIZED"  # "app" was removed
    finally:
        middleware.store.close()


def test_the_start_up_line_names_the_family(env: dict[str, str]) -> None:
    settings = Settings.from_mapping(env)
    line = settings.describe(frozenset({SERVICE}), None)
    assert line.endswith(
        "; CIBA family at /api[/{serviceId}]/backchannel/authentication[/issue|/complete], /auth/token, "
        f"/auth/introspection, /service/jwks/get, /service/configuration ({len(CLIENTS)} clients from CIBA_CLIENTS)"
    )
