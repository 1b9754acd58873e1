"""The family's whole sequence on every store: memory, SQLite, Redis, PostgreSQL.

In process through ``FailApi.call`` (what every route does after the caller's checks), on a
store of the test's own (tests/_stores.py). Then tokens exactly once while several processes
(threads for ``memory://``, whose state is the process's own) race on the same auth_req_ids.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _stores import url_for_backend
from conftest import SERVICE

from ciba_middleware.config import Settings
from ciba_middleware.core import FailApi
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.response import not_found_app

from ._family import GRANT, ISSUER, POLL, SECRET, family_env, form, signing_key

STORES = ["memory", "sqlite", "redis", "postgresql"]


def _build(env: Mapping[str, str]) -> BackchannelFailMiddleware:
    return Settings.from_mapping(env).build_middleware(not_found_app, announce=False)


@pytest.fixture(params=STORES)
def family(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, str], BackchannelFailMiddleware]]:
    url, cleanup = url_for_backend(request.param, request, tmp_path)
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_STORE_URL=url, CIBA_AUDIT_LOG="off")
    built = _build(env)
    try:
        yield env, built
    finally:
        built.store.close()
        cleanup()


def _authenticate(api: FailApi, hint: str = "alice") -> str:
    status, body = api.call(
        "backchannel/authentication",
        SERVICE,
        {"parameters": form(scope="openid email", login_hint=hint), "clientId": POLL, "clientSecret": SECRET},
    )
    assert (status, body["action"]) == (200, "USER_IDENTIFICATION"), body
    ticket = body["ticket"]
    assert isinstance(ticket, str)
    return ticket


def _issue(api: FailApi, ticket: str) -> tuple[int, dict[str, Any]]:
    return api.call("backchannel/authentication/issue", SERVICE, {"ticket": ticket})


def _started(api: FailApi, hint: str = "alice") -> tuple[str, str]:
    """A ticket and its auth_req_id."""
    ticket = _authenticate(api, hint)
    status, body = _issue(api, ticket)
    assert (status, body["action"]) == (200, "OK"), body
    return ticket, body["authReqId"]


def _token(api: FailApi, auth_req_id: str) -> dict[str, Any]:
    status, body = api.call(
        "auth/token",
        SERVICE,
        {"parameters": form(grant_type=GRANT, auth_req_id=auth_req_id), "clientId": POLL, "clientSecret": SECRET},
    )
    assert status == 200, body
    return body


def _error(body: Mapping[str, Any]) -> str:
    assert body["action"] == "BAD_REQUEST", body
    error = json.loads(body["responseContent"])["error"]
    assert isinstance(error, str)
    return error


def _complete(api: FailApi, ticket: str, result: str, **more: Any) -> dict[str, Any]:
    status, body = api.call(
        "backchannel/authentication/complete", SERVICE, {"ticket": ticket, "result": result, **more}
    )
    assert status == 200, body
    return body


def test_the_whole_sequence(family: tuple[dict[str, str], BackchannelFailMiddleware]) -> None:
    env, middleware = family
    api = middleware.api
    ticket, auth_req_id = _started(api)
    assert _error(_token(api, auth_req_id)) == "authorization_pending"
    if env["CIBA_STORE_URL"] == "memory://":
        assert _error(_token(api, auth_req_id)) == "slow_down"  # sooner than the interval (5 s)
    else:
        # Another worker (its own middleware, its own connections) knows of the last poll.
        other = _build(env)
        try:
            assert _error(_token(other.api, auth_req_id)) == "slow_down"
        finally:
            other.store.close()
    assert _complete(api, ticket, "AUTHORIZED", subject="alice", acr="urn:acr:1")["action"] == "NO_ACTION"
    granted = _token(api, auth_req_id)
    assert granted["action"] == "OK", granted
    assert middleware.api.family is not None
    claims = middleware.api.family.key.verify(granted["idToken"])
    assert claims is not None
    assert (claims["iss"], claims["sub"], claims["aud"], claims["acr"]) == (ISSUER, "alice", POLL, "urn:acr:1")
    assert _error(_token(api, auth_req_id)) == "invalid_grant"  # tokens once
    status, introspected = api.call("auth/introspection", SERVICE, {"token": granted["accessToken"]})
    assert (status, introspected["action"], introspected["usable"]) == (200, "OK", True), introspected
    assert (introspected["subject"], introspected["scopes"]) == ("alice", ["openid", "email"])
    # The request's ticket is spent: neither issued again nor completed again.
    assert _issue(api, ticket)[1]["action"] == "INVALID_TICKET"
    status, again = api.call(
        "backchannel/authentication/complete", SERVICE, {"ticket": ticket, "result": "AUTHORIZED", "subject": "bob"}
    )
    assert status == 400, again


def test_denial(family: tuple[dict[str, str], BackchannelFailMiddleware]) -> None:
    _, middleware = family
    api = middleware.api
    ticket, auth_req_id = _started(api, "bob")
    assert _complete(api, ticket, "ACCESS_DENIED", errorDescription="no thanks")["action"] == "NO_ACTION"
    assert _error(_token(api, auth_req_id)) == "access_denied"
    assert _error(_token(api, auth_req_id)) == "access_denied"  # a denial stays one


def test_a_failed_ticket_is_never_issued(family: tuple[dict[str, str], BackchannelFailMiddleware]) -> None:
    _, middleware = family
    api = middleware.api
    ticket = _authenticate(api, "carol")
    failed = api.fail(SERVICE, ticket, "ACCESS_DENIED")
    assert failed.result_code == "A185001", failed
    status, body = _issue(api, ticket)
    assert (status, body["action"], body.get("authReqId")) == (200, "INVALID_TICKET", None), body
    # ...and a fail call after the issue (answered alike: existence is never revealed)
    # leaves the issued request as it was.
    issued, auth_req_id = _started(api, "dave")
    assert api.fail(SERVICE, issued, "ACCESS_DENIED").result_code == "A185001"
    assert _error(_token(api, auth_req_id)) == "authorization_pending"
    assert _complete(api, issued, "AUTHORIZED", subject="dave")["action"] == "NO_ACTION"
    assert _token(api, auth_req_id)["action"] == "OK"


#: auth_req_ids raced on, and the racers (processes; threads on memory://).
RACED = 12
RACERS = 4


def _race(env: Mapping[str, str], auth_req_ids: list[str], seed: int, barrier: Any, out: Any) -> None:
    """One racer: its own middleware on the same store, every auth_req_id in its own order."""
    middleware = _build(env)
    try:
        order = list(auth_req_ids)
        random.Random(seed).shuffle(order)
        barrier.wait(timeout=60)
        answers = []
        for auth_req_id in order:
            body = _token(middleware.api, auth_req_id)
            answers.append((auth_req_id, body["accessToken"] if body["action"] == "OK" else _error(body)))
        out.put(answers)
    finally:
        middleware.store.close()


def test_tokens_exactly_once_under_racing_exchanges(
    family: tuple[dict[str, str], BackchannelFailMiddleware],
) -> None:
    env, middleware = family
    api = middleware.api
    auth_req_ids = []
    for index in range(RACED):
        ticket, auth_req_id = _started(api, f"user{index}")
        assert _complete(api, ticket, "AUTHORIZED", subject=f"user{index}")["action"] == "NO_ACTION"
        auth_req_ids.append(auth_req_id)
    answers: list[tuple[str, str]] = []
    if env["CIBA_STORE_URL"] == "memory://":
        queue: Any = __import__("queue").Queue()
        barrier: Any = threading.Barrier(RACERS)
        threads = [
            threading.Thread(target=_race_on, args=(middleware.api, auth_req_ids, seed, barrier, queue))
            for seed in range(RACERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for _ in range(RACERS):
            answers += queue.get(timeout=5)
    else:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        barrier = context.Barrier(RACERS)
        processes = [
            context.Process(target=_race, args=(env, auth_req_ids, seed, barrier, queue)) for seed in range(RACERS)
        ]
        for process in processes:
            process.start()
        for _ in range(RACERS):
            answers += queue.get(timeout=120)
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
    assert len(answers) == RACED * RACERS
    for auth_req_id in auth_req_ids:
        outcomes = [outcome for raced, outcome in answers if raced == auth_req_id]
        refused = [outcome for outcome in outcomes if outcome == "invalid_grant"]
        tokens = [outcome for outcome in outcomes if outcome != "invalid_grant"]
        assert len(tokens) == 1, outcomes  # exactly one winner, the others told it was used
        assert len(refused) == RACERS - 1
        status, introspected = api.call("auth/introspection", SERVICE, {"token": tokens[0]})
        assert (status, introspected["usable"]) == (200, True), introspected


def _race_on(api: FailApi, auth_req_ids: list[str], seed: int, barrier: Any, out: Any) -> None:
    order = list(auth_req_ids)
    random.Random(seed).shuffle(order)
    barrier.wait(timeout=60)
    answers = []
    for auth_req_id in order:
        body = _token(api, auth_req_id)
        answers.append((auth_req_id, body["accessToken"] if body["action"] == "OK" else _error(body)))
    out.put(answers)
