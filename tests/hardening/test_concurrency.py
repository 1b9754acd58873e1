"""Concurrency: many callers racing to fail the same tickets through gunicorn's workers.

Every caller gets the same 200 (existence is not revealed), and the audit log, written by
every worker to one file, shows each ticket deleted exactly once: the store's delete is
atomic across processes, for every backend.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _stores import opened_store
from conftest import AT_ONCE, GRANTS, SERVICE, LiveServer

from ciba_middleware import TicketStore
from ciba_middleware.stores import ticket_hash

from ._support import BEARER_OWN, STORE_KINDS, SUFFIX, report

TICKETS = 40
RACERS = 8  # concurrent calls per ticket


@pytest.fixture(params=STORE_KINDS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LiveServer, TicketStore, Path]]:
    audit = tmp_path / "audit.jsonl"
    with opened_store(request.param, request, tmp_path) as (url, store):
        env = {"CIBA_STORE_URL": url, "CIBA_TOKENS": json.dumps(GRANTS), "CIBA_AUDIT_LOG": str(audit), **AT_ONCE}
        server = LiveServer("ciba_middleware.wsgi:application", env, workers=3, extra=("--threads", "4"))
        try:
            yield server, store, audit
        finally:
            server.stop()


def test_racing_calls_delete_each_ticket_exactly_once(served: tuple[LiveServer, TicketStore, Path]) -> None:
    server, store, audit = served
    tickets = [store.issue(SERVICE) for _ in range(TICKETS)]
    bodies: Counter[bytes] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(RACERS)

    def racer() -> None:
        session = requests.Session()
        for ticket in tickets:
            barrier.wait(timeout=30)  # all racers send the same ticket at once
            try:
                response = session.post(
                    server.url + f"/api/{SERVICE}{SUFFIX}",
                    json={"ticket": ticket, "reason": "ACCESS_DENIED"},
                    headers={"Authorization": BEARER_OWN},
                    timeout=10,
                )
            except requests.RequestException as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                statuses[response.status_code] += 1
                bodies[response.content] += 1

    threads = [threading.Thread(target=racer) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert failures == []
    assert statuses == {200: TICKETS * RACERS}
    assert len(bodies) == 1, "callers could tell the winner from the losers"
    assert all(not store.exists(SERVICE, ticket) for ticket in tickets)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == TICKETS * RACERS
    deleted = Counter(r["ticket_hash"] for r in records if r["deleted"] is True)
    assert deleted == Counter({ticket_hash(t): 1 for t in tickets})
    report("race", store=store.__class__.__name__, tickets=TICKETS, racers=RACERS, calls=len(records))
