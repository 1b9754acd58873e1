"""The Flask integration: CibaMiddleware + BackchannelFail, over real HTTP (a threaded Werkzeug server).

The server runs in this process so each test can look into the very store the app uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from authlete.dto.backchannel_authentication_fail_reason import BackchannelAuthenticationFailReason
from conftest import API_HEADERS, GRANTS, OTHER_SERVICE, SERVICE, SERVICE_TOKEN, unique_name
from flask import Flask, request
from werkzeug.serving import make_server

from ciba_middleware import ConfigurationError, FailEvent, InvalidParameter, Reason, sha256_hex
from ciba_middleware.flask import EXTENSION_KEY, BackchannelFail, CibaMiddleware

CLIENT_HEADERS = API_HEADERS


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """Serve a Flask app over HTTP on 127.0.0.1 from a thread; returns its base URL."""
    running: list[tuple[Flask, Any, threading.Thread]] = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        running.append((app, server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for app, server, thread in running:
        server.shutdown()
        thread.join(5)
        server.server_close()
        # A thread per request means a store connection per request: close them all.
        CibaMiddleware.state(app).store.close()


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tickets.sqlite3'}"


def make_app(tmp_path: Path, events: list[FailEvent] | None = None, **config: Any) -> tuple[Flask, CibaMiddleware]:
    """A Flask app whose ``POST /reject`` raises BackchannelFail with the form's fields."""
    app = Flask(__name__)
    app.config.update(CIBA_STORE_URL=store_url(tmp_path), CIBA_TOKENS=GRANTS, CIBA_SERVICE_ID=SERVICE)
    app.config.update(config)
    ciba = CibaMiddleware(app, observers=[events.append] if events is not None else ())

    @app.post("/reject")
    def reject() -> str:
        form = request.form
        raise BackchannelFail(
            form["reason"], ticket=form.get("ticket"), description=form.get("description"), uri=form.get("uri")
        )

    @app.get("/hello")
    def hello() -> str:
        return "hello from the app"

    return app, ciba


def issue(app: Flask, service: str = SERVICE) -> str:
    with app.app_context():
        return CibaMiddleware.state().store.issue(service)


def exists(app: Flask, ticket: str, service: str = SERVICE) -> bool:
    return CibaMiddleware.state(app).store.exists(service, ticket)


def client_headers(response: requests.Response) -> dict[str, str]:
    return {k: response.headers[k] for k in ("Content-Type", "Cache-Control", "Pragma")}


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        pytest.param(Reason.ACCESS_DENIED, 403, id="ACCESS_DENIED"),
        pytest.param(Reason.EXPIRED_LOGIN_HINT_TOKEN, 400, id="EXPIRED_LOGIN_HINT_TOKEN"),
        pytest.param(Reason.INVALID_BINDING_MESSAGE, 400, id="INVALID_BINDING_MESSAGE"),
        pytest.param(Reason.INVALID_TARGET, 400, id="INVALID_TARGET"),
        pytest.param(Reason.INVALID_USER_CODE, 400, id="INVALID_USER_CODE"),
        pytest.param(Reason.MISSING_USER_CODE, 400, id="MISSING_USER_CODE"),
        pytest.param(Reason.SERVER_ERROR, 500, id="SERVER_ERROR"),
        pytest.param(Reason.UNAUTHORIZED_CLIENT, 400, id="UNAUTHORIZED_CLIENT"),
        pytest.param(Reason.UNKNOWN_USER_ID, 400, id="UNKNOWN_USER_ID"),
    ],
)
def test_a_raised_fail_deletes_the_ticket_and_answers_the_client(
    tmp_path: Path, serve: Callable[[Flask], str], reason: Reason, status: int
) -> None:
    events: list[FailEvent] = []
    app, _ = make_app(tmp_path, events)
    url = serve(app)
    ticket = issue(app)
    assert exists(app, ticket)

    response = requests.post(f"{url}/reject", data={"reason": reason.value, "ticket": ticket}, timeout=5)

    assert (response.status_code, client_headers(response), response.text) == (
        status,
        CLIENT_HEADERS,
        f'{{"error":"{reason.value.lower()}"}}',
    )
    assert response.headers["Content-Length"] == str(len(response.content))
    assert not exists(app, ticket)
    (event,) = events
    assert (event.via, event.service_id, event.reason, event.deleted, event.status) == (
        "in_process",
        SERVICE,
        reason,
        True,
        200,
    )


