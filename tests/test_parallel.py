"""The suite on pytest-xdist workers: each worker's own resources, and the groups that keep
some modules on one worker (tests/conftest.py; docs/development.md, "Tests in parallel")."""

from __future__ import annotations

import socket

import pytest
from conftest import WORKER, XDIST_GROUPS, worker_ports, worker_redis_url

from benchmarks import servers


def test_workers_take_ports_apart_and_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIBA_TEST_PORTS", raising=False)
    shares = [set(worker_ports(index, 4)) for index in range(4)]
    assert all(not a & b for i, a in enumerate(shares) for b in shares[i + 1 :])
    assert set().union(*shares) == set(range(10000, 32768))
    monkeypatch.setenv("CIBA_TEST_PORTS", "18000-18009")
    assert list(worker_ports(1, 3)) == [18001, 18004, 18007]
    assert list(worker_ports(0, 1)) == list(range(18000, 18010))


def test_free_port_skips_a_port_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        # The neighbours are ephemeral ports too: a parallel test may hold any one of them, so
        # the range is wide and the check is only that the busy port is never handed out.
        ports = range(taken, taken + 64) if taken < 65000 else range(taken - 63, taken + 1)
        monkeypatch.setattr(servers, "_ports", None)
        servers.use_ports(ports)
        given = [servers.free_port() for _ in ports]  # once round the cycle: the busy port comes up
        assert taken not in given
        assert set(given) <= set(ports)
        monkeypatch.setattr(servers, "_ports", iter([taken] * 1000))
        with pytest.raises(RuntimeError, match="no free port"):
            servers.free_port()


def test_each_worker_has_its_redis_db_unless_one_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIBA_TEST_REDIS_URL", raising=False)
    assert worker_redis_url(15, 0, 1) == "redis://127.0.0.1:6379/15"
    assert [worker_redis_url(15, i, 4) for i in range(4)] == [f"redis://127.0.0.1:6379/{db}" for db in (15, 14, 13, 12)]
    with pytest.raises(RuntimeError, match="17 workers but Redis DBs 0-15"):
        worker_redis_url(15, 0, 17)
    monkeypatch.setenv("CIBA_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    assert worker_redis_url(15, 3, 4) == "redis://127.0.0.1:6379/9"


def test_the_grouped_modules_run_first_and_as_one_group(request: pytest.FixtureRequest) -> None:
    """Under ``--dist loadgroup`` xdist keeps a group on one worker by the ``@group`` it adds
    to the node IDs; under pytest 9.2, pytest-xdist 3.8 silently stopped adding it."""
    items = request.session.items
    grouped = [item for item in items if item.get_closest_marker("xdist_group")]
    assert {item.nodeid.split("::", 1)[0] for item in grouped} <= XDIST_GROUPS.keys()
    assert items[: len(grouped)] == grouped
    if WORKER and request.config.getoption("dist") == "no":  # a worker: xdist has renamed them
        for item in grouped:
            group = item.get_closest_marker("xdist_group").args[0]  # type: ignore[union-attr]
            assert item.nodeid.endswith(f"@{group}"), item.nodeid


def test_the_store_suites_backends_can_be_narrowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import _stores

    monkeypatch.delenv("CIBA_TEST_BACKENDS", raising=False)
    assert _stores._chosen_backends() == _stores.ALL_BACKENDS
    monkeypatch.setenv("CIBA_TEST_BACKENDS", " postgresql, memory ")
    assert _stores._chosen_backends() == ["memory", "postgresql"]
    for wrong in ("memory,mongodb", " , "):
        monkeypatch.setenv("CIBA_TEST_BACKENDS", wrong)
        with pytest.raises(pytest.UsageError, match=r"^CIBA_TEST_BACKENDS=.*: name backends among memory, sqlite"):
            _stores._chosen_backends()
