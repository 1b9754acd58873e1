"""Prometheus metrics: the counters, the protected endpoint over gunicorn, multi-process mode."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import webtest
from conftest import (
    API_SECRET,
    GRANTS,
    ORG_TOKEN,
    OTHER_TOKEN,
    SERVICE,
    SERVICE_TOKEN,
    LiveServer,
    basic,
    bearer,
    ciba_env,
    free_port,
)
from prometheus_client.parser import text_string_to_metric_families

from ciba_middleware import (
    BackchannelFailMiddleware,
    ConfigurationError,
    Reason,
    Settings,
    StaticTokenVerifier,
    not_found_app,
    sha256_hex,
)
from ciba_middleware.metrics import Metrics, MetricsMiddleware
from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.base import new_ticket

METRICS_TOKEN = "metrics-token-for-tests"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return ciba_env(
        tmp_path,
        CIBA_METRICS_PATH="/metrics",
        CIBA_METRICS_TOKEN_SHA256=sha256_hex(METRICS_TOKEN),
        CIBA_AUDIT_LOG="off",
        **overrides,
    )


def samples(text: str, prefix: str = "ciba_fail_") -> Samples:
    """Every sample of our series, keyed by name and sorted labels; ``_created`` left out."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def calls(found: Samples) -> dict[tuple[str, str, str, str], float]:
    """``ciba_fail_calls_total`` as {(service, reason, action, outcome): count}."""
    return {
        (labels["service"], labels["reason"], labels["action"], labels["outcome"]): value
        for (name, pairs), value in found.items()
        if name == "ciba_fail_calls_total"
        for labels in [dict(pairs)]
    }


