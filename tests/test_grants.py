"""``CIBA_TOKENS_FILE`` reloaded in process: :class:`ciba_middleware.grants.ReloadingVerifier`.

Over the WSGI callable (WebTest), with a real file on disk changed the ways operators change
it. The same behaviour under real servers is in ``test_reload.py``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import webtest
from conftest import SERVICE

from ciba_middleware import from_env, sha256_hex
from ciba_middleware.grants import ReloadingVerifier, first_start, read_snapshot

FAIL = f"/api/{SERVICE}/backchannel/authentication/fail"
INTERVAL = 0.2


def grants_for(*tokens: str) -> str:
    return json.dumps([{"service": SERVICE, "token_sha256": sha256_hex(token)} for token in tokens])


def write_atomically(path: Path, text: str) -> None:
    """What editors and config management do: a new file renamed over the old one."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def status_of(app: webtest.TestApp) -> Callable[[str], int]:
    def status(token: str) -> int:
        response = app.post_json(FAIL, {}, headers={"Authorization": f"Bearer {token}"}, expect_errors=True)
        return int(response.status_int)

    return status


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, webtest.TestApp]:
    path = tmp_path / "tokens.json"
    path.write_text(grants_for("old-token"))
    middleware = from_env(
        environ={
            "CIBA_STORE_URL": "memory://",
            "CIBA_TOKENS_FILE": str(path),
            "CIBA_TOKENS_RELOAD_INTERVAL": str(INTERVAL),
            "CIBA_AUDIT_LOG": "off",
        }
    )
    assert isinstance(middleware.verifier, ReloadingVerifier)
    return path, webtest.TestApp(middleware)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "write", [pytest.param(write_atomically, id="rename"), pytest.param(Path.write_text, id="in-place")]
)
def test_a_changed_file_is_in_force_within_the_interval(
    served: tuple[Path, webtest.TestApp], write: Callable[[Path, str], object]
) -> None:
    path, app = served
    status = status_of(app)
    assert (status("old-token"), status("new-token")) == (200, 401)
    write(path, grants_for("new-token"))
    started = time.monotonic()
    wait_for(lambda: (status("old-token"), status("new-token")) == (401, 200))
    assert time.monotonic() - started < INTERVAL + 1.0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b"[{", "is not valid JSON", id="json"),
        pytest.param(b"\xff\xfe[]", "is not UTF-8 text (byte 0xff at offset 0)", id="not-utf8"),
        pytest.param(b"[" * 100_000, "is nested too deeply", id="nested"),
        pytest.param(b"[]", "must be a non-empty JSON list of grants", id="empty"),
        pytest.param(
            json.dumps([{"service": SERVICE, "tokn": "x"}]).encode(), "grant #1: unknown key 'tokn'", id="typo"
        ),
    ],
)
def test_a_bad_file_is_refused_and_the_last_good_grants_stay(
    served: tuple[Path, webtest.TestApp], content: bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, app = served
    status = status_of(app)
    verifier = app.app.verifier
    path.write_bytes(content)
    wait_for(lambda: (status("old-token"), verifier.refused is not None) == (200, True))
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "ciba_middleware.grants"]
    assert len(refusals) == 1, "one line per refused file, not one per look"
    message = refusals[0].getMessage()
    assert f"CIBA_TOKENS_FILE {str(path)!r}" in message
    assert problem in message
    assert "the grants loaded before stay in force" in message
    assert verifier.failures == 1
    time.sleep(INTERVAL * 3)
    assert status("old-token") == 200
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    write_atomically(path, grants_for("new-token"))
    wait_for(lambda: (status("old-token"), status("new-token")) == (401, 200))
    assert verifier.refused is None
    assert "old-token" not in caplog.text
    assert "new-token" not in caplog.text


