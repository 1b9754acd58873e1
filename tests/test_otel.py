"""OpenTelemetry: one span per fail call, named by its route, in the caller's trace, with the
audit record carrying its IDs. Checked with the SDK's in-memory exporter."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import webtest
from conftest import SERVICE, SERVICE_TOKEN, ciba_env
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from ciba_middleware import ConfigurationError, Settings, not_found_app
from ciba_middleware.audit import AUDIT_LOGGER, AuditLog
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.otel import IN_PROCESS_NAME, Tracing

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def audit_lines(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, object]]]]:
    """The audit records logged so far, parsed."""
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        yield lambda: [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]


def _middleware(tmp_path: Path, provider: TracerProvider, prefix: str = "") -> BackchannelFailMiddleware:
    settings = Settings.from_mapping(ciba_env(tmp_path, CIBA_AUDIT_LOG="off", CIBA_PATH_PREFIX=prefix))
    site = settings.build_api(observers=[Tracing(prefix=prefix, tracer_provider=provider)])
    site.api.observers = (*site.api.observers, AuditLog())
    return BackchannelFailMiddleware.around(not_found_app, site)


def test_a_span_per_call_named_by_the_route_in_the_callers_trace(
    tmp_path: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    audit_lines: Callable[[], list[dict[str, object]]],
) -> None:
    middleware = _middleware(tmp_path, provider, prefix="/authlete")
    ticket = middleware.store.issue(SERVICE)
    client = webtest.TestApp(middleware)
    client.post_json(
        f"/authlete/api/{SERVICE}/backchannel/authentication/fail",
        {"ticket": ticket, "reason": "ACCESS_DENIED"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "traceparent": TRACEPARENT},
    )
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /authlete/api/{serviceId}/backchannel/authentication/fail"
    assert span.kind is trace.SpanKind.SERVER
    assert trace.format_trace_id(span.context.trace_id) == CALLER_TRACE
    assert span.parent is not None
    assert trace.format_span_id(span.parent.span_id) == CALLER_SPAN
    attributes = dict(span.attributes or {})
    store_ms = attributes.pop("ciba.store.duration_ms")
    assert isinstance(store_ms, float)
    assert 0 <= store_ms < 5000
    assert attributes == {
        "ciba.result_code": "A185001",
        "ciba.outcome": "deleted",
        "ciba.action": "FORBIDDEN",
        "ciba.reason": "ACCESS_DENIED",
        "ciba.service": SERVICE,
        "http.request.method": "POST",
        "http.route": "/authlete/api/{serviceId}/backchannel/authentication/fail",
        "http.response.status_code": 200,
    }
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= span.end_time
    (record,) = audit_lines()
    assert record["trace_id"] == CALLER_TRACE
    assert record["span_id"] == trace.format_span_id(span.context.span_id)


def test_the_asgi_middleware_joins_the_callers_trace_too(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from test_asgi import answer, call, http_scope

    from ciba_middleware import asgi

    wsgi = _middleware(tmp_path, provider)
    middleware = asgi.BackchannelFailMiddleware.around(asgi.not_found_app, wsgi.api)
    body = b'{"reason":"ACCESS_DENIED"}'
    headers = {
        "Authorization": f"Bearer {SERVICE_TOKEN}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "traceparent": TRACEPARENT,
    }
    sent = call(middleware, http_scope(f"/api/{SERVICE}/backchannel/authentication/fail", headers=headers), [body])
    assert answer(sent)[0] == 200
    (span,) = exporter.get_finished_spans()
    assert trace.format_trace_id(span.context.trace_id) == CALLER_TRACE
    assert span.parent is not None
    assert trace.format_span_id(span.parent.span_id) == CALLER_SPAN


def test_refused_calls_never_name_the_service_they_claim(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    client = webtest.TestApp(_middleware(tmp_path, provider))
    client.post_json("/api/made-up-9/backchannel/authentication/fail", {}, expect_errors=True)
    client.post_json("/api/backchannel/authentication/fail", {}, expect_errors=True)
    first, second = exporter.get_finished_spans()
    assert first.name == "POST /api/{serviceId}/backchannel/authentication/fail"
    assert second.name == "POST /api/backchannel/authentication/fail"
    for span in (first, second):
        assert "made-up-9" not in span.name + json.dumps(dict(span.attributes or {}))
        assert (span.attributes or {})["ciba.outcome"] == "rejected"
    # Without a traceparent, a new trace.
    assert first.parent is None


def test_a_store_error_is_an_error_span(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    middleware = _middleware(tmp_path, provider)
    middleware.store.close()
    (tmp_path / "tickets.sqlite3").unlink()
    (tmp_path / "tickets.sqlite3").mkdir()
    middleware.fail(SERVICE, "t" * 43)
    (span,) = exporter.get_finished_spans()
    assert span.name == IN_PROCESS_NAME
    assert span.kind is trace.SpanKind.INTERNAL
    assert (span.attributes or {})["ciba.outcome"] == "store_error"
    assert isinstance((span.attributes or {})["ciba.store.duration_ms"], float)
    assert span.status.status_code is trace.StatusCode.ERROR


def test_in_process_inside_the_apps_span(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    middleware = _middleware(tmp_path, provider)
    with provider.get_tracer("app").start_as_current_span("the app's request") as outer:
        middleware.fail(SERVICE)
    inner = next(s for s in exporter.get_finished_spans() if s.name == IN_PROCESS_NAME)
    # No ticket, no store call: no store latency.
    assert "ciba.store.duration_ms" not in (inner.attributes or {})
    assert inner.parent is not None
    assert inner.parent.span_id == outer.get_span_context().span_id


def test_no_ids_when_nothing_is_recorded(tmp_path: Path, audit_lines: Callable[[], list[dict[str, object]]]) -> None:
    middleware = _middleware(tmp_path, TracerProvider(sampler=ALWAYS_OFF))
    middleware.fail(SERVICE)
    (record,) = audit_lines()
    assert "trace_id" not in record


def test_ciba_otel_on_puts_tracing_first(tmp_path: Path) -> None:
    settings = Settings.from_mapping(ciba_env(tmp_path, CIBA_OTEL="on"))
    observers = settings.build_middleware(not_found_app).observers
    assert [type(o).__name__ for o in observers] == ["Tracing", "AuditLog"]
    assert Settings.from_mapping(ciba_env(tmp_path)).otel is False


def test_bad_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping(ciba_env(tmp_path, CIBA_OTEL="yes"))
    assert str(info.value) == "CIBA_OTEL must be on or off, not 'yes'"


def test_without_the_api_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    settings = Settings.from_mapping(ciba_env(tmp_path, CIBA_OTEL="on"))
    with pytest.raises(ConfigurationError) as info:
        settings.build_middleware(not_found_app)
    assert str(info.value) == 'CIBA_OTEL: tracing needs opentelemetry-api: pip install "ciba-middleware[otel]"'
