"""OpenTelemetry: a span per fail call, :class:`Tracing` (an observer).

Optional (``pip install "ciba-middleware[otel]"``, which brings ``opentelemetry-api``
only) and off unless enabled (``CIBA_OTEL=on``, or ``observers=[Tracing()]``). Spans go
to the tracer provider the app set up with the SDK; with none, the API's no-op provider
makes them cost next to nothing and records get no IDs.

Each call's span is named by its route template, never by the concrete service ID::

    POST /api/{serviceId}/backchannel/authentication/fail    (API v3; SERVER)
    POST /api/backchannel/authentication/fail                (API v2; SERVER)
    ciba_middleware fail                                     (in process; INTERNAL)

It joins the caller's trace: the span active when the call is made (an instrumented app
or server) or else the caller's ``traceparent`` header, through the global propagator.
Its attributes say what the call did (:data:`ATTRIBUTES`); a 5xx sets its status to
ERROR. The observer returns the event with the span's ``trace_id`` and ``span_id``, so the
audit record (an observer after it) carries them.

The span is made after the answer, from the event's start and duration: the fail API's
code runs with no tracing in it, and a call without observers builds nothing.
"""

from __future__ import annotations

import time
from typing import Any

from .errors import API_PATH, ConfigurationError
from .events import FailEvent, outcome

__all__ = ["ATTRIBUTES", "INSTALL_HINT", "IN_PROCESS_NAME", "Tracing"]

INSTALL_HINT = 'pip install "ciba-middleware[otel]"'
IN_PROCESS_NAME = "ciba_middleware fail"

#: The attributes of each span, by name: what the call did.
ATTRIBUTES = (
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "ciba.result_code",
    "ciba.action",
    "ciba.outcome",
    "ciba.reason",
    "ciba.service",
    "ciba.store.duration_ms",
)

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"))


class Tracing:
    """Record each fail call as a span (an observer; put it before the audit log).

    ::

        from ciba_middleware.otel import Tracing
        middleware = BackchannelFailMiddleware(app, store=..., verifier=..., observers=[Tracing(), AuditLog()])

    :param prefix: the API's path prefix, for the route template in the span's name.
    :param tracer_provider: where spans go; the global one (``trace.set_tracer_provider``)
        by default.
    :raises ConfigurationError: when ``opentelemetry-api`` is not installed.
    """

    def __init__(self, *, prefix: str = "", tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import propagate, trace
        except ImportError:
            raise ConfigurationError(f"tracing needs opentelemetry-api: {INSTALL_HINT}") from None
        from . import __version__

        self._trace = trace
        self._propagate = propagate
        self.tracer = trace.get_tracer("ciba_middleware", __version__, tracer_provider)
        self.routes = {"v3": f"{prefix}/api/{{serviceId}}{API_PATH}", "v2": f"{prefix}/api{API_PATH}"}

    def __call__(self, event: FailEvent) -> FailEvent | None:
        trace = self._trace
        end = time.time_ns()
        start = end - int(event.duration * 1e9)
        attributes: dict[str, Any] = {
            "ciba.result_code": event.result_code,
            "ciba.outcome": outcome(event),
        }
        if event.action is not None:
            attributes["ciba.action"] = event.action.value
        if event.reason is not None:
            attributes["ciba.reason"] = event.reason.value
        service = event.service()
        if service is not None:
            attributes["ciba.service"] = service
        if event.endpoint is not None:
            attributes["ciba.endpoint"] = event.endpoint
        if event.store_duration is not None:
            attributes["ciba.store.duration_ms"] = round(event.store_duration * 1000, 3)
        if event.route is None:
            name, kind = IN_PROCESS_NAME, trace.SpanKind.INTERNAL
        else:
            method = event.method if event.method in _METHODS else "HTTP"
            route = self.routes[event.route]
            if event.endpoint is not None:  # a route of the CIBA family
                route = route[: -len(API_PATH)] + "/" + event.endpoint
            name, kind = f"{method} {route}", trace.SpanKind.SERVER
            attributes["http.request.method"] = method if method != "HTTP" else "_OTHER"
            attributes["http.route"] = route
            attributes["http.response.status_code"] = event.status
        span = self.tracer.start_span(
            name, context=self._parent(event), kind=kind, attributes=attributes, start_time=start
        )
        if event.status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.result_code))
        span.end(end_time=end)
        context = span.get_span_context()
        # A no-op provider's span (or one sampled out) is not this call's: no IDs then.
        if isinstance(span, trace.NonRecordingSpan) or not context.is_valid:
            return None
        return event._replace(
            trace_id=trace.format_trace_id(context.trace_id), span_id=trace.format_span_id(context.span_id)
        )

    def _parent(self, event: FailEvent) -> Any:
        """The span active now, if any (an instrumented app); else the caller's traceparent."""
        if self._trace.get_current_span().get_span_context().is_valid:
            return None
        if event.traceparent:
            return self._propagate.extract({"traceparent": event.traceparent})
        return None