def test_an_in_place_write_caught_half_written_is_not_applied(
    served: tuple[Path, webtest.TestApp], caplog: pytest.LogCaptureFixture
) -> None:
    path, app = served
    status = status_of(app)
    whole = grants_for("new-token", "second-token")
    with open(path, "w") as f:
        f.write(whole[: len(whole) // 2])
        f.flush()
        # Half a file is refused: the old token still works, the new one not yet.
        wait_for(lambda: (status("old-token"), app.app.verifier.refused is not None) == (200, True))
        assert status("new-token") == 401
        f.write(whole[len(whole) // 2 :])
    wait_for(lambda: (status("old-token"), status("new-token"), status("second-token")) == (401, 200, 200))
    assert "is not valid JSON" in caplog.text


def test_interval_zero_looks_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(grants_for("old-token"))
    verifier = ReloadingVerifier(str(path), read_snapshot(str(path)), interval=0)
    write_atomically(path, grants_for("new-token"))
    time.sleep(0.1)
    assert verifier.verify_bearer("old-token") is not None
    assert verifier.reload() is True
    assert (verifier.verify_bearer("old-token"), verifier.verify_bearer("new-token") is not None) == (None, True)


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(grants_for("old-token"))
    verifier = ReloadingVerifier(str(path), read_snapshot(str(path)), interval=0)
    assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL
    write_atomically(path, grants_for("new-token"))
    os.kill(os.getpid(), signal.SIGHUP)
    wait_for(lambda: verifier.snapshot is not None and verifier.verify_bearer("new-token") is not None)
    assert verifier.verify_bearer("old-token") is None


def test_a_fork_looks_at_the_file_in_parent_and_child(tmp_path: Path) -> None:
    """What gunicorn --preload relies on: the master brings its grants up to date before
    forking a worker, and the worker looks again on its first call."""
    path = tmp_path / "tokens.json"
    path.write_text(grants_for("old-token"))
    verifier = ReloadingVerifier(str(path), read_snapshot(str(path)), interval=0)
    write_atomically(path, grants_for("new-token"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it accepts, then leave without cleanup
        os.close(read)
        os.write(write, b"new" if verifier.verify_bearer("new-token") is not None else b"old")
        os._exit(0)
    os.close(write)
    assert os.read(read, 10) == b"new"
    os.close(read)
    os.waitpid(pid, 0)
    assert verifier.verify_bearer("new-token") is not None  # the parent looked before the fork


def test_a_verifier_without_good_grants_answers_500_until_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("[{")
    verifier = ReloadingVerifier(str(path), None, interval=INTERVAL, refused="bad at start")
    middleware = from_env(
        environ={"CIBA_STORE_URL": "memory://", "CIBA_TOKENS": grants_for("x"), "CIBA_AUDIT_LOG": "off"}
    )
    middleware.api.verifier = verifier
    app = webtest.TestApp(middleware)
    answer = app.post_json(FAIL, {}, headers={"Authorization": "Bearer new-token"}, expect_errors=True)
    assert answer.status_int == 500
    assert answer.json["resultCode"] == "A185103"
    assert answer.json["action"] == "INTERNAL_SERVER_ERROR"
    assert app.get("/elsewhere", expect_errors=True).status_int == 404  # pass-through untouched
    write_atomically(path, grants_for("new-token"))
    wait_for(lambda: status_of(app)("new-token") == 200)


def test_refusals_are_counted_in_the_metrics(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    path = tmp_path / "tokens.json"
    path.write_text(grants_for("old-token"))
    middleware = from_env(
        environ={
            "CIBA_STORE_URL": "memory://",
            "CIBA_TOKENS_FILE": str(path),
            "CIBA_TOKENS_RELOAD_INTERVAL": "0",
            "CIBA_AUDIT_LOG": "off",
            "CIBA_METRICS_PATH": "/metrics",
            "CIBA_METRICS_TOKEN_SHA256": sha256_hex("metrics-token"),
        }
    )
    app = webtest.TestApp(middleware)

    def failures() -> str:
        body = app.get("/metrics", headers={"Authorization": "Bearer metrics-token"}).text
        return next(line for line in body.splitlines() if line.startswith("ciba_tokens_reload_failures_total"))

    assert failures() == "ciba_tokens_reload_failures_total 0.0"
    verifier = middleware.verifier
    assert isinstance(verifier, ReloadingVerifier)
    for bad in ("[{", "[]"):
        path.write_text(bad)
        assert verifier.reload() is False
    assert failures() == "ciba_tokens_reload_failures_total 2.0"


def test_outside_gunicorn_every_start_is_a_first_start() -> None:
    assert first_start() is True


def test_the_per_call_cost_is_a_clock_read(served: tuple[Path, webtest.TestApp]) -> None:
    """Between two looks, a call costs one monotonic clock read more than the static
    verifier; the figure is in docs/reliability.md."""
    _path, app = served
    verifier = app.app.verifier
    static = verifier.snapshot.verifier
    verifier.interval = 3600.0
    verifier._next_check = time.monotonic() + 3600

    def per_call(verify: Callable[[str], object]) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(20_000):
                verify("old-token")
            best = min(best, (time.perf_counter() - started) / 20_000)
        return best

    extra = per_call(verifier.verify_bearer) - per_call(static.verify_bearer)
    assert extra < 2e-6, f"{extra * 1e9:.0f} ns per call more than the static verifier"


def test_a_refused_file_is_validated_once_not_at_every_look(
    served: tuple[Path, webtest.TestApp], caplog: pytest.LogCaptureFixture
) -> None:
    """Its clear-text grants would otherwise log their warning every interval."""
    path, app = served
    status = status_of(app)
    path.write_text(json.dumps([{"service": SERVICE, "token": "dev-token"}, {"service": SERVICE, "tokn": "x"}]))
    wait_for(lambda: (status("old-token"), app.app.verifier.refused is not None) == (200, True))
    time.sleep(INTERVAL * 5)
    for _ in range(3):
        status("old-token")
    assert caplog.text.count("clear-text 'token'") == 1
    assert caplog.text.count("refused: ") == 1
