"""Property tests: whatever arrives, the middleware answers with the contract or passes through.

The middleware is called directly as a WSGI callable around a sentinel app. For each
generated request: no exception escapes; a request for one of the middleware's routes
never reaches the app; any other request reaches it untouched (same environ, same
start_response, the app's iterable returned as it is); every answer of the routes is the
contract's JSON with the contract's headers.

Profiles: ``CIBA_FUZZ_EXAMPLES`` sets the examples per test (default 1500: the CI
profile, a few seconds). ``benchmarks/hardening/fuzz.sh`` runs the long profile and
``CIBA_FUZZ_REPORT=path`` makes each test append its counts there as JSON lines.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ORG_SERVICES, OTHER_SERVICE, SERVICE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciba_middleware import FailEvent
from ciba_middleware.reasons import Reason
from ciba_middleware.stores import ticket_hash
from ciba_middleware.stores.memory import MemoryTicketStore

from ._support import (
    BASIC_OTHER,
    BASIC_OWN,
    BEARER_ORG,
    BEARER_OTHER,
    BEARER_OWN,
    SUFFIX,
    SentinelApp,
    basic,
    call,
    check_contract,
    environ,
    is_route,
    middleware,
)

EXAMPLES = int(os.environ.get("CIBA_FUZZ_EXAMPLES", "1500"))
REPORT = os.environ.get("CIBA_FUZZ_REPORT")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

PREFIXES = ["", "/authlete"]

# -- strategies -----------------------------------------------------------------------


def weighted(common: Any, rare: Any, percent_common: int = 75) -> Any:
    """``common`` most of the time, so most requests get past the first check."""
    return st.integers(0, 99).flatmap(lambda n: common if n < percent_common else rare)


# PATH_INFO is latin-1 text carrying the raw bytes (PEP 3333).
latin1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
utf8_as_latin1 = st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass").decode("latin-1"))
service_ids = weighted(
    st.just(SERVICE),
    st.one_of(
        st.sampled_from([OTHER_SERVICE, *ORG_SERVICES, "0", "%2F", "..", "backchannel", " ", "a b"]),
        latin1.filter(bool),
        utf8_as_latin1.filter(bool),
    ),
    50,
)


@st.composite
def paths(draw: st.DrawFn, prefix: str) -> str:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return f"{prefix}/api/{draw(service_ids)}{SUFFIX}"
    if kind <= 5:
        return f"{prefix}/api{SUFFIX}"
    if kind <= 8:
        # Near misses: one edit away from a route.
        base = draw(st.sampled_from([f"{prefix}/api{SUFFIX}", f"{prefix}/api/{SERVICE}{SUFFIX}"]))
        edit = draw(st.integers(0, 7))
        if edit == 0:
            return base + "/"
        if edit == 1:
            return base.upper()
        if edit == 2:
            return base.replace("/api", "/api/", 1)
        if edit == 3:
            return base[:-1]
        if edit == 4:
            return draw(latin1) + base
        if edit == 5:
            return base + draw(latin1)
        if edit == 6:
            return base.replace("/api", draw(st.sampled_from(["", "/API", "/apis", "/x/api", "//api"])), 1)
        index = draw(st.integers(0, len(base) - 1))
        return base[:index] + draw(latin1) + base[index + 1 :]
    return draw(latin1)


methods = weighted(
    st.just("POST"),
    st.one_of(
        st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "post", ""]),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=10),
    ),
    85,
)

b64ish = st.text(st.sampled_from("ABCabc019-._~+/= :"), max_size=60)
authorizations = weighted(
    st.sampled_from([BEARER_OWN, BEARER_ORG, BASIC_OWN]),
    st.one_of(
        st.none(),
        st.sampled_from(
            [
                BEARER_OWN,
                BEARER_OTHER,
                BEARER_ORG,
                BASIC_OWN,
                BASIC_OTHER,
                "",
                "Bearer",
                "Bearer ",
                "bearer " + BEARER_OWN[7:],
                "BEARER  " + BEARER_OWN[7:] + "  ",
                BEARER_OWN + "x",
                BEARER_OWN[:-1],
                "Basic",
                "Basic =",
                "Basic " + "A" * 5000,
                basic(SERVICE, "wrong"),
                basic("", "x"),
                basic(SERVICE, ""),
                "Basic " + "w" * 3,
                "Digest x",
            ]
        ),
        st.builds(lambda s, c: f"{s} {c}", st.sampled_from(["Bearer", "Basic", "bearer", "basic", "Token"]), b64ish),
        st.builds(lambda k, s: basic(k, s), st.text(max_size=12), st.text(max_size=12)),
        latin1,
    ),
    60,
)

charsets = st.sampled_from(
    [
        "utf-8",
        "UTF-8",
        '"utf-8"',
        "utf-16",
        "utf-32-be",
        "latin-1",
        "ascii",
        "rot13",
        "base64",
        "bogus",
        "",
        "utf-8;x=1",
    ]
)
content_types = weighted(
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "application/json; charset=utf-8"]),
    st.one_of(
        st.none(),
        st.sampled_from(
            [
                "application/json",
                "application/x-www-form-urlencoded",
                "APPLICATION/JSON",
                " application/json ; charset=utf-8",
                "text/plain",
                "multipart/form-data; boundary=x",
                "application/json;",
                "application/json; charset",
                "application/json; charset=",
                "",
            ]
        ),
        st.builds(
            lambda m, c: f"{m}; charset={c}",
            st.sampled_from(["application/json", "application/x-www-form-urlencoded"]),
            charsets,
        ),
        latin1,
    ),
    70,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
reasons = st.one_of(st.sampled_from([r.value for r in Reason]), st.text(max_size=30), json_values)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
field_values = st.one_of(st.none(), printable, st.text(max_size=60), json_values)


@st.composite
def field_maps(draw: st.DrawFn, tickets: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["ticket"] = draw(st.one_of(st.sampled_from(tickets), field_values))
    if draw(st.booleans()):
        fields["reason"] = draw(reasons)
    if draw(st.booleans()):
        fields["errorDescription"] = draw(field_values)
    if draw(st.booleans()):
        fields["errorUri"] = draw(
            st.one_of(st.sampled_from(["https://e.example/x", "/rel", "a:b", "%zz"]), field_values)
        )
    if draw(st.integers(0, 4)) == 0:
        fields[draw(st.text(max_size=10))] = draw(json_values)
    return fields


def _form(fields: dict[str, Any]) -> bytes:
    from urllib.parse import urlencode

    return urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}).encode("ascii")


@st.composite
def bodies(draw: st.DrawFn, tickets: list[str]) -> bytes:
    kind = draw(st.integers(0, 11))
    if kind <= 3:
        return json.dumps(draw(field_maps(tickets))).encode(
            draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), "replace"
        )
    if kind == 4:
        return _form(draw(field_maps(tickets)))
    if kind == 5:
        return draw(st.binary(max_size=200))
    if kind == 6:
        depth = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * draw(st.integers(0, depth))).encode()
    if kind == 7:
        size = draw(st.integers(1, 40_000))
        return json.dumps({"ticket": draw(st.text(min_size=1, max_size=3)) * size}).encode()
    if kind == 8:
        return draw(
            st.sampled_from(
                [
                    b"",
                    b"null",
                    b"[]",
                    b'"x"',
                    b"1e999999",
                    b"9" * 5000,
                    b'{"ticket":"a","ticket":"b"}',
                    b"{",
                    b"\xef\xbb\xbf{}",
                ]
            )
        )
    if kind == 9:
        return json.dumps(draw(json_values)).encode()
    if kind == 10:
        return draw(st.text(max_size=80)).encode("utf-8", "surrogatepass")
    return "&".join(f"{k}={v}" for k, v in draw(st.lists(st.tuples(latin1, latin1), max_size=5))).encode("latin-1")


@st.composite
def content_lengths(draw: st.DrawFn, body: bytes) -> str | None:
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        return None  # the exact length
    if kind == 6:
        return ""
    if kind == 7:
        return str(draw(st.integers(0, len(body) + 10)))
    if kind == 8:
        return draw(st.sampled_from(["-1", "1e3", " 5", "0x10", "99999999999999999999", "١٢", "²", "abc"]))
    return draw(st.text(max_size=6))


# -- the property ---------------------------------------------------------------------

_counts: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    started = time.monotonic()
    yield
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            record = {"examples_per_test": EXAMPLES, "seconds": round(time.monotonic() - started, 1), **_counts}
            out.write(json.dumps(record, sort_keys=True) + "\n")


class RecordingStore(MemoryTicketStore):
    """Answers deletes like a store whose tickets never run out, and records every call.

    The tickets stay, so every generated request can hit a live one, and the test sees
    exactly which (service, ticket) the middleware asked the store to delete.
    """

    def __init__(self) -> None:
        super().__init__()
        self.deletes: list[tuple[str, str]] = []

    def delete(self, service_id: str, ticket: str) -> bool:
        self.deletes.append((service_id, ticket))
        return self.exists(service_id, ticket)


class World:
    """One middleware per prefix around a sentinel app, with live tickets of three services."""

    def __init__(self) -> None:
        self.store = MemoryTicketStore()  # for the oracle property: tickets really go
        self.recording = RecordingStore()
        self.events: list[FailEvent] = []
        self.apps = {p: SentinelApp() for p in PREFIXES}
        self.middlewares = {
            p: middleware(self.apps[p], store=self.recording, prefix=p, observers=[self.events.append])
            for p in PREFIXES
        }
        self.oracle = middleware(SentinelApp(), store=self.store)
        self.tickets = [self.recording.issue(s) for s in (SERVICE, OTHER_SERVICE, "1001") for _ in range(3)]


WORLD = World()


@st.composite
def requests_(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    prefix = draw(st.sampled_from(PREFIXES))
    body = draw(bodies(WORLD.tickets))
    env = environ(
        method=draw(methods),
        path=draw(paths(prefix)),
        body=body,
        content_type=draw(content_types),
        authorization=draw(authorizations),
        content_length=draw(content_lengths(body)),
    )
    if draw(st.integers(0, 9)) == 0:
        env["wsgi.input_terminated"] = True
        del env["CONTENT_LENGTH"]
    if draw(st.integers(0, 19)) == 0:
        env["HTTP_X_REQUEST_ID"] = draw(latin1)
    if draw(st.integers(0, 19)) == 0:
        env["wsgi.input"] = BrokenInput(draw(st.sampled_from([OSError, ConnectionResetError, ValueError, EOFError])))
    return prefix, env


class BrokenInput:
    """wsgi.input as servers leave it when the caller's framing breaks or the caller is gone."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error("the server could not read the body")


