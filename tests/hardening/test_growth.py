"""Nothing a caller chooses makes the process grow: unique service IDs, tickets, request IDs
and reasons, authenticated or not, leave memory and the metrics' series count flat.

The attack this guards against: a caller who cannot authenticate still picks the service ID
in the URL, the request ID and every field, so anything keyed by them (a cache, a metrics
label, a per-service table) would grow without bound.
"""

from __future__ import annotations

import gc
import json
import logging
import secrets
import tracemalloc
from collections.abc import Iterator

import pytest
from conftest import SERVICE

from ciba_middleware.audit import AuditLog
from ciba_middleware.metrics import Metrics

from ._support import BASIC_OWN, BEARER_ORG, BEARER_OWN, SUFFIX, call, environ, middleware, report

ROUND = 3000


@pytest.fixture
def audit_logger() -> logging.Logger:
    """An enabled logger (so every record's JSON is built) outside the logging tree, where
    pytest's log capture, which keeps every record, cannot attach itself."""
    logger = logging.Logger("ciba_hardening_growth_audit", logging.INFO)  # noqa: LOG001 (on purpose, see above)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _calls(n: int) -> Iterator[dict[str, object]]:
    for i in range(n):
        unique = secrets.token_urlsafe(12)
        ticket = secrets.token_urlsafe(32)
        kind = i % 6
        body = json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()
        if kind == 0:  # unauthenticated, a fresh service ID
            yield environ(path=f"/api/{unique}{SUFFIX}", authorization=f"Bearer {unique}", body=body)
        elif kind == 1:  # authenticated, a service it does not cover
            yield environ(path=f"/api/{unique}{SUFFIX}", authorization=BEARER_OWN, body=body)
        elif kind == 2:  # authenticated, a fresh ticket and request ID
            yield environ(body=body, extra={"HTTP_X_REQUEST_ID": unique})
        elif kind == 3:  # an unknown reason, echoed in the message
            bad = json.dumps({"ticket": ticket, "reason": unique}).encode()
            yield environ(path=f"/api/{SERVICE}{SUFFIX}", authorization=BEARER_ORG, body=bad)
        elif kind == 4:  # v2 with a fresh API key
            yield environ(path=f"/api{SUFFIX}", authorization=BASIC_OWN.replace("Basic ", "Basic " + "QQ"), body=body)
        else:  # a fresh charset name
            yield environ(body=body, content_type=f"application/json; charset=x-{unique}")


def test_unique_caller_values_leave_memory_and_series_flat(audit_logger: logging.Logger) -> None:
    metrics = Metrics()
    mw = middleware(observers=[metrics, AuditLog(audit_logger)])

    def series() -> int:
        return sum(len(family.samples) for family in metrics.registry.collect())

    def run() -> None:
        for env in _calls(ROUND):
            call(mw, env)

    run()  # warm-up: caches, interned strings, the first series
    gc.collect()
    tracemalloc.start()
    try:
        run()
        gc.collect()
        after_two, _ = tracemalloc.get_traced_memory()
        series_two = series()
        run()
        run()
        gc.collect()
        after_four, _ = tracemalloc.get_traced_memory()
        series_four = series()
    finally:
        tracemalloc.stop()
    growth = after_four - after_two
    report("growth", calls_per_round=ROUND, growth_bytes_over_two_rounds=growth, series=series_four)
    assert series_four == series_two, "callers created metrics series"
    assert growth < 64 * 1024, f"{growth} bytes more after {2 * ROUND} more calls"
