"""The TicketStore contract, once per backend: memory, SQLite, Redis (TCP, Unix socket,
Cluster) and PostgreSQL, through ``store_from_url`` as the middleware builds them."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from ciba_middleware.errors import ConfigurationError
from ciba_middleware.stores import TicketStore, store_from_url, well_formed

from . import _race

OpenStore = Callable[..., TicketStore]


def test_issue_gives_a_fresh_ticket_for_its_service_only(store_url: str, open_store: OpenStore) -> None:
    store = open_store(store_url)
    first, second = store.issue("715948317", ttl=60), store.issue("715948317", ttl=60)
    assert well_formed(first)
    assert first != second
    assert store.exists("715948317", first)
    assert store.exists("715948317", second)
    assert not store.exists("42", first)


def test_delete_only_by_its_service_and_only_once(store_url: str, open_store: OpenStore) -> None:
    store = open_store(store_url)
    ticket = store.issue("715948317", ttl=60)
    assert store.delete("42", ticket) is False
    assert store.exists("715948317", ticket)
    assert store.delete("715948317", ticket) is True
    assert not store.exists("715948317", ticket)
    assert store.delete("715948317", ticket) is False


@pytest.mark.parametrize(
    "ticket",
    [
        pytest.param("A" * 43, id="well-formed-never-issued"),
        pytest.param("", id="empty"),
        pytest.param("x:y*?[]", id="glob-and-colon"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("\ud800", id="lone-surrogate"),
    ],
)
def test_a_ticket_never_issued(store_url: str, open_store: OpenStore, ticket: str) -> None:
    store = open_store(store_url)
    assert store.exists("715948317", ticket) is False
    assert store.delete("715948317", ticket) is False


@pytest.mark.parametrize(
    "service",
    [pytest.param("715948317\x00", id="nul"), pytest.param("715948317\ud800", id="lone-surrogate")],
)
def test_a_service_that_cannot_be_stored_owns_nothing(store_url: str, open_store: OpenStore, service: str) -> None:
    store = open_store(store_url)
    ticket = store.issue("715948317", ttl=60)
    assert store.exists(service, ticket) is False
    assert store.delete(service, ticket) is False
    assert store.exists("715948317", ticket) is True


@pytest.mark.parametrize(
    ("owner", "other"),
    [
        pytest.param("a:b", "a", id="colon-in-owner"),
        pytest.param("a", "a:b", id="colon-in-other"),
        pytest.param("715948317", "7159483170", id="prefix"),
        pytest.param("svc", "SVC", id="case"),
        pytest.param("é", "e", id="non-ascii"),
        pytest.param("a b", "a", id="space"),
    ],
)
def test_services_never_share_a_ticket(store_url: str, open_store: OpenStore, owner: str, other: str) -> None:
    store = open_store(store_url)
    ticket = store.issue(owner, ttl=60)
    assert store.exists(other, ticket) is False
    assert store.delete(other, ticket) is False
    assert store.exists(owner, ticket) is True
    assert store.delete(owner, ticket) is True


def test_a_ticket_expires(store_url: str, open_store: OpenStore) -> None:
    store = open_store(store_url)
    short = store.issue("715948317", ttl=0.3)
    long = store.issue("715948317", ttl=60)
    time.sleep(0.4)
    assert store.exists("715948317", short) is False
    assert store.delete("715948317", short) is False
    assert store.exists("715948317", long) is True


def test_default_ttl_is_an_option_of_every_store(store_url: str, open_store: OpenStore) -> None:
    store = open_store(store_url, default_ttl=0.3)
    ticket = store.issue("715948317")
    assert store.exists("715948317", ticket)
    time.sleep(0.4)
    assert store.exists("715948317", ticket) is False


BAD_TTLS = [
    pytest.param(0, id="zero"),
    pytest.param(-1.5, id="negative"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(1e300, id="beyond-max"),
    pytest.param(float("inf"), id="infinite"),
    pytest.param("60", id="string"),
]


@pytest.mark.parametrize("ttl", BAD_TTLS)
def test_a_ttl_must_be_positive(store_url: str, open_store: OpenStore, ttl: float) -> None:
    store = open_store(store_url)
    with pytest.raises(ValueError, match="ttl must be a number of seconds above 0"):
        store.issue("715948317", ttl=ttl)


@pytest.mark.parametrize("ttl", BAD_TTLS)
def test_a_default_ttl_must_be_positive(store_url: str, ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="default_ttl must be a number of seconds above 0"):
        store_from_url(store_url, default_ttl=ttl)


def test_ping_reaches_the_backend(store_url: str, open_store: OpenStore) -> None:
    assert open_store(store_url).ping() is None


def test_threads_racing_to_delete_one_ticket_exactly_one_wins(store_url: str, open_store: OpenStore) -> None:
    store = open_store(store_url)
    threads, rounds = 8, 20
    tickets = [store.issue("715948317", ttl=60) for _ in range(rounds)]
    barrier = threading.Barrier(threads)
    wins: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def race() -> None:
        try:
            for ticket in tickets:
                barrier.wait(10)
                if store.delete("715948317", ticket):
                    with lock:
                        wins[ticket] += 1
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=race) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert errors == []
    assert wins == dict.fromkeys(tickets, 1)


@pytest.mark.slow  # processes of their own: left to 3.11 (noxfile.SUBSET)
def test_processes_racing_to_delete_one_ticket_exactly_one_wins(shared_store_url: str, open_store: OpenStore) -> None:
    store = open_store(shared_store_url)
    processes, rounds = 4, 20
    tickets = [store.issue("715948317", ttl=60) for _ in range(rounds)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_race.delete_each, args=(shared_store_url, "715948317", tickets, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in range(processes * rounds)]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    wins = Counter(ticket for ticket, deleted in outcomes if deleted)
    assert wins == dict.fromkeys(tickets, 1)
    assert all(not store.exists("715948317", ticket) for ticket in tickets)
