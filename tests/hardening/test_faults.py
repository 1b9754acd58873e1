"""Faults: the wrapped app misbehaving, slow stores, and the store killed under load.

- The wrapped app's errors stay its own: an exception raised by the app, by its iterable or
  by its ``close()`` propagates unchanged through the middleware, and ``close()`` is reached.
- A slow store gives the contract's 500 in bounded time (the store's own timeouts), and the
  next call after the fault clears succeeds.
- A private redis-server SIGKILLed under load and restarted: every answer is 200 or the
  contract's 500, none hangs, gunicorn's workers survive, and calls succeed again after the
  restart without restarting anything.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _servers import PrivateRedis
from conftest import GRANTS, SERVICE, LiveServer, unique_name

from ciba_middleware import store_from_url
from ciba_middleware.stores.base import new_ticket

from ._support import BEARER_OWN, SUFFIX, call, check_contract, environ, middleware, report

# -- the wrapped app's errors stay its own ---------------------------------------------


class AppError(Exception):
    """The wrapped app's own error."""


PASS_THROUGH_PATHS = [
    pytest.param("/other", id="other-path"),
    pytest.param(f"/api/x/y{SUFFIX}", id="near-miss-two-segments"),
    pytest.param(f"/api/{SERVICE}{SUFFIX}/", id="near-miss-trailing-slash"),
]


class Closing:
    """An iterable with close(), as WSGI servers and file wrappers return."""

    def __init__(
        self, chunks: list[bytes], *, fail_on: int | None = None, close_error: Exception | None = None
    ) -> None:
        self.chunks = chunks
        self.fail_on = fail_on
        self.close_error = close_error
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_on:
                raise AppError("failed while iterating")
            yield chunk

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


def _app_returning(result: Any) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    return app


@pytest.mark.parametrize("path", PASS_THROUGH_PATHS)
def test_an_exception_of_the_app_propagates_unchanged(path: str) -> None:
    error = AppError("mine")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise error

    with pytest.raises(AppError) as raised:
        middleware(app)(environ(path=path), lambda *a: None)
    assert raised.value is error
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None


@pytest.mark.parametrize("path", PASS_THROUGH_PATHS)
def test_a_generator_is_returned_as_it_is_and_closed(path: str) -> None:
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"one"
            yield b"two"
        finally:
            closed.append(True)

    generator = chunks()
    result = middleware(_app_returning(generator))(environ(path=path), lambda *a: None)
    assert result is generator
    assert next(iter(result)) == b"one"
    result.close()  # a server closing early, e.g. the client went away
    assert closed == [True]


@pytest.mark.parametrize("path", PASS_THROUGH_PATHS)
def test_close_of_an_iterable_is_reached_once(path: str) -> None:
    iterable = Closing([b"a", b"b"])
    answer = call(middleware(_app_returning(iterable)), environ(path=path))
    assert answer.result is iterable
    assert answer.body == b"ab"
    assert iterable.closed == 1


@pytest.mark.parametrize(
    ("fail_on", "close_error"),
    [
        pytest.param(1, None, id="iteration-raises"),
        pytest.param(None, AppError("close failed"), id="close-raises"),
        pytest.param(0, AppError("close failed too"), id="both-raise"),
    ],
)
def test_errors_of_the_iterable_propagate_and_close_is_still_reached(
    fail_on: int | None, close_error: Exception | None
) -> None:
    iterable = Closing([b"a", b"b"], fail_on=fail_on, close_error=close_error)
    with pytest.raises(AppError) as raised:
        call(middleware(_app_returning(iterable)), environ(path="/other"))
    expected = close_error if close_error is not None else None
    if expected is not None:
        assert raised.value is expected
    else:
        assert str(raised.value) == "failed while iterating"
    assert iterable.closed == 1


def test_start_response_with_exc_info_reaches_the_server() -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            raise AppError("late")
        except AppError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"oops"]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        seen.append((status, exc_info))

    assert middleware(app)(environ(path="/other"), start_response) == [b"oops"]
    assert seen[0][0] == "500 Internal Server Error"
    assert seen[0][1][0] is AppError


def test_an_observer_that_raises_changes_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    def observer(event: Any) -> None:
        raise RuntimeError("observer broke")

    answer = call(middleware(observers=[observer]), environ(body=b'{"reason":"ACCESS_DENIED"}'))
    assert answer.status == 200
    assert check_contract(answer)["action"] == "FORBIDDEN"
    assert "observer" in caplog.text
    assert "observer broke" in caplog.text


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    marker = tmp_path / "closed"
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}",
        "CIBA_TOKENS": json.dumps(GRANTS),
        "CIBA_TEST_CLOSE_FILE": str(marker),
    }
    server = LiveServer("hardening._fault_apps:application", env)
    yield server, marker
    server.stop()


