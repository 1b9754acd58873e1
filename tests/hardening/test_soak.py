"""The soak's short version for CI: 10 seconds under gunicorn with the Redis store.

The full soak (5 minutes at half of the measured capacity, with wrk) is
``python -m benchmarks.hardening.soak``; its figures are in docs/reliability.md. This runs
the same code with a portable Python load generator at a fixed 60 requests a second:
zero errors, every answer exact, every real ticket sent deleted and no other, no worker
replaced, nothing alarming in gunicorn's log, and no worker growing by more than 4 MiB.
"""

from __future__ import annotations

import os

from benchmarks.hardening.soak import soak

from ._support import report


def test_a_short_soak_under_gunicorn_with_redis(redis_url: str) -> None:
    seconds = float(os.environ.get("CIBA_SOAK_SECONDS", "10"))
    figures = soak(
        duration=seconds,
        fraction=None,
        rate=60,
        store_url=redis_url,
        workers=2,
        capacity_seconds=0,
        capacity_connections=0,
        connections=0,
        sample_every=1.0,
        loadgen="python",
        max_growth_mib=4.0,
    )
    result = figures["result"]
    report("soak_short", seconds=seconds, **{k: result[k] for k in ("requests", "rate", "errors", "latency_p99_us")})
    assert figures["problems"] == []
    assert result["requests"] >= 60 * seconds * 0.8
    assert result["real_tickets_sent"] > 0
    assert result["statuses"] == {"200": result["requests"]}