@FUZZ
@given(requests_())
def test_any_request_gets_the_contract_or_passes_through(request_: tuple[str, dict[str, Any]]) -> None:
    prefix, env = request_
    app, mw = WORLD.apps[prefix], WORLD.middlewares[prefix]
    before = len(app.calls)
    WORLD.recording.deletes.clear()
    WORLD.events.clear()
    answer = call(mw, env)  # raises if anything escapes
    _counts["requests"] += 1
    if is_route(env["PATH_INFO"], prefix):
        assert len(app.calls) == before, f"route {env['PATH_INFO']!r} reached the app"
        data = check_contract(answer, env["REQUEST_METHOD"])
        # The memory store cannot fail: a 500 here would be an unexpected exception.
        assert answer.status != 500, answer
        # The store is asked to delete only for an authorized call, only the ticket sent,
        # and only within the service addressed, which the principal covers.
        (event,) = WORLD.events
        assert len(WORLD.recording.deletes) <= 1
        for service, ticket in WORLD.recording.deletes:
            _counts["store_deletes"] += 1
            _counts["store_deletes_of_a_live_ticket"] += ticket in WORLD.tickets
            assert answer.status == 200, answer
            assert event.principal is not None
            assert event.principal.covers(service)
            assert service == event.service_id
            assert ticket_hash(ticket) == event.ticket_hash
            if event.route == "v3":
                assert env["PATH_INFO"].endswith(f"/{service}{SUFFIX}")
        _counts[f"route:{answer.status}:{data.get('resultCode', 'HEAD')}"] += 1
    else:
        assert len(app.calls) == before + 1, f"{env['PATH_INFO']!r} did not reach the app"
        assert WORLD.recording.deletes == []
        assert WORLD.events == []
        seen_environ, seen_start_response = app.calls[-1]
        assert seen_environ is env
        assert seen_start_response is answer.start_response
        assert answer.result is app.returned[-1]
        assert answer.status == 299
        assert answer.body == b"sentinel"
        _counts["passed_through"] += 1
    if len(app.calls) > 1000:
        app.calls.clear()
        app.returned.clear()