def test_over_http_the_apps_errors_are_gunicorns_to_answer(fault_server: tuple[LiveServer, Path]) -> None:
    server, marker = fault_server
    response = requests.get(server.url + "/raise", timeout=10)
    # gunicorn's own 500 page, not the middleware's JSON: the error was not intercepted.
    assert response.status_code == 500
    assert "json" not in response.headers.get("Content-Type", "")
    assert "resultCode" not in response.text
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url + "/raise-late", timeout=10).content  # noqa: B018
    response = requests.get(server.url + "/close", timeout=10)
    assert response.text == "ab"
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "closed"
    # The fail API beside them still answers.
    answer = requests.post(
        server.url + f"/api/{SERVICE}{SUFFIX}",
        json={"reason": "ACCESS_DENIED"},
        headers={"Authorization": BEARER_OWN},
        timeout=10,
    )
    assert answer.status_code == 200
    log = server.log()
    assert "AppError: the app failed on its own" in log
    assert "AppError: the app failed while streaming" in log


# -- slow stores: bounded time, the contract's 500, then recovery ------------------------

# Each fault: a context manager that makes the store hang on the given ticket.


@contextlib.contextmanager
def _redis_paused(redis: PrivateRedis, ticket: str) -> Iterator[None]:
    """Every client's commands wait 2 s (longer than the store's timeouts and its retry).

    CLIENT UNPAUSE would itself wait out the pause on Redis 7.0, so the pause just ends."""
    client = redis.client()
    client.execute_command("CLIENT", "PAUSE", "2000", "ALL")
    paused = time.monotonic()
    try:
        yield
    finally:
        time.sleep(max(0.0, paused + 2.1 - time.monotonic()))
        client.close()