def scrape(url: str) -> Samples:
    response = requests.get(url + "/metrics", headers=METRICS_AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return samples(response.text)


def post(url: str, path: str, headers: dict[str, str], body: dict[str, str]) -> requests.Response:
    return requests.post(url + path, headers=headers, json=body, timeout=10)


# -- counts over real HTTP ------------------------------------------------------------


def test_counts_by_service_reason_action_outcome_over_gunicorn(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    env = metrics_env(tmp_path)
    server = live_server(env=env)
    store = store_from_url(env["CIBA_STORE_URL"])
    first, second = store.issue(SERVICE), store.issue(SERVICE)
    url = server.url
    answers = [
        post(url, V3, bearer(SERVICE_TOKEN), {"ticket": first, "reason": "ACCESS_DENIED"}),
        post(url, V3, bearer(SERVICE_TOKEN), {"ticket": first, "reason": "ACCESS_DENIED"}),
        post(url, V3, bearer(ORG_TOKEN), {"reason": "UNKNOWN_USER_ID"}),
        post(url, V2, basic(SERVICE, API_SECRET), {"ticket": second, "reason": "INVALID_TARGET"}),
        post(url, V3, bearer(SERVICE_TOKEN), {"reason": "NOT_A_REASON"}),
        post(url, V3, {}, {"reason": "ACCESS_DENIED"}),
        post(url, V3, bearer(OTHER_TOKEN), {"reason": "ACCESS_DENIED"}),
        post(url, V2, basic(SERVICE, "wrong secret"), {}),
        # Unauthenticated callers choosing service IDs: none may become a label value.
        *(post(url, f"/api/attacker-{i}/backchannel/authentication/fail", bearer("nope"), {}) for i in range(20)),
    ]
    assert [a.status_code for a in answers[:8]] == [200, 200, 200, 200, 400, 401, 403, 401]
    assert {a.status_code for a in answers[8:]} == {401}

    response = requests.get(url + "/metrics", headers=METRICS_AUTH, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == TEXT_FORMAT
    assert response.headers["Cache-Control"] == "no-store"
    found = samples(response.text)
    assert calls(found) == {
        (SERVICE, "ACCESS_DENIED", "FORBIDDEN", "deleted"): 1.0,
        (SERVICE, "ACCESS_DENIED", "FORBIDDEN", "not_found"): 1.0,
        (SERVICE, "UNKNOWN_USER_ID", "BAD_REQUEST", "no_ticket"): 1.0,
        (SERVICE, "INVALID_TARGET", "BAD_REQUEST", "deleted"): 1.0,
        (SERVICE, "", "INTERNAL_SERVER_ERROR", "rejected"): 1.0,
        ("", "", "", "rejected"): 23.0,
    }
    assert found[("ciba_fail_auth_failures_total", (("kind", "missing"),))] == 1.0
    assert found[("ciba_fail_auth_failures_total", (("kind", "not_covered"),))] == 1.0
    assert found[("ciba_fail_auth_failures_total", (("kind", "invalid"),))] == 21.0
    assert found[("ciba_fail_store_errors_total", ())] == 0.0
    assert found[("ciba_fail_duration_seconds_count", (("via", "http"),))] == 28.0
    assert found[("ciba_fail_duration_seconds_bucket", (("le", "+Inf"), ("via", "http")))] == 28.0
    assert 0.0 < found[("ciba_fail_duration_seconds_sum", (("via", "http"),))] < 28.0
    for secret in ("attacker", first, second, SERVICE_TOKEN, ORG_TOKEN, API_SECRET, METRICS_TOKEN):
        assert secret not in response.text


# -- the endpoint ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer("ciba_middleware.wsgi:application", metrics_env(tmp_path_factory.mktemp("metrics")))
    yield server
    server.stop()


UNAUTHORIZED = (401, {"WWW-Authenticate": 'Bearer realm="ciba-middleware-metrics"'}, b"unauthorized\n")


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "expected_headers", "body"),
    [
        pytest.param("GET", "/metrics", {}, *UNAUTHORIZED, id="no-credentials"),
        pytest.param("GET", "/metrics", bearer("wrong"), *UNAUTHORIZED, id="wrong-token"),
        pytest.param("GET", "/metrics", bearer(METRICS_TOKEN + "x"), *UNAUTHORIZED, id="token-plus-one-char"),
        pytest.param("GET", "/metrics", bearer(SERVICE_TOKEN), *UNAUTHORIZED, id="fail-api-token-is-not-enough"),
        pytest.param("GET", "/metrics", basic("prometheus", METRICS_TOKEN), *UNAUTHORIZED, id="basic-scheme"),
        pytest.param("GET", "/metrics", {"Authorization": "Bearer"}, *UNAUTHORIZED, id="bearer-without-token"),
        pytest.param(
            "POST",
            "/metrics",
            METRICS_AUTH,
            405,
            {"Allow": "GET, HEAD", "Content-Type": "text/plain; charset=utf-8"},
            b"use GET\n",
            id="post",
        ),
        pytest.param("GET", "/metrics/", METRICS_AUTH, 404, {}, b'{"error":"not_found"}', id="trailing-slash"),
        pytest.param("GET", "/metricsx", METRICS_AUTH, 404, {}, b'{"error":"not_found"}', id="longer-path"),
        pytest.param("GET", "/", METRICS_AUTH, 404, {}, b'{"error":"not_found"}', id="other-path"),
    ],
)
def test_endpoint_answers(
    metrics_server: LiveServer,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    expected_headers: dict[str, str],
    body: bytes,
) -> None:
    response = requests.request(method, metrics_server.url + path, headers=headers, timeout=10)
    assert response.status_code == status
    for name, value in expected_headers.items():
        assert response.headers[name] == value
    assert response.content == body


@pytest.mark.parametrize(
    ("method", "path", "accept", "content_type"),
    [
        pytest.param("GET", "/metrics", "", TEXT_FORMAT, id="get"),
        pytest.param("GET", "/metrics?name[]=x", "", TEXT_FORMAT, id="query-ignored"),
        pytest.param(
            "GET",
            "/metrics",
            "application/openmetrics-text; version=1.0.0",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
            id="openmetrics",
        ),
        pytest.param("HEAD", "/metrics", "", TEXT_FORMAT, id="head"),
    ],
)
def test_endpoint_serves_with_its_token(
    metrics_server: LiveServer, method: str, path: str, accept: str, content_type: str
) -> None:
    headers = {**METRICS_AUTH, "Accept": accept} if accept else METRICS_AUTH
    response = requests.request(method, metrics_server.url + path, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    if method == "HEAD":
        assert response.content == b""
        assert int(response.headers["Content-Length"]) > 0
    elif "openmetrics" in content_type:
        assert "# TYPE ciba_fail_calls counter\n" in response.text
        assert response.text.endswith("# EOF\n")
    else:
        assert "# TYPE ciba_fail_calls_total counter\n" in response.text
        assert "# TYPE ciba_fail_duration_seconds histogram\n" in response.text


def test_metrics_path_is_the_apps_when_metrics_are_off(tmp_path: Path) -> None:
    app = Settings.from_mapping(ciba_env(tmp_path, CIBA_AUDIT_LOG="off")).build_middleware(not_found_app)
    response = webtest.TestApp(app).get("/metrics", headers=METRICS_AUTH, expect_errors=True)
    assert (response.status_int, response.body) == (404, b'{"error":"not_found"}')
    assert app.observers == ()


def test_clear_token_works_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = ciba_env(tmp_path, CIBA_METRICS_PATH="/internal/metrics", CIBA_METRICS_TOKEN=METRICS_TOKEN)
    with caplog.at_level(logging.WARNING, logger="ciba_middleware.config"):
        settings = Settings.from_mapping(env)
    assert settings.metrics_token_sha256 == sha256_hex(METRICS_TOKEN)
    assert [r.getMessage() for r in caplog.records if r.name == "ciba_middleware.config"] == [
        "CIBA_METRICS_TOKEN is in clear text; set CIBA_METRICS_TOKEN_SHA256 outside development"
    ]
    assert METRICS_TOKEN not in repr(settings)
    client = webtest.TestApp(settings.build_middleware(not_found_app))
    assert client.get("/internal/metrics", headers=METRICS_AUTH).status_int == 200
    assert client.get("/metrics", headers=METRICS_AUTH, expect_errors=True).status_int == 404


# -- in process: outcomes the HTTP test cannot reach cheaply --------------------------


def test_in_process_calls_and_store_errors_are_counted() -> None:
    metrics = Metrics()
    verifier = StaticTokenVerifier(GRANTS)
    good = BackchannelFailMiddleware(
        not_found_app, store=store_from_url("memory://"), verifier=verifier, observers=[metrics]
    )
    ticket = good.store.issue("in-app-service")
    # A Redis store on a port nobody listens on: a real, failing backend.
    broken = BackchannelFailMiddleware(
        not_found_app,
        store=store_from_url(f"redis://127.0.0.1:{free_port()}/0"),
        verifier=verifier,
        observers=[metrics],
    )

    assert good.fail("in-app-service", ticket, Reason.ACCESS_DENIED).result_code == "A185001"
    assert broken.fail(SERVICE, new_ticket(), "INVALID_USER_CODE").result_code == "A185101"
    http = webtest.TestApp(broken).post_json(
        V3, {"ticket": new_ticket()}, headers=bearer(SERVICE_TOKEN), expect_errors=True
    )
    assert http.status_int == 500

    found = samples(metrics.render()[0].decode())
    assert calls(found) == {
        ("in-app-service", "ACCESS_DENIED", "FORBIDDEN", "deleted"): 1.0,
        (SERVICE, "INVALID_USER_CODE", "INTERNAL_SERVER_ERROR", "store_error"): 1.0,
        (SERVICE, "SERVER_ERROR", "INTERNAL_SERVER_ERROR", "store_error"): 1.0,
    }
    assert found[("ciba_fail_store_errors_total", ())] == 2.0
    assert found[("ciba_fail_duration_seconds_count", (("via", "in_process"),))] == 2.0
    assert found[("ciba_fail_duration_seconds_count", (("via", "http"),))] == 1.0


def test_two_metrics_objects_do_not_clash() -> None:
    first, second = Metrics(), Metrics()
    assert first.registry is not second.registry


# -- configuration --------------------------------------------------------------------

DIGEST = sha256_hex(METRICS_TOKEN)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"CIBA_METRICS_PATH": "/metrics"},
            "CIBA_METRICS_PATH is set but neither CIBA_METRICS_TOKEN_SHA256 nor CIBA_METRICS_TOKEN: "
            "the metrics endpoint needs a token of its own",
            id="path-without-token",
        ),
        pytest.param(
            {"CIBA_METRICS_TOKEN_SHA256": DIGEST},
            "a metrics token is set but CIBA_METRICS_PATH is not: metrics are off",
            id="token-without-path",
        ),
        pytest.param(
            {"CIBA_METRICS_PATH": "/metrics", "CIBA_METRICS_TOKEN_SHA256": DIGEST, "CIBA_METRICS_TOKEN": "x"},
            "set CIBA_METRICS_TOKEN_SHA256 or CIBA_METRICS_TOKEN, not both",
            id="both-tokens",
        ),
        pytest.param(
            {"CIBA_METRICS_PATH": "/metrics", "CIBA_METRICS_TOKEN_SHA256": "abc"},
            "CIBA_METRICS_TOKEN_SHA256 must be 64 hexadecimal digits (a SHA-256)",
            id="short-digest",
        ),
        pytest.param(
            {"CIBA_METRICS_PATH": "metrics", "CIBA_METRICS_TOKEN_SHA256": DIGEST},
            "CIBA_METRICS_PATH: the metrics path must look like /metrics, not 'metrics'",
            id="relative-path",
        ),
        pytest.param(
            {"CIBA_METRICS_PATH": "/metrics?x", "CIBA_METRICS_TOKEN_SHA256": DIGEST},
            "CIBA_METRICS_PATH: the metrics path must look like /metrics, not '/metrics?x'",
            id="query-in-path",
        ),
        pytest.param(
            {"CIBA_METRICS_PATH": "/api/backchannel/authentication/fail", "CIBA_METRICS_TOKEN_SHA256": DIGEST},
            "CIBA_METRICS_PATH: the metrics path must not end with /backchannel/authentication/fail, "
            "the fail API's own routes",
            id="fail-route",
        ),
    ],
)
def test_configuration_errors_name_the_variable(tmp_path: Path, overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping(ciba_env(tmp_path, **overrides))
    assert str(info.value) == message


def test_missing_prometheus_client_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_mapping(
        ciba_env(tmp_path, CIBA_METRICS_PATH="/metrics", CIBA_METRICS_TOKEN_SHA256=DIGEST, CIBA_AUDIT_LOG="off")
    )
    # None in sys.modules makes `import prometheus_client` raise ImportError, as when not installed.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError) as info:
        settings.build_middleware(not_found_app)
    assert str(info.value) == (
        'CIBA_METRICS_PATH: metrics need prometheus_client: pip install "ciba-middleware[metrics]"'
    )


def test_multiprocess_dir_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigurationError, match=r"^PROMETHEUS_MULTIPROC_DIR='.*absent' is not a directory"):
        Metrics()