def test_description_and_uri_reach_the_client(tmp_path: Path, serve: Callable[[Flask], str]) -> None:
    app, _ = make_app(tmp_path)
    url = serve(app)
    ticket = issue(app)
    response = requests.post(
        f"{url}/reject",
        data={
            "reason": "INVALID_USER_CODE",
            "ticket": ticket,
            "description": "The user code is wrong.",
            "uri": "https://as.example/errors#user_code",
        },
        timeout=5,
    )
    assert (response.status_code, response.text) == (
        400,
        '{"error":"invalid_user_code","error_description":"The user code is wrong.",'
        '"error_uri":"https://as.example/errors#user_code"}',
    )
    assert not exists(app, ticket)


@pytest.mark.parametrize(
    ("configured", "reason", "status"),
    [
        pytest.param(503, "SERVER_ERROR", 503, id="int-server-error"),
        pytest.param("400", "SERVER_ERROR", 400, id="str-server-error"),
        pytest.param(503, "ACCESS_DENIED", 403, id="other-reasons-untouched"),
    ],
)
def test_server_error_status(
    tmp_path: Path, serve: Callable[[Flask], str], configured: object, reason: str, status: int
) -> None:
    app, _ = make_app(tmp_path, CIBA_SERVER_ERROR_STATUS=configured)
    url = serve(app)
    response = requests.post(f"{url}/reject", data={"reason": reason}, timeout=5)
    assert (response.status_code, response.text) == (status, f'{{"error":"{reason.lower()}"}}')


def test_a_ticket_of_another_service_is_kept_and_the_answer_is_the_same(
    tmp_path: Path, serve: Callable[[Flask], str]
) -> None:
    app, _ = make_app(tmp_path)
    url = serve(app)
    theirs = issue(app, OTHER_SERVICE)
    response = requests.post(f"{url}/reject", data={"reason": "ACCESS_DENIED", "ticket": theirs}, timeout=5)
    assert (response.status_code, response.text) == (403, '{"error":"access_denied"}')
    assert exists(app, theirs, OTHER_SERVICE)


def test_a_failing_store_still_answers_server_error(tmp_path: Path, serve: Callable[[Flask], str]) -> None:
    app, _ = make_app(tmp_path, CIBA_SERVER_ERROR_STATUS=503)
    url = serve(app)
    ticket = issue(app)
    # A real SQLite error on the delete, whichever connection the request's thread opens.
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.sqlite3")) as db, db:
        db.execute("CREATE TRIGGER no_delete BEFORE DELETE ON ciba_tickets BEGIN SELECT RAISE(ABORT, 'no'); END")
    response = requests.post(f"{url}/reject", data={"reason": "ACCESS_DENIED", "ticket": ticket}, timeout=5)
    assert (response.status_code, client_headers(response), response.text) == (
        503,
        CLIENT_HEADERS,
        '{"error":"server_error"}',
    )