@pytest.fixture
def slow_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(store URL with short timeouts, a context manager factory: ticket -> the store hangs)."""
    kind = request.param
    if kind == "redis-client-paused":
        redis = PrivateRedis()
        try:
            yield f"{redis.url}?socket_timeout=0.5&socket_connect_timeout=0.5", lambda t: _redis_paused(redis, t)
        finally:
            redis.close()
    elif kind == "postgresql-row-locked":
        import psycopg

        base = request.getfixturevalue("postgres_url")
        table = unique_name("ciba_hard_slow")

        @contextlib.contextmanager
        def locked(ticket: str) -> Iterator[None]:
            with psycopg.connect(base) as conn:  # a transaction holds the row until we leave
                conn.execute(f'SELECT 1 FROM "{table}" WHERE ticket = %s FOR UPDATE', (ticket,))
                yield
                conn.rollback()

        try:
            yield f"{base}?table={table}&statement_timeout=0.5", locked
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    else:
        path = tmp_path / "slow.sqlite3"

        @contextlib.contextmanager
        def exclusive(ticket: str) -> Iterator[None]:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
                conn.close()

        yield f"sqlite:///{path}?timeout=0.5", exclusive


BOUND = 2.5  # seconds: the store's timeout (0.5 s), one retry, and slack for a busy CI machine


@pytest.mark.parametrize("slow_store", ["redis-client-paused", "postgresql-row-locked", "sqlite-locked"], indirect=True)
def test_a_slow_store_gives_the_contracts_500_in_bounded_time(slow_store: tuple[str, Any]) -> None:
    url, hang = slow_store
    store = store_from_url(url)
    try:
        mw = middleware(store=store)
        ticket = store.issue(SERVICE)
        body = json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()
        with hang(ticket):
            started = time.monotonic()
            answer = call(mw, environ(body=body))
            elapsed = time.monotonic() - started
        assert answer.status == 500
        data = check_contract(answer)
        assert data["resultCode"] == "A185101"
        assert data["action"] == "INTERNAL_SERVER_ERROR"
        assert json.loads(data["responseContent"]) == {"error": "server_error"}
        assert 0.4 < elapsed < BOUND, f"answered after {elapsed:.2f}s"
        report("slow_store", store=url.split(":", 1)[0], status=answer.status, seconds=round(elapsed, 3))
        # The fault cleared: the same call now deletes the ticket.
        answer = call(mw, environ(body=body))
        assert answer.status == 200
        assert not store.exists(SERVICE, ticket)
    finally:
        store.close()


# -- a private Redis killed under load and restored --------------------------------------


def test_redis_killed_under_load_and_restored(tmp_path: Path) -> None:
    redis = PrivateRedis()
    url = f"{redis.url}?socket_timeout=0.5&socket_connect_timeout=0.5"
    store = store_from_url(url)
    server = LiveServer(
        "ciba_middleware.wsgi:application",
        {"CIBA_STORE_URL": url, "CIBA_TOKENS": json.dumps(GRANTS)},
        workers=2,
        extra=("--timeout", "10"),
    )
    results: list[tuple[float, int, str, float, str, bool]] = []
    errors: list[str] = []
    stop = threading.Event()
    start = time.monotonic()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                ticket, issued = store.issue(SERVICE), True
            except Exception:
                ticket, issued = new_ticket(), False  # the store is down: a ticket it never issued
            sent = time.monotonic()
            try:
                response = session.post(
                    server.url + f"/api/{SERVICE}{SUFFIX}",
                    data=json.dumps({"ticket": ticket, "reason": "UNKNOWN_USER_ID"}),
                    headers={"Authorization": BEARER_OWN, "Content-Type": "application/json"},
                    timeout=10,
                )
            except requests.RequestException as exc:
                errors.append(repr(exc))
                continue
            data = response.json()
            if response.status_code == 500:
                assert data == {
                    "resultCode": "A185101",
                    "resultMessage": data["resultMessage"],
                    "action": "INTERNAL_SERVER_ERROR",
                    "responseContent": '{"error":"server_error"}',
                }
            results.append(
                (sent - start, response.status_code, data["resultCode"], time.monotonic() - sent, ticket, issued)
            )

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        killed = time.monotonic() - start
        redis.kill()
        time.sleep(2.0)
        redis.start()
        restored = time.monotonic() - start
        time.sleep(3.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        log = server.log()
        # After the restart, answered calls really deleted their tickets.
        recovered = [r for r in results if r[0] > restored + 1.0 and r[1] == 200 and r[5]]
        survivors = [r[4] for r in recovered if store.exists(SERVICE, r[4])]
    finally:
        stop.set()
        server.stop()
        store.close()
        redis.close()

    before = [r for r in results if r[0] < killed - 0.1]
    during = [r for r in results if killed + 0.1 < r[0] < restored]
    after = [r for r in results if r[0] > restored + 1.0]
    report(
        "redis_killed",
        requests=len(results),
        before_kill=len(before),
        during_outage=len(during),
        during_outage_500=sum(r[1] == 500 for r in during),
        after_restart=len(after),
        after_restart_200=sum(r[1] == 200 for r in after),
        connection_errors=len(errors),
        max_latency_s=round(max(r[3] for r in results), 3),
        first_200_after_restart_s=round(
            min((r[0] for r in results if r[0] > restored and r[1] == 200), default=-1) - restored, 3
        ),
    )
    assert errors == [], errors[:5]
    statuses = {status for _, status, *_ in results}
    assert statuses <= {200, 500}, statuses
    assert before, "no load before the kill"
    assert all(r[1] == 200 for r in before)
    assert any(r[1] == 500 for r in during), "the outage was never seen"
    assert after, "no load after the restart"
    assert all(r[1] == 200 for r in after), [r[:3] for r in after if r[1] != 200][:5]
    assert max(r[3] for r in results) < BOUND, max(r[3] for r in results)
    # Workers neither timed out nor died; no traceback reached the log.
    assert "WORKER TIMEOUT" not in log
    assert "Traceback" not in log
    assert log.count("Booting worker") == 2
    assert recovered
    assert survivors == []


# -- callers that go away ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("announced", "sent"),
    [
        pytest.param(100, b'{"reason":', id="body-shorter-than-content-length"),
        pytest.param(30, b"", id="no-body-at-all"),
    ],
)
def test_a_caller_that_hangs_up_mid_body_costs_nothing(
    fault_server: tuple[LiveServer, Path], announced: int, sent: bytes
) -> None:
    import socket

    server, _ = fault_server
    head = (
        f"POST /api/{SERVICE}{SUFFIX} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BEARER_OWN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {announced}\r\n\r\n"
    ).encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + sent)
            sock.shutdown(socket.SHUT_WR)  # the caller is gone before the body is complete
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        # gunicorn reports the short body to the app as a short read: the contract's 400.
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"resultCode":"A185201"' in answer
    started = time.monotonic()
    response = requests.post(
        server.url + f"/api/{SERVICE}{SUFFIX}",
        json={"reason": "ACCESS_DENIED"},
        headers={"Authorization": BEARER_OWN},
        timeout=10,
    )
    assert response.status_code == 200
    assert time.monotonic() - started < 2
    log = server.log()
    assert "Traceback" not in log
    assert "WORKER TIMEOUT" not in log