# -- a second property with an oracle: well-formed calls get exactly the right answer ---

descriptions = st.one_of(st.none(), printable.filter(bool), st.text(min_size=1, max_size=20))


@FUZZ
@given(
    reason=st.one_of(st.none(), st.sampled_from(list(Reason))),
    description=descriptions,
    uri=st.one_of(
        st.none(), st.sampled_from(["https://e.example/err?x=1#y", "/doc", "urn:x:y"]), printable.filter(bool)
    ),
    form=st.booleans(),
    route=st.sampled_from(["v3", "v3org", "v2"]),
)
def test_well_formed_calls_get_exactly_the_right_answer(
    reason: Reason | None, description: str | None, uri: str | None, form: bool, route: str
) -> None:
    store = WORLD.store
    mw = WORLD.oracle
    ticket = store.issue(SERVICE)
    other = store.issue(OTHER_SERVICE)
    fields: dict[str, Any] = {"ticket": ticket, "reason": reason and reason.value}
    if description is not None:
        fields["errorDescription"] = description
    if uri is not None:
        fields["errorUri"] = uri
    if form:
        body = _form({k: v for k, v in fields.items() if v is not None})
        content_type = "application/x-www-form-urlencoded"
    else:
        body = json.dumps(fields).encode()
        content_type = "application/json"
    path, auth = {
        "v3": (f"/api/{SERVICE}{SUFFIX}", BEARER_OWN),
        "v3org": (f"/api/{SERVICE}{SUFFIX}", BEARER_ORG),
        "v2": (f"/api{SUFFIX}", BASIC_OWN),
    }[route]
    answer = call(mw, environ(path=path, body=body, content_type=content_type, authorization=auth))
    data = check_contract(answer)
    _counts["oracle_requests"] += 1

    allowed = set(map(chr, range(0x20, 0x7F))) - {'"', "\\"}
    description_ok = description is None or set(description) <= allowed
    uri_ok = uri is None or uri in ("https://e.example/err?x=1#y", "/doc", "urn:x:y")
    if description_ok and uri_ok:
        effective = reason or Reason.SERVER_ERROR
        expected = {"error": effective.value.lower()}
        if description is not None:
            expected["error_description"] = description
        if uri is not None:
            expected["error_uri"] = uri
        assert answer.status == 200
        assert data["action"] == effective.action.value
        assert json.loads(data["responseContent"]) == expected
        assert not store.exists(SERVICE, ticket), "the ticket survived a successful call"
    else:
        if not description_ok:
            assert answer.status == 400
            assert data["resultCode"] == "A185202", data
            assert store.exists(SERVICE, ticket), "a rejected call deleted its ticket"
        # A printable URI may or may not be a URI-reference; either answer is the contract's.
        assert answer.status in (200, 400)
    assert store.exists(OTHER_SERVICE, other), "another service's ticket was deleted"
    store.delete(SERVICE, ticket)
    store.delete(OTHER_SERVICE, other)
