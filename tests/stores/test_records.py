"""The RecordStore contract (the CIBA family's compare-and-swap records), once per backend:
memory, SQLite, Redis (TCP, TLS, Unix socket, Cluster) and PostgreSQL (TCP, Unix socket),
through ``store_from_url`` as the middleware builds them; and the races, threads and
processes on one record, where exactly one caller may win each time."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from ciba_middleware.stores import TicketStore
from ciba_middleware.stores.base import MAX_RECORD_VALUE, RecordStore

from . import _race

OpenStore = Callable[..., TicketStore]
SERVICE = "715948317"


def records(store: TicketStore) -> RecordStore:
    assert isinstance(store, RecordStore), f"{type(store).__name__} keeps no records"
    return store


@pytest.fixture
def store(store_url: str, open_store: OpenStore) -> RecordStore:
    return records(open_store(store_url))


# -- add, get, swap, take ---------------------------------------------------------------------


def test_add_creates_a_record_once(store: RecordStore) -> None:
    assert store.add(SERVICE, "areq:1", b'{"state":"pending"}', 60) is True
    assert store.add(SERVICE, "areq:1", b"other", 60) is False
    got = store.get(SERVICE, "areq:1")
    assert type(got) is bytes
    assert got == b'{"state":"pending"}'


def test_an_absent_record(store: RecordStore) -> None:
    assert store.get(SERVICE, "nothing") is None
    assert store.swap(SERVICE, "nothing", b"", b"x") is False
    assert store.swap(SERVICE, "nothing", b"x", b"y", ttl=60) is False
    assert store.take(SERVICE, "nothing") is None
    # Nothing was created by the failed swaps.
    assert store.get(SERVICE, "nothing") is None


def test_swap_replaces_only_the_expected_value(store: RecordStore) -> None:
    store.add(SERVICE, "k", b"pending", 60)
    assert store.swap(SERVICE, "k", b"pendin", b"x") is False
    assert store.swap(SERVICE, "k", b"pending ", b"x") is False
    assert store.swap(SERVICE, "k", b"PENDING", b"x") is False
    assert store.swap(SERVICE, "k", b"", b"x") is False
    assert store.get(SERVICE, "k") == b"pending"
    assert store.swap(SERVICE, "k", b"pending", b"authorized") is True
    assert store.get(SERVICE, "k") == b"authorized"
    # The old value no longer matches: a second caller with it loses.
    assert store.swap(SERVICE, "k", b"pending", b"authorized") is False
    assert store.swap(SERVICE, "k", b"authorized", b"authorized") is True
    assert store.get(SERVICE, "k") == b"authorized"


def test_an_empty_value_is_a_record(store: RecordStore) -> None:
    assert store.add(SERVICE, "empty", b"", 60) is True
    assert store.get(SERVICE, "empty") == b""
    assert store.add(SERVICE, "empty", b"x", 60) is False
    assert store.swap(SERVICE, "empty", b"", b"full") is True
    assert store.swap(SERVICE, "empty", b"full", b"") is True
    assert store.take(SERVICE, "empty") == b""
    assert store.get(SERVICE, "empty") is None


def test_take_gives_the_value_once(store: RecordStore) -> None:
    store.add(SERVICE, "token:abc", b"grant", 60)
    assert store.take(SERVICE, "token:abc") == b"grant"
    assert store.take(SERVICE, "token:abc") is None
    assert store.get(SERVICE, "token:abc") is None
    assert store.swap(SERVICE, "token:abc", b"grant", b"again") is False
    # Taken, the key is free again.
    assert store.add(SERVICE, "token:abc", b"new", 60) is True
    assert store.get(SERVICE, "token:abc") == b"new"


@pytest.mark.parametrize(
    ("owner", "other", "owner_key", "other_key"),
    [
        pytest.param(SERVICE, "42", "k", "k", id="other-service"),
        pytest.param("a:b", "a", "c", "b:c", id="colon-in-service"),
        pytest.param("a", "a:b", "b:c", "c", id="colon-in-key"),
        pytest.param("a", "a:1", "1:b", "b", id="length-like"),
        pytest.param(SERVICE, SERVICE + "0", "k", "k", id="prefix"),
        pytest.param("svc", "SVC", "k", "k", id="case"),
        pytest.param("é", "e", "k", "k", id="non-ascii"),
        pytest.param("a b", "a", "k", "k", id="space"),
        pytest.param(SERVICE, SERVICE + "\x00", "k", "k", id="nul"),
        pytest.param(SERVICE, SERVICE + "\ud800", "k", "k", id="lone-surrogate"),
    ],
)
def test_services_never_share_a_record(
    store: RecordStore, owner: str, other: str, owner_key: str, other_key: str
) -> None:
    assert store.add(owner, owner_key, b"mine", 60) is True
    assert store.get(other, other_key) is None
    assert store.swap(other, other_key, b"mine", b"stolen") is False
    assert store.swap(other, other_key, b"mine", b"stolen", ttl=60) is False
    assert store.take(other, other_key) is None
    assert store.get(owner, owner_key) == b"mine"
    assert store.take(owner, owner_key) == b"mine"


def test_two_services_keep_records_under_the_same_key_apart(store: RecordStore) -> None:
    assert store.add(SERVICE, "client:1", b"first", 60) is True
    assert store.add("42", "client:1", b"second", 60) is True
    assert store.swap("42", "client:1", b"second", b"changed") is True
    assert store.get(SERVICE, "client:1") == b"first"
    assert store.take(SERVICE, "client:1") == b"first"
    assert store.get("42", "client:1") == b"changed"


def test_records_and_tickets_never_meet(store: RecordStore) -> None:
    tickets: Any = store
    ticket = tickets.issue(SERVICE, ttl=60)
    assert store.get(SERVICE, ticket) is None
    assert store.add(SERVICE, ticket, b"record", 60) is True
    assert store.take(SERVICE, ticket) == b"record"
    assert tickets.exists(SERVICE, ticket) is True
    assert tickets.delete(SERVICE, ticket) is True
    assert store.add(SERVICE, ticket, b"again", 60) is True
    assert tickets.exists(SERVICE, ticket) is False
    # Nor the replay cache's claims.
    assert tickets.claim("jti-7", 60) is True
    assert store.add(SERVICE, "jti-7", b"x", 60) is True
    assert tickets.claim("jti-7", 60) is False


# -- expiry ---------------------------------------------------------------------------------


def test_an_expired_record_is_absent_to_every_method(store: RecordStore) -> None:
    store.add(SERVICE, "short", b"v", 0.3)
    store.add(SERVICE, "long", b"v", 60)
    time.sleep(0.45)
    assert store.get(SERVICE, "short") is None
    assert store.swap(SERVICE, "short", b"v", b"w") is False
    assert store.swap(SERVICE, "short", b"v", b"w", ttl=60) is False
    assert store.take(SERVICE, "short") is None
    assert store.get(SERVICE, "long") == b"v"
    # The key of an expired record is free for a new one.
    assert store.add(SERVICE, "short", b"new", 60) is True
    assert store.get(SERVICE, "short") == b"new"


def test_swap_without_ttl_keeps_the_expiry(store: RecordStore) -> None:
    store.add(SERVICE, "k", b"1", 0.8)
    time.sleep(0.1)
    assert store.swap(SERVICE, "k", b"1", b"2") is True
    assert store.swap(SERVICE, "k", b"2", b"3", ttl=None) is True
    time.sleep(0.3)
    assert store.get(SERVICE, "k") == b"3"
    time.sleep(0.55)  # 0.95 s after the add: gone, however often it was swapped
    assert store.get(SERVICE, "k") is None


def test_swap_with_ttl_gives_a_new_life(store: RecordStore) -> None:
    store.add(SERVICE, "longer", b"1", 0.4)
    store.add(SERVICE, "shorter", b"1", 60)
    assert store.swap(SERVICE, "longer", b"1", b"2", ttl=60) is True
    assert store.swap(SERVICE, "shorter", b"1", b"2", ttl=0.3) is True
    time.sleep(0.5)
    assert store.get(SERVICE, "longer") == b"2"
    assert store.get(SERVICE, "shorter") is None


def test_a_failed_swap_changes_no_expiry(store: RecordStore) -> None:
    store.add(SERVICE, "k", b"1", 0.4)
    assert store.swap(SERVICE, "k", b"other", b"2", ttl=60) is False
    time.sleep(0.5)
    assert store.get(SERVICE, "k") is None


# -- values and keys ------------------------------------------------------------------------

EVERY_BYTE = bytes(range(256))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(EVERY_BYTE, id="every-byte"),
        pytest.param(b"\xff\xfe\x00" * 100, id="not-utf8"),
        pytest.param(b"x" * MAX_RECORD_VALUE, id="64KiB"),
        pytest.param((EVERY_BYTE * 257)[:MAX_RECORD_VALUE], id="64KiB-binary"),
    ],
)
def test_values_come_back_byte_for_byte(store: RecordStore, value: bytes) -> None:
    assert store.add(SERVICE, "v", value, 60) is True
    assert store.get(SERVICE, "v") == value
    assert store.swap(SERVICE, "v", value[:-1], b"no") is False
    assert store.swap(SERVICE, "v", value, value[::-1]) is True
    assert store.swap(SERVICE, "v", value[::-1], value, ttl=60) is True
    assert store.take(SERVICE, "v") == value


TOO_BIG = b"x" * (MAX_RECORD_VALUE + 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(TOO_BIG, "must be at most 65536 bytes, not 65537", id="too-big"),
        pytest.param("text", "must be bytes, not str", id="str"),
        pytest.param(bytearray(b"x"), "must be bytes, not bytearray", id="bytearray"),
        pytest.param(memoryview(b"x"), "must be bytes, not memoryview", id="memoryview"),
        pytest.param(None, "must be bytes, not NoneType", id="none"),
    ],
)
def test_a_bad_value_is_a_value_error_and_changes_nothing(store: RecordStore, value: Any, message: str) -> None:
    store.add(SERVICE, "k", b"v", 60)
    with pytest.raises(ValueError, match=f"a record value {message}"):
        store.add(SERVICE, "new", value, 60)
    with pytest.raises(ValueError, match=f"a record value {message}"):
        store.swap(SERVICE, "k", b"v", value)
    with pytest.raises(ValueError, match=f"a record expected value {message}"):
        store.swap(SERVICE, "k", value, b"w")
    assert store.get(SERVICE, "new") is None
    assert store.get(SERVICE, "k") == b"v"


GOOD_KEYS = [
    pytest.param("k", id="one-character"),
    pytest.param("k" * 200, id="200-characters"),
    pytest.param("".join(map(chr, range(0x20, 0x7F))), id="every-printable"),
    pytest.param("x:y*?[]{tag}", id="glob-colon-hashtag"),
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_every_printable_key_works(store: RecordStore, key: str) -> None:
    assert store.add(SERVICE, key, b"v", 60) is True
    assert store.get(SERVICE, key) == b"v"
    assert store.swap(SERVICE, key, b"v", b"w") is True
    assert store.take(SERVICE, key) == b"w"
    assert store.get(SERVICE, key[:-1] or "other") is None


BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("k" * 201, id="201-characters"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("é", id="non-ascii"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param(b"key", id="bytes"),
    pytest.param(None, id="none"),
    pytest.param(7, id="int"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_bad_key_is_a_value_error_for_every_method(store: RecordStore, key: Any) -> None:
    message = "a record key must be 1-200 printable ASCII characters"
    with pytest.raises(ValueError, match=message):
        store.add(SERVICE, key, b"v", 60)
    with pytest.raises(ValueError, match=message):
        store.get(SERVICE, key)
    with pytest.raises(ValueError, match=message):
        store.swap(SERVICE, key, b"v", b"w")
    with pytest.raises(ValueError, match=message):
        store.take(SERVICE, key)


BAD_TTLS = [
    pytest.param(0, id="zero"),
    pytest.param(-1.5, id="negative"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(1e300, id="beyond-max"),
    pytest.param(float("inf"), id="infinite"),
    pytest.param("60", id="string"),
    pytest.param(True, id="bool"),
]


@pytest.mark.parametrize("ttl", BAD_TTLS)
def test_a_bad_ttl_is_a_value_error_and_changes_nothing(store: RecordStore, ttl: Any) -> None:
    store.add(SERVICE, "k", b"v", 60)
    with pytest.raises(ValueError, match="ttl must be a number of seconds above 0"):
        store.add(SERVICE, "new", b"v", ttl)
    with pytest.raises(ValueError, match="ttl must be a number of seconds above 0"):
        store.swap(SERVICE, "k", b"v", b"w", ttl=ttl)
    assert store.get(SERVICE, "new") is None
    assert store.get(SERVICE, "k") == b"v"


# -- races: threads -------------------------------------------------------------------------

THREADS, ROUNDS = 8, 20


def _in_threads(work: Callable[[int], None], threads: int = THREADS) -> None:
    """``work(index)`` in ``threads`` threads at once; any exception fails the test."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []


@pytest.mark.parametrize("operation", ["add", "add-over-expired", "swap", "swap-ttl", "take"])
def test_threads_racing_on_one_record_exactly_one_wins(store: RecordStore, operation: str) -> None:
    keys = [f"race:{i}" for i in range(ROUNDS)]
    if operation == "add-over-expired":
        # Each key holds a record that has just expired: the racers' adds take it over.
        for key in keys:
            store.add(SERVICE, key, b"expired", 0.05)
        time.sleep(0.1)
        operation = "add"
    elif operation != "add":
        for key in keys:
            store.add(SERVICE, key, b"pending", 60)
    barrier = threading.Barrier(THREADS)
    wins: Counter[str] = Counter()
    winners: dict[str, bytes] = {}
    lock = threading.Lock()

    def race(index: int) -> None:
        mine = b"thread-%d" % index
        for key in keys:
            try:
                barrier.wait(20)
            except threading.BrokenBarrierError:
                return
            try:
                won = _race.attempt(store, operation, SERVICE, key, mine)
            except BaseException:
                barrier.abort()
                raise
            if won:
                with lock:
                    wins[key] += 1
                    winners[key] = mine

    _in_threads(race)
    assert wins == dict.fromkeys(keys, 1)
    for key in keys:
        assert store.get(SERVICE, key) == (None if operation == "take" else winners[key])


