"""``middleware.fail()``: the wrapped app fails a request without HTTP."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import GRANTS, SERVICE

from ciba_middleware import (
    Action,
    BackchannelFailMiddleware,
    FailEvent,
    FailResponse,
    InvalidParameter,
    Reason,
    StaticTokenVerifier,
)
from ciba_middleware.stores import store_from_url

SUCCESS = "[A185001] Successfully generated an error response for the backchannel authentication request."


def not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [])
    return []


@pytest.fixture
def events() -> list[FailEvent]:
    return []


@pytest.fixture
def middleware(events: list[FailEvent]) -> BackchannelFailMiddleware:
    return BackchannelFailMiddleware(
        not_found,
        store=store_from_url("memory://"),
        verifier=StaticTokenVerifier(GRANTS),
        observers=[events.append],
    )


def test_fail_deletes_the_ticket_and_answers_like_the_api(
    middleware: BackchannelFailMiddleware, events: list[FailEvent]
) -> None:
    ticket = middleware.store.issue(SERVICE)
    response = middleware.fail(SERVICE, ticket, Reason.ACCESS_DENIED, "The user said no", "https://as.example/e")
    assert response == FailResponse(
        "A185001",
        SUCCESS,
        Action.FORBIDDEN,
        '{"error":"access_denied","error_description":"The user said no","error_uri":"https://as.example/e"}',
    )
    assert response.ok
    assert response.to_dict() == {
        "resultCode": "A185001",
        "resultMessage": SUCCESS,
        "action": "FORBIDDEN",
        "responseContent": response.response_content,
    }
    assert not middleware.store.exists(SERVICE, ticket)
    (event,) = events
    assert event.via == "in_process"
    assert event.deleted is True
    assert event.reason is Reason.ACCESS_DENIED
    assert event.ticket_hash is not None
    assert ticket not in repr(event)


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param(Reason.INVALID_BINDING_MESSAGE, id="enum"),
        pytest.param("INVALID_BINDING_MESSAGE", id="name"),
        pytest.param(enum.Enum("AuthleteReason", "INVALID_BINDING_MESSAGE").INVALID_BINDING_MESSAGE, id="dto-enum"),
    ],
)
def test_reason_forms(middleware: BackchannelFailMiddleware, reason: Any) -> None:
    response = middleware.fail(SERVICE, reason=reason)
    assert response.action is Action.BAD_REQUEST
    assert response.response_content == '{"error":"invalid_binding_message"}'


def test_defaults_to_server_error(middleware: BackchannelFailMiddleware) -> None:
    response = middleware.fail(SERVICE)
    assert response.action is Action.INTERNAL_SERVER_ERROR
    assert response.response_content == '{"error":"server_error"}'


def test_a_ticket_of_another_service_stays(middleware: BackchannelFailMiddleware) -> None:
    ticket = middleware.store.issue("42")
    assert middleware.fail(SERVICE, ticket, "ACCESS_DENIED").ok
    assert middleware.store.exists("42", ticket)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        pytest.param({"reason": "DENIED"}, "reason", "'reason' is \"DENIED\", which is not one of", id="reason"),
        pytest.param({"reason": 3}, "reason", "'reason' must be a string or null, not a number.", id="reason-type"),
        pytest.param({"ticket": b"t"}, "ticket", "'ticket' must be a string or null, not bytes.", id="ticket-bytes"),
        pytest.param({"error_description": "a\nb"}, "errorDescription", "(U+000A) at index 1", id="description"),
        pytest.param({"error_uri": "not a uri"}, "errorUri", "(U+0020) at index 3", id="uri"),
    ],
)
def test_bad_arguments_raise(
    middleware: BackchannelFailMiddleware, kwargs: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=re.escape(message)) as info:
        middleware.fail(SERVICE, **kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_a_failing_store_still_gives_the_client_an_answer(tmp_path: Path, events: list[FailEvent]) -> None:
    path = tmp_path / "t.sqlite3"
    store = store_from_url(f"sqlite:///{path}")
    ticket = store.issue(SERVICE)
    store.close()
    path.unlink()
    path.mkdir()
    middleware = BackchannelFailMiddleware(
        not_found, store=store, verifier=StaticTokenVerifier(GRANTS), observers=[events.append]
    )
    response = middleware.fail(SERVICE, ticket, Reason.ACCESS_DENIED)
    assert response.result_code == "A185101"
    assert not response.ok
    assert response.action is Action.INTERNAL_SERVER_ERROR
    assert response.response_content == '{"error":"server_error"}'
    assert events[0].store_error


def test_an_observer_that_raises_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: FailEvent) -> None:
        raise RuntimeError("observer bug")

    middleware = BackchannelFailMiddleware(
        not_found, store=store_from_url("memory://"), verifier=StaticTokenVerifier(GRANTS), observers=[broken]
    )
    assert middleware.fail(SERVICE, reason="ACCESS_DENIED").ok
    assert "observer" in caplog.text


def test_a_403_event_names_who_tried(events: list[FailEvent], middleware: BackchannelFailMiddleware) -> None:
    import webtest

    answer = webtest.TestApp(middleware).post_json(
        f"/api/{SERVICE}/backchannel/authentication/fail",
        {"reason": "ACCESS_DENIED"},
        headers={"Authorization": "Bearer service-token-42"},
        expect_errors=True,
    )
    assert answer.status_int == 403
    (event,) = events
    assert event.auth_failure == "not_covered"
    assert event.principal is not None
    assert event.principal.id == "42"
    assert event.service_id == SERVICE


def test_an_http_event_has_every_field_in_its_place(
    events: list[FailEvent], middleware: BackchannelFailMiddleware
) -> None:
    import webtest
    from conftest import SERVICE_TOKEN

    from ciba_middleware.stores.base import ticket_hash

    ticket = middleware.store.issue(SERVICE)
    webtest.TestApp(middleware).post_json(
        f"/api/{SERVICE}/backchannel/authentication/fail",
        {"ticket": ticket, "reason": "ACCESS_DENIED"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Request-Id": "req-7", "traceparent": "tp"},
        extra_environ={"REMOTE_ADDR": "192.0.2.7"},
    )
    (event,) = events
    # Built positionally for speed: every field must be where its name says.
    assert len(event) == len(FailEvent._fields)
    fields = event._asdict()
    principal, duration, store_duration = fields.pop("principal"), fields.pop("duration"), fields.pop("store_duration")
    assert principal is not None
    assert principal.id == SERVICE
    assert 0 < store_duration < duration
    assert fields == {
        "via": "http",
        "route": "v3",
        "service_id": SERVICE,
        "status": 200,
        "result_code": "A185001",
        "reason": "ACCESS_DENIED",
        "action": "FORBIDDEN",
        "ticket_hash": ticket_hash(ticket),
        "deleted": True,
        "auth_failure": None,
        "store_error": False,
        "client_addr": "192.0.2.7",
        "request_id": "req-7",
        "method": "POST",
        "traceparent": "tp",
        "trace_id": None,
        "span_id": None,
        "endpoint": None,
    }
