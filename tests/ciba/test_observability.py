"""Every family call is an event: in the audit log (with its endpoint, never a secret) and in
the metrics; the fail call's audit line is unchanged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import SERVICE
from werkzeug.test import Client

from ciba_middleware.audit import AuditLog
from ciba_middleware.config import Settings
from ciba_middleware.events import FailEvent
from ciba_middleware.response import not_found_app

from ._family import SECRET, family_env, signing_key
from .test_routes import Family


def test_audit_records_of_the_family(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events: list[FailEvent] = []
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    middleware = Settings.from_mapping(env).build_middleware(
        not_found_app, observers=[AuditLog(logger=logging.getLogger("family.audit")), events.append], announce=False
    )
    try:
        family = Family(Client(middleware))
        with caplog.at_level(logging.INFO, logger="family.audit"):
            ticket, auth_req_id = family.start()
            family.post(
                "backchannel/authentication/complete", {"ticket": ticket, "result": "AUTHORIZED", "subject": "a"}
            )
            granted = family.token_call(auth_req_id)
            family.post("auth/introspection", {"token": granted["accessToken"]})
    finally:
        middleware.store.close()
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert [line["endpoint"] for line in lines] == [
        "backchannel/authentication",
        "backchannel/authentication/issue",
        "backchannel/authentication/complete",
        "auth/token",
        "auth/introspection",
    ]
    assert {line["event"] for line in lines} == {"ciba_api"}
    assert [line["action"] for line in lines] == ["USER_IDENTIFICATION", "OK", "NO_ACTION", "OK", "OK"]
    assert lines[0]["ticket_hash"] == lines[1]["ticket_hash"] == lines[2]["ticket_hash"] is not None
    assert all(line["service"] == SERVICE and line["outcome"] == "answered" for line in lines)
    text = caplog.text
    for secret in (ticket, auth_req_id, granted["accessToken"], SECRET):
        assert secret not in text
    assert all(event.endpoint is not None for event in events)


def test_metrics_count_family_calls(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from ciba_middleware.metrics import Metrics

    metrics = Metrics()
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    middleware = Settings.from_mapping(env).build_middleware(not_found_app, observers=[metrics], announce=False)
    try:
        Family(Client(middleware)).start()
    finally:
        middleware.store.close()
    value = metrics.registry.get_sample_value(
        "ciba_api_calls_total",
        {"service": SERVICE, "endpoint": "backchannel/authentication/issue", "action": "OK", "outcome": "answered"},
    )
    assert value == 1.0
    assert metrics.registry.get_sample_value("ciba_fail_calls_total", {}) is None


def test_a_span_per_family_call_named_by_its_route(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ciba_middleware.otel import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    middleware = Settings.from_mapping(env).build_middleware(
        not_found_app, observers=[Tracing(tracer_provider=provider)], announce=False
    )
    try:
        Family(Client(middleware)).authenticate()
    finally:
        middleware.store.close()
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /api/{serviceId}/backchannel/authentication"
    assert span.attributes is not None
    assert span.attributes["ciba.endpoint"] == "backchannel/authentication"
    assert span.attributes["ciba.action"] == "USER_IDENTIFICATION"


def test_a_family_call_the_store_failed_is_in_the_audit_log_and_the_metrics_with_its_action(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call whose store fails is answered with the route's server action, by name: the
    event carries the member, as an answered call's does, so that no observer fails on it
    and its line is not lost. The store: a Redis nothing listens for (port 1)."""
    pytest.importorskip("prometheus_client")
    pytest.importorskip("redis")
    from ciba_middleware.metrics import Metrics

    metrics = Metrics()
    env = family_env(
        tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off", CIBA_STORE_URL="redis://127.0.0.1:1/0?retries=0"
    )
    middleware = Settings.from_mapping(env).build_middleware(
        not_found_app, observers=[AuditLog(logger=logging.getLogger("family.failed")), metrics], announce=False
    )
    try:
        with caplog.at_level(logging.INFO):
            status, body = Family(Client(middleware)).post("auth/introspection", {"token": "t" * 43})
    finally:
        middleware.store.close()
    assert (status, body["action"]) == (500, "INTERNAL_SERVER_ERROR")
    assert not [r for r in caplog.records if "observer" in r.getMessage()]  # none failed
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "family.failed"]
    assert (line["endpoint"], line["action"], line["store_error"]) == (
        "auth/introspection",
        "INTERNAL_SERVER_ERROR",
        True,
    )
    value = metrics.registry.get_sample_value(
        "ciba_api_calls_total",
        {
            "service": SERVICE,
            "endpoint": "auth/introspection",
            "action": "INTERNAL_SERVER_ERROR",
            "outcome": "store_error",
        },
    )
    assert value == 1.0


def test_an_answer_action_that_is_no_api_action_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from ciba_middleware import core
    from ciba_middleware.ciba.answers import ApiAction

    assert core._api_action("BAD_REQUEST") is ApiAction.BAD_REQUEST
    assert core._api_action(None) is None
    with caplog.at_level(logging.ERROR, logger="ciba_middleware.core"):
        assert core._api_action("NOT_AN_ACTION") is None
    assert "'NOT_AN_ACTION' is not an API action" in caplog.text
