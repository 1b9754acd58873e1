"""Property test of the in-process API, ``middleware.fail(...)``, on every real store.

For any text as service ID and any values of the documented types (text, a Reason, a
reason's name, None), ``fail`` returns a FailResponse or raises InvalidParameter: no other
exception, whatever the backend makes of NUL, surrogates or a 10,000-character ID. A ticket
is deleted only when the call succeeds and only in the service named.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from _stores import opened_store
from conftest import SERVICE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciba_middleware import FailResponse, InvalidParameter, Reason, TicketStore

from ._support import STORE_KINDS, middleware

EXAMPLES = max(50, int(os.environ.get("CIBA_FUZZ_EXAMPLES", "1500")) // 10)

texts = st.one_of(
    st.none(),
    st.text(max_size=50),
    st.text(st.characters(codec="utf-8"), min_size=32, max_size=64),
    st.text(st.sampled_from("ABCxyz019-_"), min_size=30, max_size=130),
    st.sampled_from(["", "\x00", "\ud800", "a" * 10_000]),
)
reasons = st.one_of(
    st.none(), st.sampled_from(list(Reason)), st.sampled_from([r.value for r in Reason]), st.text(max_size=20)
)
services = st.one_of(
    st.just(SERVICE), st.text(max_size=40), st.sampled_from(["", "\x00", "\ud800\udfff", "x" * 10_000])
)


@pytest.fixture(scope="module", params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TicketStore]:
    with opened_store(request.param, request, tmp_path_factory.mktemp("fail")) as (_, opened):
        yield opened


def test_fail_returns_an_answer_or_raises_invalid_parameter(store: TicketStore) -> None:
    mw = middleware(store=store)
    live = store.issue(SERVICE)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(service=services, ticket=st.one_of(texts, st.just(live)), reason=reasons, description=texts, uri=texts)
    def check(service: str, ticket: Any, reason: Any, description: Any, uri: Any) -> None:
        nonlocal live
        try:
            response = mw.fail(service, ticket, reason, description, uri)
        except InvalidParameter:
            assert store.exists(SERVICE, live)
            return
        assert isinstance(response, FailResponse)
        assert response.ok, response
        if ticket == live and service == SERVICE:
            assert not store.exists(SERVICE, live)
            live = store.issue(SERVICE)
        assert store.exists(SERVICE, live)

    check()
