"""Every request that is not the fail API reaches the wrapped app untouched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import GRANTS, LiveServer

from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier
from ciba_middleware.stores import store_from_url


class ClosingIterable:
    """A response iterable that records whether the server closed it."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"streamed "
        yield b"body"

    def close(self) -> None:
        self.closed = True


class RecordingApp:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.response = ClosingIterable()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> ClosingIterable:
        self.calls.append((environ, start_response))
        start_response("418 I'm a teapot", [("X-App", "yes")])
        return self.response


def wrap(app: Any, **options: Any) -> BackchannelFailMiddleware:
    return BackchannelFailMiddleware(
        app, store=store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS), **options
    )


PASSED_THROUGH = [
    pytest.param("GET", "/", id="root"),
    pytest.param("POST", "/backchannel/authentication", id="the-as-endpoint"),
    pytest.param("POST", "/api/715948317/backchannel/authentication/fail/", id="trailing-slash"),
    pytest.param("POST", "/api/a/b/backchannel/authentication/fail", id="two-segments"),
    pytest.param("POST", "/api//backchannel/authentication/fail", id="empty-service"),
    pytest.param("POST", "/other/backchannel/authentication/fail", id="not-under-api"),
    pytest.param("POST", "/v1/api/backchannel/authentication/fail", id="prefix-not-configured"),
    pytest.param("POST", "/api/715948317/backchannel/authentication/complete", id="another-authlete-api"),
    pytest.param("GET", "/API/backchannel/authentication/fail", id="case-matters"),
]


@pytest.mark.parametrize(("method", "path"), PASSED_THROUGH)
def test_other_requests_reach_the_app_untouched(method: str, path: str) -> None:
    app = RecordingApp()
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_AUTHORIZATION": "Bearer x"}
    snapshot = dict(environ)

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    result = wrap(app)(environ, start_response)

    # The same objects, as they were: the app's iterable is returned as it is (close() reaches it).
    assert result is app.response
    assert app.calls == [(environ, start_response)]
    assert app.calls[0][0] is environ
    assert app.calls[0][1] is start_response
    assert environ == snapshot


def test_with_a_prefix_the_routes_move() -> None:
    app = RecordingApp()
    middleware = wrap(app, prefix="/authlete")
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)

    middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/api/backchannel/authentication/fail"}, start_response)
    assert len(app.calls) == 1
    middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/authlete/api/backchannel/authentication/fail"}, start_response)
    middleware(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/authlete/api/715948317/backchannel/authentication/fail"},
        start_response,
    )
    assert len(app.calls) == 1
    assert statuses == ["418 I'm a teapot", "405 Method Not Allowed", "405 Method Not Allowed"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"prefix": "authlete"}, "prefix must be empty or start with '/'", id="prefix-no-slash"),
        pytest.param({"prefix": "/authlete/"}, "prefix must be empty or start with '/'", id="prefix-trailing-slash"),
        pytest.param({"max_body_bytes": 0}, "max_body_bytes must be a positive integer", id="zero-body"),
        pytest.param({"max_body_bytes": "1"}, "max_body_bytes must be a positive integer", id="string-body"),
        pytest.param({"store": object()}, "store must be a TicketStore, not object", id="not-a-store"),
        pytest.param({"verifier": object()}, "verifier must be a TokenVerifier, not object", id="not-a-verifier"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    from ciba_middleware import ConfigurationError

    kwargs: dict[str, Any] = {"store": store_from_url("memory://"), "verifier": StaticTokenVerifier(GRANTS)}
    kwargs.update(options)
    with pytest.raises(ConfigurationError, match=message):
        BackchannelFailMiddleware(RecordingApp(), **kwargs)


# -- over HTTP, a Flask app under gunicorn --------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("passthrough")
    live = LiveServer(
        "_apps:application",
        {
            "CIBA_STORE_URL": f"sqlite:///{tmp / 'tickets.sqlite3'}",
            "CIBA_TOKENS": json.dumps(GRANTS),
            "CIBA_TEST_CLOSE_FILE": str(tmp / "closed"),
        },
    )
    live.close_file = tmp / "closed"  # type: ignore[attr-defined]
    yield live
    live.stop()


def test_flask_status_headers_and_body(server: LiveServer) -> None:
    response = requests.get(server.url + "/hello", timeout=5)
    assert response.status_code == 201
    assert response.headers["X-App"] == "yes"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "hello from the app"


def test_flask_routes_near_the_api_stay_the_apps(server: LiveServer) -> None:
    response = requests.post(server.url + "/api/other/backchannel/authentication/fail/extra", timeout=5)
    assert response.status_code == 200
    assert response.text == "the app's own route"


def test_flask_404_is_flasks(server: LiveServer) -> None:
    response = requests.get(server.url + "/nowhere", timeout=5)
    assert response.status_code == 404
    assert "text/html" in response.headers["Content-Type"]


def test_streamed_response_and_close(server: LiveServer) -> None:
    close_file: Path = server.close_file  # type: ignore[attr-defined]
    with requests.get(server.url + "/stream", stream=True, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        chunks = [line for line in response.iter_lines() if line]
    assert chunks == [f"chunk {i}".encode() for i in range(5)]
    # The app writes the file when the server closes the response: it may exist, still
    # empty, for a moment.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (close_file.exists() and close_file.read_text()):
        time.sleep(0.05)
    assert close_file.read_text() == "closed"
