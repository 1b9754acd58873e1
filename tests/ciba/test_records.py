"""The memory and SQLite stores' records (RecordStore), and the family's transitions on them
under races: one winner, tokens exactly once."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVICE
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_middleware.ciba.records import State, decode_state, encode, encode_state
from ciba_middleware.stores.base import RecordStore
from ciba_middleware.stores.memory import MemoryTicketStore
from ciba_middleware.stores.sqlite import SQLiteTicketStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    made = MemoryTicketStore() if request.param == "memory" else SQLiteTicketStore(str(tmp_path / "r.sqlite3"))
    yield made
    made.close()


def test_add_get_swap_take(store: RecordStore) -> None:
    assert store.add(SERVICE, "k", b"v1", 60)
    assert not store.add(SERVICE, "k", b"v2", 60)
    assert store.get(SERVICE, "k") == b"v1"
    assert store.get("other", "k") is None
    assert not store.swap(SERVICE, "k", b"nope", b"v2")
    assert not store.swap("other", "k", b"v1", b"v2")
    assert store.swap(SERVICE, "k", b"v1", b"v2")
    assert store.take("other", "k") is None
    assert store.take(SERVICE, "k") == b"v2"
    assert store.take(SERVICE, "k") is None
    assert store.get(SERVICE, "k") is None


def test_expiry_and_new_life(store: RecordStore) -> None:
    store.add(SERVICE, "short", b"a", 0.1)
    assert store.swap(SERVICE, "short", b"a", b"b", ttl=60)  # a new life from now
    store.add(SERVICE, "gone", b"a", 0.1)
    time.sleep(0.15)
    assert store.get(SERVICE, "short") == b"b"
    assert store.get(SERVICE, "gone") is None
    assert not store.swap(SERVICE, "gone", b"a", b"b")
    assert store.take(SERVICE, "gone") is None
    assert store.add(SERVICE, "gone", b"again", 60)  # an expired record is taken over


@pytest.mark.parametrize(
    ("key", "value"),
    [("", b"v"), ("a\nb", b"v"), ("x" * 201, b"v"), ("k", "text"), ("k", b"x" * 65537)],
)
def test_bad_keys_and_values(store: RecordStore, key: str, value: object) -> None:
    with pytest.raises(ValueError):
        store.add(SERVICE, key, value, 60)  # type: ignore[arg-type]


def test_threads_racing_on_one_swap(store: RecordStore) -> None:
    store.add(SERVICE, "race", b"0", 60)
    barrier = threading.Barrier(16)

    def swap(n: int) -> bool:
        barrier.wait()
        return store.swap(SERVICE, "race", b"0", f"v{n}".encode())  # never b"0" again

    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(swap, range(16)))
    assert won.count(True) == 1


def _take_in_a_process(path: str, start: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = SQLiteTicketStore(path)
    while time.time() < start:
        time.sleep(0.001)
    results.put(store.take(SERVICE, "once"))


def test_processes_racing_on_one_take(tmp_path: Path) -> None:
    path = str(tmp_path / "race.sqlite3")
    SQLiteTicketStore(path).add(SERVICE, "once", b"tokens", 60)
    results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    context = multiprocessing.get_context("spawn")
    start = time.time() + 2
    workers = [context.Process(target=_take_in_a_process, args=(path, start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert sorted(got, key=lambda v: v is None) == [b"tokens", None, None, None]


def test_sqlite_sweeps_expired_records(tmp_path: Path) -> None:
    store = SQLiteTicketStore(str(tmp_path / "s.sqlite3"))
    try:
        store.add(SERVICE, "old", b"v", 0.05)
        store.add(SERVICE, "new", b"v", 60)
        time.sleep(0.1)
        assert store.sweep() == 1
        assert store.get(SERVICE, "new") == b"v"
    finally:
        store.close()


def test_tokens_exactly_once_under_racing_polls(tmp_path: Path) -> None:
    """Sixteen threads exchange one authorized auth_req_id: one gets tokens."""
    import json

    from werkzeug.test import Client

    from ciba_middleware.config import Settings
    from ciba_middleware.response import not_found_app

    from ._family import family_env, signing_key
    from .test_routes import Family

    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    middleware = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    try:
        family = Family(Client(middleware))
        ticket, auth_req_id = family.start()
        family.post("backchannel/authentication/complete", {"ticket": ticket, "result": "AUTHORIZED", "subject": "a"})
        barrier = threading.Barrier(16)

        def exchange(_: int) -> str:
            barrier.wait()
            body = Family(Client(middleware)).token_call(auth_req_id)
            return str(body["action"]) if body["action"] == "OK" else json.loads(body["responseContent"])["error"]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(exchange, range(16)))
        assert sorted(answers) == ["OK", *["invalid_grant"] * 15]
    finally:
        middleware.store.close()


def test_a_request_changing_under_every_read_is_a_503(tmp_path: Path) -> None:
    """Another worker writes the request between each read and swap: after eight lost races
    the poll is answered 503 A188102, never a guess."""
    from werkzeug.test import Client

    from ciba_middleware.ciba.clients import ClientRegistry
    from ciba_middleware.ciba.family import Family as Handlers
    from ciba_middleware.ciba.family import FamilyOptions
    from ciba_middleware.ciba.keys import SigningKey
    from ciba_middleware.config import Settings
    from ciba_middleware.core import FailApi
    from ciba_middleware.middleware import BackchannelFailMiddleware
    from ciba_middleware.response import not_found_app

    from ._family import CLIENTS, family_env, signing_key
    from .test_routes import Family

    class Contended(MemoryTicketStore):
        """A memory store whose records another worker rewrites right after each read."""

        contended = False

        def get(self, service_id: str, key: str) -> bytes | None:
            value = super().get(service_id, key)
            if self.contended and value is not None and key.startswith("ciba:arid:"):
                assert super().swap(service_id, key, value, value + b" ")
            return value

    store = Contended()
    key_file = signing_key(tmp_path)[0]
    key = SigningKey.from_file(str(key_file))
    handlers = Handlers(store=store, clients=ClientRegistry(CLIENTS), key=key, options=FamilyOptions("https://op"))
    verifier = Settings.from_mapping(family_env(tmp_path, key_file)).build_verifier()
    family = Family(
        Client(
            BackchannelFailMiddleware.around(not_found_app, FailApi(store=store, verifier=verifier, family=handlers))
        )
    )
    _, auth_req_id = family.start()
    store.contended = True
    status, body = family.post(
        "auth/token",
        {
            "parameters": f"grant_type=urn:openid:params:grant-type:ciba&auth_req_id={auth_req_id}",
            "clientId": "app",
            "clientSecret": "client-secret-app",
        },
    )
    assert (status, body["resultCode"], body["action"]) == (503, "A188102", "INTERNAL_SERVER_ERROR")


def test_the_memory_store_sweeps_expired_records() -> None:
    store = MemoryTicketStore()
    for n in range(255):
        store.add(SERVICE, f"old{n}", b"v", 0.01)
    time.sleep(0.02)
    assert store.add(SERVICE, "new", b"v", 60)  # the 256th add sweeps
    assert store.get(SERVICE, "new") == b"v"
    assert all(store.get(SERVICE, f"old{n}") is None for n in range(255))
    assert len(store._records) == 1


# -- a request's state: its bytes ----------------------------------------------------------

CLIENT_IDS = st.text(st.characters(blacklist_categories=("C", "Zl", "Zp")), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["pending", "authorized", "denied", "failed", "used"]),
    CLIENT_IDS,
    st.sampled_from(["poll", "ping", "push"]),
    st.floats(min_value=0, max_value=1e10),
    st.integers(min_value=0, max_value=86400),
    st.none() | st.floats(min_value=0, max_value=1e10),
    st.dictionaries(st.text(max_size=5), st.text(max_size=8) | st.none(), max_size=3),
)
def test_a_state_reads_back_as_written(
    kind: str, client: str, mode: str, expires_at: float, interval: int, last: float | None, details: dict[str, Any]
) -> None:
    state = State(kind, client, mode, expires_at, interval, last, encode(details))
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(state)).more() == details


def test_a_state_is_tagged_text_then_json() -> None:
    state = State("pending", "app", "poll", 1797000000.25, 5, None, encode({"scopes": ["openid"]}))
    assert encode_state(state) == b'S1\tpending\tpoll\t5\t1797000000.25\t\tapp\t{"scopes":["openid"]}'


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"state":"pending","client":"app"}', id="json"),
        pytest.param(b"S2\tpending\tpoll\t5\t1.0\t\tapp\t{}", id="another-version"),
        pytest.param(b"S1\tpending\tpoll\t5\t1.0\t\tapp", id="a-field-short"),
        pytest.param(b"S1\tpending\tpoll\tfive\t1.0\t\tapp\t{}", id="not-a-number"),
    ],
)
def test_other_bytes_are_not_a_state(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_state(raw)


def test_a_poll_rewrites_when_it_was_polled_and_nothing_else(tmp_path: Path) -> None:
    """A poll with an interval swaps in its time; the details go back as they were read."""
    from werkzeug.test import Client

    from ciba_middleware.ciba.records import digest_key
    from ciba_middleware.config import Settings
    from ciba_middleware.response import not_found_app

    from ._family import family_env, signing_key
    from .test_routes import Family

    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off", CIBA_POLLING_INTERVAL="5")
    middleware = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    try:
        _, auth_req_id = Family(Client(middleware)).start()
        key = digest_key("arid", auth_req_id)
        before = middleware.store.get(SERVICE, key)  # type: ignore[attr-defined]
        assert before is not None
        assert decode_state(before).last_poll is None
        started = time.time()
        assert Family(Client(middleware)).token_call(auth_req_id)["resultCode"] == "A188304"
        after = middleware.store.get(SERVICE, key)  # type: ignore[attr-defined]
        polled = decode_state(after)
        assert polled.last_poll is not None
        assert started <= polled.last_poll <= time.time()
        assert polled._replace(last_poll=None) == decode_state(before)
        assert after.endswith(decode_state(before).details)
    finally:
        middleware.store.close()
