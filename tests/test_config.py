"""Configuration from the environment: ``from_env`` and its errors, each naming the variable."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import webtest
from conftest import GRANTS, SERVICE, SERVICE_TOKEN, ciba_env

from ciba_middleware import ConfigurationError, Settings, from_env, not_found_app, sha256_hex
from ciba_middleware.stores.memory import MemoryTicketStore
from ciba_middleware.stores.sqlite import SQLiteTicketStore

TOKENS = json.dumps(GRANTS)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    middleware = from_env(environ={"CIBA_TOKENS": TOKENS})
    assert isinstance(middleware.store, SQLiteTicketStore)
    assert Path(middleware.store.path).resolve() == (tmp_path / "ciba-tickets.sqlite3").resolve()
    assert middleware.store.default_ttl == 600
    assert middleware.prefix == ""
    assert middleware.max_body_bytes == 16384
    # Around the built-in app, every other path is a JSON 404.
    response = webtest.TestApp(middleware).get("/anything", expect_errors=True)
    assert response.status_int == 404
    assert response.json == {"error": "not_found"}


def test_every_variable(tmp_path: Path) -> None:
    middleware = from_env(
        environ={
            "CIBA_STORE_URL": "memory://",
            "CIBA_TOKENS": TOKENS,
            "CIBA_PATH_PREFIX": "/authlete",
            "CIBA_MAX_BODY_BYTES": "2048",
            "CIBA_TICKET_TTL": "30.5",
        }
    )
    assert isinstance(middleware.store, MemoryTicketStore)
    assert middleware.store.default_ttl == 30.5
    assert middleware.prefix == "/authlete"
    assert middleware.max_body_bytes == 2048
    app = webtest.TestApp(middleware)
    response = app.post_json(
        f"/authlete/api/{SERVICE}/backchannel/authentication/fail",
        {"reason": "ACCESS_DENIED"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
    )
    assert response.json["action"] == "FORBIDDEN"


def test_wraps_the_given_app() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"mine"]

    middleware = from_env(app, environ={"CIBA_STORE_URL": "memory://", "CIBA_TOKENS": TOKENS})
    assert middleware.app is app


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(TOKENS)
    middleware = from_env(environ={"CIBA_STORE_URL": "memory://", "CIBA_TOKENS_FILE": str(path)})
    assert middleware.verifier.verify_bearer(SERVICE_TOKEN) is not None


def test_clear_text_secrets_work_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    tokens = json.dumps([{"service": SERVICE, "token": "dev-token"}, {"service": SERVICE, "api_secret": "dev"}])
    middleware = from_env(environ={"CIBA_STORE_URL": "memory://", "CIBA_TOKENS": tokens})
    assert middleware.verifier.verify_bearer("dev-token") is not None
    assert middleware.verifier.verify_api_key(SERVICE, "dev") is not None
    assert "clear-text 'token'; use 'token_sha256'" in caplog.text
    assert "clear-text 'api_secret'; use 'api_secret_sha256'" in caplog.text
    assert "dev-token" not in caplog.text


HEX = sha256_hex("x")
BAD = [
    pytest.param({}, "CIBA_TOKENS (or CIBA_TOKENS_FILE) is not set", id="no-tokens"),
    pytest.param({"CIBA_TOKENS": "[", "CIBA_TOKENS_FILE": "/x"}, "set CIBA_TOKENS or CIBA_TOKENS_FILE, not both",
                 id="both"),
    pytest.param({"CIBA_TOKENS": "[{"}, "CIBA_TOKENS is not valid JSON", id="bad-json"),
    pytest.param({"CIBA_TOKENS": "{}"}, "CIBA_TOKENS must be a non-empty JSON list of grants", id="not-a-list"),
    pytest.param({"CIBA_TOKENS": "[]"}, "CIBA_TOKENS must be a non-empty JSON list of grants", id="empty-list"),
    pytest.param({"CIBA_TOKENS_FILE": "/nonexistent/tokens.json"},
                 "CIBA_TOKENS_FILE: cannot read '/nonexistent/tokens.json': No such file or directory",
                 id="missing-file"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"service": "1"}])},
                 "CIBA_TOKENS: grant #1: needs exactly one of token_sha256, api_secret_sha256, token, api_secret",
                 id="grant-without-secret"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"service": "1", "token_sha256": "abc"}])},
                 "CIBA_TOKENS: grant #1: 'token_sha256' must be 64 hexadecimal digits", id="short-digest"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"service": "1", "token_sha256": HEX}, {"servce": "2"}])},
                 "CIBA_TOKENS: grant #2: unknown key 'servce'", id="typo"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"organization": "o", "services": [], "token_sha256": HEX}])},
                 "grant #1: 'services' must be a non-empty list of service IDs", id="org-without-services"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"organization": "o", "services": ["1"], "api_secret_sha256": HEX}])},
                 "grant #1: an organization has tokens, not API secrets", id="org-api-secret"),
    pytest.param({"CIBA_TOKENS": "[" * 500 + "]" * 500}, "CIBA_TOKENS: grant #1: must be an object, not list",
                 id="tokens-nested-parsable"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"service": 1, "token_sha256": HEX}])},
                 "grant #1: service must be a non-empty string", id="numeric-service"),
    pytest.param({"CIBA_TOKENS": json.dumps([{"service": "1", "token_sha256": HEX},
                                             {"service": "2", "token_sha256": HEX}])},
                 "grant #2: the same token is granted to two different principals", id="shared-token"),
    pytest.param({"CIBA_STORE_URL": "mongodb://x"}, "CIBA_STORE_URL: unknown ticket store URL scheme mongodb://",
                 id="unknown-store"),
    pytest.param({"CIBA_STORE_URL": "sqlite://host/x.db"}, "CIBA_STORE_URL: sqlite URLs have no host",
                 id="sqlite-host"),
    pytest.param({"CIBA_STORE_URL": "sqlite:///x.db?color=red"}, "CIBA_STORE_URL: unknown sqlite store option 'color'",
                 id="sqlite-option"),
    pytest.param({"CIBA_STORE_URL": "memory://somewhere"}, "CIBA_STORE_URL: memory:// takes no host", id="memory-host"),
    pytest.param({"CIBA_PATH_PREFIX": "authlete"}, "CIBA_PATH_PREFIX must be empty or like /authlete",
                 id="prefix"),
    pytest.param({"CIBA_MAX_BODY_BYTES": "16k"},
                 "CIBA_MAX_BODY_BYTES must be a whole number of bytes from 1 to 1048576, not '16k'", id="body-not-int"),
    pytest.param({"CIBA_MAX_BODY_BYTES": "0"}, "CIBA_MAX_BODY_BYTES must be a whole number of bytes from 1 to 1048576",
                 id="body-zero"),
    pytest.param({"CIBA_MAX_BODY_BYTES": "1048577"}, "CIBA_MAX_BODY_BYTES must be a whole number of bytes from 1 to",
                 id="body-too-big"),
    pytest.param({"CIBA_MAX_BODY_BYTES": "9" * 5000}, "CIBA_MAX_BODY_BYTES must be a whole number of bytes",
                 id="body-huge-digits"),
    pytest.param({"CIBA_TICKET_TTL": "soon"},
                 "CIBA_TICKET_TTL must be a number of seconds above 0 and at most 31622400 (366 days), not 'soon'",
                 id="ttl-not-number"),
    pytest.param({"CIBA_TICKET_TTL": "-5"}, "CIBA_TICKET_TTL must be a number of seconds above 0", id="ttl-negative"),
    pytest.param({"CIBA_TICKET_TTL": "0"}, "CIBA_TICKET_TTL must be a number of seconds above 0", id="ttl-zero"),
    pytest.param({"CIBA_TICKET_TTL": "nan"}, "CIBA_TICKET_TTL must be a number of seconds above 0", id="ttl-nan"),
    pytest.param({"CIBA_TICKET_TTL": "1e300"},
                 "CIBA_TICKET_TTL must be a number of seconds above 0 and at most 31622400 (366 days), not '1e300'",
                 id="ttl-beyond-the-stores-bound"),
    pytest.param({"CIBA_TICKET_TTL": "inf"}, "CIBA_TICKET_TTL must be a number of seconds above 0", id="ttl-inf"),
    pytest.param({"CIBA_TOKENS_RELOAD_INTERVAL": "-1"},
                 "CIBA_TOKENS_RELOAD_INTERVAL must be a number of seconds from 0 to 3600, not '-1'", id="interval-neg"),
    pytest.param({"CIBA_TOKENS_RELOAD_INTERVAL": "1e9"}, "CIBA_TOKENS_RELOAD_INTERVAL must be a number of seconds",
                 id="interval-huge"),
    pytest.param({"CIBA_TOKENS": "[" * 100_000}, "CIBA_TOKENS is nested too deeply to be a list of grants",
                 id="tokens-nested"),
]  # fmt: skip


@pytest.mark.parametrize(("environ", "message"), BAD)
def test_bad_configuration_fails_at_start_up_naming_the_variable(
    environ: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Cases about other variables get valid grants; the grant cases bring their own (or none).
    about_grants = not environ or any(name.startswith("CIBA_TOKENS") for name in environ)
    base = {} if about_grants else {"CIBA_TOKENS": TOKENS}
    with pytest.raises(ConfigurationError) as info:
        from_env(environ={**base, **environ})
    assert message in str(info.value)


def test_one_start_up_line_per_process_and_configuration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = ciba_env(tmp_path, CIBA_STORE_URL="postgresql://bob:hunter2@db.invalid/ciba?connect_timeout=1")
    settings = Settings.from_mapping({**env, "CIBA_PATH_PREFIX": "/start-up"})
    with caplog.at_level(logging.INFO, logger="ciba_middleware.config"):
        line = settings.describe(frozenset({"1", "2"}), None)
        for _ in range(3):
            Settings.from_mapping({**ciba_env(tmp_path), "CIBA_PATH_PREFIX": "/start-up"}).build_middleware(
                not_found_app
            )
        settings.build_api(announce=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "ciba_middleware.config"]
    assert len(lines) == 1
    assert lines[0].startswith(
        "fail API at POST /start-up/api/{serviceId}/backchannel/authentication/fail (v3) and "
        "POST /start-up/api/backchannel/authentication/fail (v2); store sqlite:///"
    )
    assert lines[0].endswith("; 5 grants covering 3 services; audit records to logging (ciba_middleware.audit)")
    assert "hunter2" not in line
    assert "postgresql://bob:***@db.invalid/ciba" in line
    assert line.endswith("; 5 grants covering 2 services; audit log off")