def test_multiprocess_dir_set_after_import_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # prometheus_client is already imported in this process, without the variable.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="was set after prometheus_client was imported"):
        Metrics()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"path": "/m"}, "give exactly one of token_sha256 and token", id="no-token"),
        pytest.param({"path": "/m", "token": "a", "token_sha256": DIGEST}, "give exactly one", id="both"),
        pytest.param({"path": "/m", "token": ""}, "must not be empty", id="empty-token"),
        pytest.param({"path": "/m", "token_sha256": "zz"}, "64 hexadecimal digits", id="bad-digest"),
        pytest.param({"path": "//m", "token_sha256": DIGEST}, "must look like /metrics", id="double-slash"),
    ],
)
def test_metrics_middleware_checks_its_options(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MetricsMiddleware(not_found_app, metrics=Metrics(), **kwargs)  # type: ignore[arg-type]


# -- gunicorn with two workers --------------------------------------------------------


def worker_pids(directory: Path) -> set[int]:
    """The workers that wrote counter files (prometheus_client names them by pid)."""
    return {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("counter_*.db")}


def fail_calls(url: str, count: int) -> None:
    def one(_: int) -> int:
        return post(url, V3, bearer(SERVICE_TOKEN), {"reason": "ACCESS_DENIED"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(count))) == {200}


def total(found: Samples) -> float:
    return calls(found).get((SERVICE, "ACCESS_DENIED", "FORBIDDEN", "no_ticket"), 0.0)


def test_two_gunicorn_workers_add_up_and_survive_a_worker_restart(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("from ciba_middleware.metrics import child_exit  # noqa: F401\n")
    env = metrics_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(directory))
    server = live_server(env=env, workers=2, extra=("--config", str(config)))

    sent = 0
    while len(worker_pids(directory)) < 2:
        assert sent < 400, f"one worker took every request: {worker_pids(directory)}"
        fail_calls(server.url, 40)
        sent += 40
    # Each scrape lands on either worker; every one must report both workers' counts.
    for _ in range(6):
        assert total(scrape(server.url)) == sent

    victim = min(worker_pids(directory))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while f"Worker (pid:{victim})" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    fail_calls(server.url, 40)
    sent += 40
    for _ in range(6):
        assert total(scrape(server.url)) == sent
    found = scrape(server.url)
    assert found[("ciba_fail_duration_seconds_count", (("via", "http"),))] == sent
    assert "Traceback" not in server.log()


def test_a_principal_not_covering_the_service_labels_nothing() -> None:
    metrics = Metrics()
    verifier = StaticTokenVerifier(GRANTS)
    app = BackchannelFailMiddleware(
        not_found_app, store=store_from_url("memory://"), verifier=verifier, observers=[metrics]
    )
    client = webtest.TestApp(app)
    # Authenticated as service 42, calling for 715948317: 403, and the label stays empty.
    client.post_json(V3, {}, headers=bearer(OTHER_TOKEN), expect_errors=True)
    assert calls(samples(metrics.render()[0].decode())) == {("", "", "", "rejected"): 1.0}
