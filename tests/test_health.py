"""The health endpoint: 200 when the store answers a ping in time, 503 otherwise, never cached."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import webtest
from conftest import LiveServer, ciba_env
from stores.conftest import PrivateRedis

from ciba_middleware import ConfigurationError, Settings, not_found_app
from ciba_middleware.health import CACHED_SECONDS, HealthMiddleware, StoreProbe
from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.memory import MemoryTicketStore


def _health(tmp_path: Path, **env: str) -> webtest.TestApp:
    settings = Settings.from_mapping(ciba_env(tmp_path, CIBA_HEALTH_PATH="/healthz", **env))
    return webtest.TestApp(settings.build_middleware(not_found_app))


def test_over_gunicorn_with_the_default_store(live_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    server = live_server(env=ciba_env(tmp_path, CIBA_HEALTH_PATH="/healthz"), workers=2)
    response = requests.get(server.url + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"store": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    head = requests.head(server.url + "/healthz", timeout=10)
    assert (head.status_code, head.content) == (200, b"")
    assert requests.get(server.url + "/healthz/", timeout=10).status_code == 404


def test_other_methods_and_paths(tmp_path: Path) -> None:
    client = _health(tmp_path)
    refused = client.post("/healthz", expect_errors=True)
    assert (refused.status_code, refused.headers["Allow"]) == (405, "GET, HEAD")
    assert client.get("/healthz?verbose=1").json == {"store": "ok"}
    assert client.get("/other", expect_errors=True).status_code == 404


def test_503_within_the_bound_when_the_store_hangs_then_200_again() -> None:
    redis = PrivateRedis()
    try:
        store = store_from_url(redis.url + "?socket_timeout=5&retries=0")
        client = webtest.TestApp(HealthMiddleware(not_found_app, store=store, path="/healthz", timeout=0.3))
        assert client.get("/healthz").json == {"store": "ok"}
        redis.pause()
        time.sleep(CACHED_SECONDS)
        started = time.monotonic()
        answer = client.get("/healthz", expect_errors=True)
        elapsed = time.monotonic() - started
        assert (answer.status_code, answer.json) == (503, {"store": "unavailable"})
        assert answer.headers["Cache-Control"] == "no-store"
        assert elapsed < 0.3 + 0.5, elapsed
        # While that ping is still out, probes answer 503 on time without starting another.
        assert client.get("/healthz", expect_errors=True).status_code == 503
        redis.pause(False)
        deadline = time.monotonic() + 10
        while client.get("/healthz", expect_errors=True).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        redis.close()
        time.sleep(CACHED_SECONDS)
        assert client.get("/healthz", expect_errors=True).status_code == 503
    finally:
        redis.close()


class _CountingStore(MemoryTicketStore):
    pings = 0

    def ping(self) -> None:
        self.pings += 1
        super().ping()


def test_one_ping_serves_the_probes_of_a_second() -> None:
    store = _CountingStore()
    probe = StoreProbe(store, timeout=1)
    assert all(probe.healthy() for _ in range(200))
    assert store.pings == 1
    time.sleep(CACHED_SECONDS + 0.05)
    assert probe.healthy()
    assert store.pings == 2


def test_the_start_up_line_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="ciba_middleware.config"):
        _health(tmp_path, CIBA_HEALTH_TIMEOUT="0.5")
    assert [r.getMessage() for r in caplog.records if r.name == "ciba_middleware.config"][-1].endswith(
        "; health at /healthz"
    )


BAD = [
    pytest.param(
        {"CIBA_HEALTH_PATH": "healthz"},
        "CIBA_HEALTH_PATH: the health path must look like /healthz, not 'healthz'",
        id="relative",
    ),
    pytest.param(
        {"CIBA_HEALTH_PATH": "/x/backchannel/authentication/fail"},
        "CIBA_HEALTH_PATH: the health path must not end with /backchannel/authentication/fail, "
        "the fail API's own routes",
        id="api-path",
    ),
    pytest.param(
        {"CIBA_HEALTH_TIMEOUT": "2"},
        "CIBA_HEALTH_TIMEOUT is set but CIBA_HEALTH_PATH is not: the health endpoint is off",
        id="timeout-alone",
    ),
    pytest.param(
        {"CIBA_HEALTH_PATH": "/h", "CIBA_HEALTH_TIMEOUT": "soon"},
        "CIBA_HEALTH_TIMEOUT must be a number of seconds above 0 and at most 60, not 'soon'",
        id="timeout-word",
    ),
    pytest.param(
        {"CIBA_HEALTH_PATH": "/h", "CIBA_HEALTH_TIMEOUT": "0"},
        "CIBA_HEALTH_TIMEOUT must be a number of seconds above 0 and at most 60, not '0'",
        id="timeout-zero",
    ),
    pytest.param(
        {"CIBA_HEALTH_PATH": "/h", "CIBA_HEALTH_TIMEOUT": "61"},
        "CIBA_HEALTH_TIMEOUT must be a number of seconds above 0 and at most 60, not '61'",
        id="timeout-long",
    ),
    pytest.param(
        {"CIBA_HEALTH_PATH": "/m", "CIBA_METRICS_PATH": "/m", "CIBA_METRICS_TOKEN_SHA256": "a" * 64},
        "CIBA_HEALTH_PATH must differ from CIBA_METRICS_PATH, both are '/m'",
        id="same-as-metrics",
    ),
]


@pytest.mark.parametrize(("environ", "message"), BAD)
def test_bad_values_name_the_variable(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping(ciba_env(tmp_path, **environ))
    assert str(info.value) == message
