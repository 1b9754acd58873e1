"""How long and how often: the quick (smoke) profile and the full one."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int
    #: in-process calls per round
    passthrough_calls: int
    fail_calls: int
    #: seconds of load per round and variant under gunicorn
    seconds: float
    connections: int
    #: tickets issued in each shared store before the end-to-end rounds
    tickets: int
    #: seconds of fixed-rate load per variant for p50 / p99, at this rate (requests/s)
    latency_seconds: float
    rate: float
    #: calls counted for store round trips, and for RSS growth
    count_calls: int
    rss_calls: int
    #: rounds of the pass-through rows (their targets leave the least room); under gunicorn
    #: each round runs each variant for passthrough_seconds, shorter slices following the
    #: machine's load more closely
    passthrough_rounds: int
    passthrough_seconds: float
    #: live records of the large store in the token poll rows (section 4, benchmarks/records.py),
    #: and the polls timed per store size
    records_large: int
    record_polls: int
    #: seconds of load of each variant with 64 connections (section asgi's p99 rows), and of
    #: the worker under callgrind (section 3's instruction rows, after half as many to warm up)
    loaded_seconds: float
    instruction_seconds: float
    #: gunicorn workers of every server; None: one per core
    workers: int | None = None

    @property
    def server_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


QUICK = Profile(
    "quick",
    rounds=1,
    passthrough_calls=300,
    fail_calls=1000,
    seconds=0.25,
    connections=4,
    tickets=200,
    latency_seconds=0.2,
    rate=100,
    count_calls=100,
    rss_calls=500,
    passthrough_rounds=1,
    passthrough_seconds=0.25,
    records_large=10_000,
    record_polls=300,
    loaded_seconds=0.25,
    instruction_seconds=0.5,
)

FULL = Profile(
    "full",
    rounds=15,
    passthrough_calls=6000,
    fail_calls=20000,
    seconds=2,
    connections=8,
    tickets=40000,
    latency_seconds=8,
    rate=200,
    count_calls=2000,
    rss_calls=100_000,
    passthrough_rounds=40,
    passthrough_seconds=1,
    records_large=1_000_000,
    record_polls=3000,
    loaded_seconds=4,
    instruction_seconds=8,
)

PROFILES = {"quick": QUICK, "full": FULL}
