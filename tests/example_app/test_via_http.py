"""The demo with CIBA_DEMO_FAIL_VIA=http: rejections go to the fail API over HTTP with authlete-python.

The server calls its own fail API (gunicorn, a second bound address and threads), so each
rejection is a real Authlete API v3 call: Bearer token, ``/api/{serviceId}/...``, JSON body
with nulls, deserialised into authlete's DTO and turned into the client's answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _demo import CLIENT_HEADERS, FAILED, Demo, check_failed_through_the_api, headers_of, start_demo
from conftest import OTHER_TOKEN, SERVICE, free_port
from werkzeug.serving import make_server


@pytest.fixture(scope="module")
def demo_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo_http"), via_http=True)
    yield running
    running.server.stop()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Start a demo in HTTP mode with settings of the test's own; stopped afterwards."""
    started: list[Demo] = []

    def run(**env: str) -> Demo:
        demo = start_demo(tmp_path, via_http=True, workers=2, threads=1, **env)
        started.append(demo)
        return demo

    yield run
    for demo in started:
        demo.server.stop()


@pytest.mark.parametrize(("form", "auth", "status", "error", "description"), FAILED)
def test_each_rule_fails_over_http_and_deletes_the_ticket(
    demo_http: Demo, form: dict[str, Any], auth: tuple[str, str] | None, status: int, error: str, description: str
) -> None:
    check_failed_through_the_api(demo_http, form, auth, status, error, description, via="http")


def test_the_call_is_an_authlete_v3_call(demo_http: Demo) -> None:
    demo_http.post({"scope": "openid", "login_hint": "carol"})
    (record,) = demo_http.new_audit()
    assert (record["route"], record["principal_kind"], record["principal_id"], record["client_addr"]) == (
        "v3",
        "service",
        SERVICE,
        "127.0.0.1",
    )


def test_success_makes_no_call(demo_http: Demo) -> None:
    before = demo_http.tickets()
    response = demo_http.post({"scope": "openid", "login_hint": "alice"})
    assert response.status_code == 200
    assert demo_http.tickets() == before  # the issue took the ticket
    assert demo_http.new_audit() == []


@pytest.mark.parametrize(
    ("env", "audited"),
    [
        pytest.param({"CIBA_DEMO_ACCESS_TOKEN": OTHER_TOKEN}, [(403, "not_covered")], id="token-of-another-service"),
        pytest.param({"CIBA_DEMO_ACCESS_TOKEN": "not-a-granted-token"}, [(401, "invalid")], id="unknown-token"),
        pytest.param({"CIBA_DEMO_API_BASE_URL": f"http://127.0.0.1:{free_port()}"}, [], id="api-unreachable"),
    ],
)
def test_a_failed_fail_call_still_answers_server_error(
    start: Callable[..., Demo], env: dict[str, str], audited: list[tuple[int, str]]
) -> None:
    """The client gets server_error; the ticket stays until it expires, as nobody deleted it."""
    demo = start(**env)
    before = demo.tickets()
    response = demo.post({"scope": "openid", "login_hint": "carol"})
    assert (response.status_code, headers_of(response), response.text) == (
        500,
        CLIENT_HEADERS,
        '{"error":"server_error"}',
    )
    assert [(r["status"], r["auth_failure"]) for r in demo.new_audit()] == audited
    assert demo.tickets() == before + 1


def not_authlete(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A server that answers 200 with an action Authlete never sends."""
    body = b'{"resultCode":"A185001","action":"OK","responseContent":"{}"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def test_an_answer_authlete_python_cannot_read_still_answers_server_error(start: Callable[..., Demo]) -> None:
    """authlete-python raises a bare KeyError on an unknown action: the demo answers server_error."""
    server = make_server("127.0.0.1", 0, not_authlete)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        demo = start(CIBA_DEMO_API_BASE_URL=f"http://127.0.0.1:{server.server_port}")
        response = demo.post({"scope": "openid", "login_hint": "carol"})
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
    assert (response.status_code, headers_of(response), response.text) == (
        500,
        CLIENT_HEADERS,
        '{"error":"server_error"}',
    )
    assert "unexpected answer from the fail API" in demo.server.log()