def test_the_fail_api_and_the_app_share_the_server(tmp_path: Path, serve: Callable[[Flask], str]) -> None:
    app, _ = make_app(tmp_path)
    url = serve(app)
    ticket = issue(app)
    api = requests.post(
        f"{url}/api/{SERVICE}/backchannel/authentication/fail",
        json={"ticket": ticket, "reason": "UNKNOWN_USER_ID"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=5,
    )
    assert (api.status_code, api.json()["action"], api.json()["responseContent"]) == (
        200,
        "BAD_REQUEST",
        '{"error":"unknown_user_id"}',
    )
    assert not exists(app, ticket)
    hello = requests.get(f"{url}/hello", timeout=5)
    assert (hello.status_code, hello.text) == (200, "hello from the app")


def test_configured_from_prefixed_env(
    tmp_path: Path, serve: Callable[[Flask], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FLASK_CIBA_*`` variables, json-loaded by Flask: a list of grants, numbers for IDs and statuses."""
    monkeypatch.setenv("FLASK_CIBA_TOKENS", json.dumps(GRANTS))
    monkeypatch.setenv("FLASK_CIBA_STORE_URL", store_url(tmp_path))
    monkeypatch.setenv("FLASK_CIBA_SERVICE_ID", SERVICE)
    monkeypatch.setenv("FLASK_CIBA_SERVER_ERROR_STATUS", "503")
    monkeypatch.setenv("FLASK_CIBA_PATH_PREFIX", "/authlete")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    assert (type(app.config["CIBA_TOKENS"]), app.config["CIBA_SERVICE_ID"]) == (list, int(SERVICE))
    CibaMiddleware(app)

    @app.post("/reject")
    def reject() -> str:
        raise BackchannelFail(Reason.SERVER_ERROR, ticket=request.form["ticket"])

    url = serve(app)
    state = CibaMiddleware.state(app)
    assert (state.service_id, state.server_error_status, state.settings.prefix) == (SERVICE, 503, "/authlete")
    first, second = state.store.issue(SERVICE), state.store.issue(SERVICE)

    response = requests.post(f"{url}/reject", data={"ticket": first}, timeout=5)
    assert (response.status_code, response.text) == (503, '{"error":"server_error"}')
    api = requests.post(
        f"{url}/authlete/api/{SERVICE}/backchannel/authentication/fail",
        data={"ticket": second, "reason": "ACCESS_DENIED"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=5,
    )
    assert (api.status_code, api.json()["action"]) == (200, "FORBIDDEN")
    assert not state.store.exists(SERVICE, first)
    assert not state.store.exists(SERVICE, second)


def test_one_extension_serves_several_apps(tmp_path: Path, serve: Callable[[Flask], str]) -> None:
    """The application factory pattern: ``ciba = CibaMiddleware()`` at import, ``init_app`` per app."""
    ciba = CibaMiddleware()
    apps = []
    for service in (SERVICE, OTHER_SERVICE):
        app = Flask(__name__)
        app.config.update(
            CIBA_STORE_URL=store_url(tmp_path), CIBA_TOKENS=GRANTS, CIBA_SERVICE_ID=service, TESTING=False
        )
        ciba.init_app(app)

        @app.post("/start")
        def start() -> dict[str, str]:
            return {"ticket": ciba.issue_ticket(ttl=60)}

        @app.post("/reject")
        def reject() -> str:
            raise BackchannelFail(BackchannelAuthenticationFailReason.ACCESS_DENIED, ticket=request.form["ticket"])

        apps.append((service, app, serve(app)))

    for service, app, url in apps:
        ticket = requests.post(f"{url}/start", timeout=5).json()["ticket"]
        assert CibaMiddleware.state(app).store.exists(service, ticket)
        response = requests.post(f"{url}/reject", data={"ticket": ticket}, timeout=5)
        assert (response.status_code, response.text) == (403, '{"error":"access_denied"}')
        assert not CibaMiddleware.state(app).store.exists(service, ticket)


def test_fail_returns_the_api_answer(tmp_path: Path) -> None:
    app, ciba = make_app(tmp_path)
    with app.app_context():
        ticket = ciba.issue_ticket()
        answer = ciba.fail("MISSING_USER_CODE", ticket, "A user code is required.")
        assert (answer.ok, answer.action.value, answer.response_content) == (
            True,
            "BAD_REQUEST",
            '{"error":"missing_user_code","error_description":"A user code is required."}',
        )
        assert not CibaMiddleware.state().store.exists(SERVICE, ticket)


def test_init_app_puts_its_state_in_extensions(tmp_path: Path) -> None:
    app, ciba = make_app(tmp_path)
    state = app.extensions[EXTENSION_KEY]
    assert state is CibaMiddleware.state(app)
    assert app.wsgi_app is state.middleware
    with pytest.raises(ConfigurationError, match=r"^CibaMiddleware is already initialised on this app$"):
        ciba.init_app(app)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"CIBA_SERVICE_ID": None},
            "CIBA_SERVICE_ID is not set and the grants do not name exactly one service (1001, 42, 715948317): "
            "set it to the service whose tickets this app issues",
            id="service-ambiguous",
        ),
        pytest.param(
            {"CIBA_SERVICE_ID": ["715948317"]},
            "CIBA_SERVICE_ID must be a service ID (a string), not ['715948317']",
            id="service-not-a-string",
        ),
        pytest.param(
            {"CIBA_SERVER_ERROR_STATUS": 200},
            "CIBA_SERVER_ERROR_STATUS must be an HTTP error status (400-599), not 200",
            id="status-200",
        ),
        pytest.param(
            {"CIBA_SERVER_ERROR_STATUS": "five hundred"},
            "CIBA_SERVER_ERROR_STATUS must be an HTTP error status (400-599), not 'five hundred'",
            id="status-not-a-number",
        ),
        pytest.param(
            {"CIBA_SERVER_ERROR_STATUS": float("inf")},
            "CIBA_SERVER_ERROR_STATUS must be an HTTP error status (400-599), not inf",
            id="status-infinite",
        ),
        pytest.param(
            {"CIBA_SERVER_ERROR_STATUS": 503.5},
            "CIBA_SERVER_ERROR_STATUS must be an HTTP error status (400-599), not 503.5",
            id="status-fraction",
        ),
        pytest.param(
            {"CIBA_TICKET_TTL": 1e300},
            "CIBA_TICKET_TTL must be a number of seconds above 0 and at most 31622400 (366 days), not 1e+300",
            id="ttl-beyond-max",
        ),
        pytest.param(
            {"CIBA_TOKENS": None},
            "CIBA_TOKENS (or CIBA_TOKENS_FILE) is not set: no caller could authenticate. "
            "Create a token with `ciba-middleware token new --service ID`.",
            id="no-tokens",
        ),
    ],
)
def test_configuration_errors_at_init_app(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    app = Flask(__name__)
    app.config.update(CIBA_STORE_URL=store_url(tmp_path), CIBA_TOKENS=GRANTS, CIBA_SERVICE_ID=SERVICE)
    app.config.update(config)
    wsgi_app = app.wsgi_app
    with pytest.raises(ConfigurationError) as caught:
        CibaMiddleware(app)
    assert str(caught.value) == message
    assert EXTENSION_KEY not in app.extensions
    assert app.wsgi_app == wsgi_app


@pytest.mark.parametrize("failure", ["service-ambiguous", "after-the-first-request"])
def test_a_failed_init_app_closes_the_store_it_opened(postgres_url: str, failure: str) -> None:
    """A PostgreSQL store has a pool: threads, and connections the server can count."""
    import psycopg

    name = unique_name("ciba_init")
    app = Flask(__name__)
    app.config.update(
        CIBA_STORE_URL=f"{postgres_url}?application_name={name}&table={name}",
        CIBA_TOKENS=GRANTS,
        CIBA_SERVICE_ID=None if failure == "service-ambiguous" else SERVICE,
        CIBA_AUDIT_LOG="off",
    )
    if failure == "after-the-first-request":
        app.test_client().get("/")  # Flask refuses new error handlers from now on
    threads = threading.active_count()
    with pytest.raises((ConfigurationError, AssertionError)):
        CibaMiddleware(app)
    assert EXTENSION_KEY not in app.extensions
    deadline = time.monotonic() + 5
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        try:
            while True:
                (rows,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
                ).fetchone()  # type: ignore[misc]
                if (rows, threading.active_count()) == (0, threads) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert (rows, threading.active_count()) == (0, threads)
        finally:
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_the_service_defaults_to_the_only_one_granted(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config.update(
        CIBA_STORE_URL=store_url(tmp_path), CIBA_TOKENS=[{"service": "42", "token_sha256": sha256_hex("t")}]
    )
    CibaMiddleware(app)
    assert CibaMiddleware.state(app).service_id == "42"


def test_state_without_init_app() -> None:
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match=r"^CibaMiddleware is not initialised on this app: call init_app\(app\)$"):
        CibaMiddleware.state(app)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"reason": "NOPE"},
            "'reason' is \"NOPE\", which is not one of ACCESS_DENIED, EXPIRED_LOGIN_HINT_TOKEN, "
            "INVALID_BINDING_MESSAGE, INVALID_TARGET, INVALID_USER_CODE, MISSING_USER_CODE, SERVER_ERROR, "
            "UNAUTHORIZED_CLIENT, UNKNOWN_USER_ID.",
            id="unknown-reason",
        ),
        pytest.param(
            {"reason": Reason.ACCESS_DENIED, "description": 'say "no"'},
            '\'errorDescription\' has the character "\\"" (U+0022) at index 4; '
            "RFC 6749 allows only %x20-21 / %x23-5B / %x5D-7E.",
            id="description-with-quote",
        ),
        pytest.param(
            {"reason": Reason.ACCESS_DENIED, "uri": "not a uri"},
            "'errorUri' has the character \" \" (U+0020) at index 3; RFC 6749 allows only %x21 / %x23-5B / %x5D-7E.",
            id="uri-with-space",
        ),
        pytest.param(
            {"reason": Reason.ACCESS_DENIED, "ticket": 42},
            "'ticket' must be a string or null, not a number.",
            id="ticket-not-a-string",
        ),
    ],
)
def test_backchannel_fail_checks_its_arguments_where_it_is_raised(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        BackchannelFail(**kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("reason", "description", "message"),
    [
        pytest.param(Reason.ACCESS_DENIED, None, "ACCESS_DENIED", id="reason"),
        pytest.param("UNKNOWN_USER_ID", "No such user.", "UNKNOWN_USER_ID: No such user.", id="name+description"),
        pytest.param(BackchannelAuthenticationFailReason.INVALID_TARGET, None, "INVALID_TARGET", id="authlete-enum"),
    ],
)
def test_backchannel_fail_accepts_any_name_of_a_reason(reason: Any, description: str | None, message: str) -> None:
    error = BackchannelFail(reason, ticket="t" * 43, description=description)
    assert (type(error.reason), str(error), error.ticket) == (Reason, message, "t" * 43)


def test_init_app_logs_the_start_up_line_without_the_store_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one start-up line every integration writes (the settings'); a Redis store is
    built without connecting, so an unreachable one is fine here."""
    from ciba_middleware import config

    monkeypatch.setattr(config, "_announced", set())
    app = Flask(__name__)
    app.config.update(CIBA_STORE_URL="redis://:s3cret@127.0.0.1:1/0", CIBA_TOKENS=GRANTS, CIBA_SERVICE_ID=SERVICE)
    with caplog.at_level(logging.INFO, logger="ciba_middleware"):
        CibaMiddleware(app)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ciba_middleware")]
    assert len(lines) == 1
    assert lines[0].startswith("fail API at POST /api/{serviceId}/backchannel/authentication/fail (v3)")
    assert "; store redis://:***@127.0.0.1:1/0; " in lines[0]
    assert "s3cret" not in caplog.text
    CibaMiddleware.state(app).store.close()


def test_backchannel_fail_is_framework_free() -> None:
    """The exception Flask views raise is the package's own, the one every integration handles."""
    import ciba_middleware
    import ciba_middleware.views

    assert BackchannelFail is ciba_middleware.BackchannelFail is ciba_middleware.views.BackchannelFail