def test_threads_counting_up_by_compare_and_swap_lose_no_update(store: RecordStore) -> None:
    """Each increment reads the value and swaps it for the next: a swap that lost a race
    reads again. Any double win would lose an increment."""
    per_thread = 25
    store.add(SERVICE, "counter", b"0", 60)
    tries: list[int] = []

    def count(_: int) -> None:
        tries.append(_race.count_up(store, SERVICE, "counter", per_thread))

    _in_threads(count)
    assert store.get(SERVICE, "counter") == str(THREADS * per_thread).encode()
    assert sum(tries) >= THREADS * per_thread


# -- races: processes -----------------------------------------------------------------------


@pytest.fixture
def shared_store(shared_store_url: str, open_store: OpenStore) -> tuple[str, RecordStore]:
    return shared_store_url, records(open_store(shared_store_url))


def _in_processes(target: Callable[..., None], processes: int, *args: Any) -> list[Any]:
    """``target(*args, barrier, results)`` in ``processes`` spawned processes; what they put."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [context.Process(target=target, args=(*args, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes: list[Any] = []
    try:
        for _ in range(processes):
            outcome = results.get(timeout=90)
            assert not isinstance(outcome, str), outcome  # a worker's error, as text
            outcomes.extend(outcome)
    finally:
        for worker in workers:
            worker.join(30)
    assert [worker.exitcode for worker in workers] == [0] * processes
    return outcomes


@pytest.mark.slow  # processes of their own: left to 3.11 (noxfile.SUBSET)
@pytest.mark.parametrize("operation", ["add", "swap", "take"])
def test_processes_racing_on_one_record_exactly_one_wins(shared_store: tuple[str, RecordStore], operation: str) -> None:
    url, store = shared_store
    keys = [f"race:{i}" for i in range(ROUNDS)]
    if operation != "add":
        for key in keys:
            store.add(SERVICE, key, b"pending", 60)
    outcomes = _in_processes(_race.race_records, 4, url, SERVICE, keys, operation)
    wins = Counter(key for key, won in outcomes if won)
    assert len(outcomes) == 4 * ROUNDS
    assert wins == dict.fromkeys(keys, 1)
    for key in keys:
        value = store.get(SERVICE, key)
        if operation == "take":
            assert value is None
        else:
            assert value is not None
            assert value.startswith(b"process-")


@pytest.mark.slow  # processes of their own: left to 3.11 (noxfile.SUBSET)
def test_processes_counting_up_by_compare_and_swap_lose_no_update(shared_store: tuple[str, RecordStore]) -> None:
    url, store = shared_store
    per_process = 25
    store.add(SERVICE, "counter", b"0", 60)
    outcomes = _in_processes(_race.count_up_in_process, 4, url, SERVICE, "counter", per_process)
    assert len(outcomes) == 4
    assert store.get(SERVICE, "counter") == str(4 * per_process).encode()
