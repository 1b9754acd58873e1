"""With nothing configured, the audit line and the start-up line reach each server's stderr.

Every server a user may run the package under, as a user starts it, with only
``CIBA_TOKENS`` (and a store in a temporary directory) set: plain gunicorn, gunicorn
serving a Flask app, ``ciba-middleware serve``, ``flask run``, Werkzeug's server, uWSGI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import ROOT, SERVICE, SERVICE_TOKEN, ciba_env, free_port

from benchmarks.servers import NO_CONTROL_SOCKET
from ciba_middleware.stores import store_from_url

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
UWSGI = shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")


def _commands(port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", "2", *NO_CONTROL_SOCKET]
    return {
        "gunicorn": [*gunicorn, "ciba_middleware.wsgi:application"],
        "gunicorn-flask-app": [*gunicorn, "_apps:application"],
        "serve": [sys.executable, "-m", "ciba_middleware", "serve", "--port", str(port), "--workers", "2"],
        "flask-run": [sys.executable, "-m", "flask", "--app", "_apps", "run", "--port", str(port)],
        "werkzeug": [
            sys.executable,
            "-c",
            "from werkzeug.serving import run_simple; from ciba_middleware.wsgi import application; "
            f"run_simple('127.0.0.1', {port}, application)",
        ],
        "uwsgi": [
            UWSGI or "uwsgi",
            "--http-socket",
            bind,
            "--module",
            "ciba_middleware.wsgi:application",
            "--master",
            "--processes",
            "2",
            "--need-app",
            "--die-on-term",
        ],
    }


@contextlib.contextmanager
def _server(name: str, env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Start server ``name``; yield its URL and the file its stderr goes to."""
    port = free_port()
    full_env = {**os.environ, **env}
    full_env.pop("CIBA_AUDIT_LOG", None)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(out, "wb") as out_file, open(err, "wb") as err_file:
        process = subprocess.Popen(
            _commands(port)[name], env=full_env, cwd=str(ROOT / "tests"), stdout=out_file, stderr=err_file
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{err.read_text()}")
            try:
                requests.get(url + "/__ready__", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url, err
    finally:
        process.send_signal(signal.SIGINT if name in ("flask-run", "werkzeug") else signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        assert "{" not in out.read_text(errors="replace"), f"{name} wrote audit lines to stdout"


def _fail(url: str, body: dict[str, str]) -> int:
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    return requests.post(url + V3, json=body, headers=headers, timeout=10).status_code


def _records(err: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{")]


SERVERS = [
    pytest.param(name, id=name)
    for name in ("gunicorn", "gunicorn-flask-app", "serve", "flask-run", "werkzeug", "uwsgi")
]


@pytest.mark.parametrize("name", SERVERS)
def test_the_audit_line_and_the_start_up_line_reach_stderr(name: str, tmp_path: Path) -> None:
    if name == "uwsgi" and UWSGI is None:
        pytest.fail("uwsgi is not installed: pip install -e '.[test]'")
    env = ciba_env(tmp_path)
    ticket = store_from_url(env["CIBA_STORE_URL"]).issue(SERVICE)
    with _server(name, env, tmp_path) as (url, err):
        assert _fail(url, {"ticket": ticket, "reason": "ACCESS_DENIED"}) == 200
        # The line is written before the answer is sent; the server may still hold it.
        deadline = time.monotonic() + 5
        while not _records(err) and time.monotonic() < deadline:
            time.sleep(0.05)
    (record,) = _records(err)
    assert (record["service"], record["outcome"], record["reason"]) == (SERVICE, "deleted", "ACCESS_DENIED")
    text = err.read_text()
    start_up = [line for line in text.splitlines() if "fail API at POST /api/{serviceId}" in line]
    assert start_up, text
    assert "5 grants covering 3 services; audit records to stderr" in start_up[0]
    assert SERVICE_TOKEN not in text
    assert ticket not in text


@pytest.mark.parametrize("name", [pytest.param("gunicorn", id="gunicorn"), pytest.param("uwsgi", id="uwsgi")])
def test_lines_of_concurrent_workers_are_never_torn(name: str, tmp_path: Path) -> None:
    if name == "uwsgi" and UWSGI is None:
        pytest.fail("uwsgi is not installed: pip install -e '.[test]'")
    env = ciba_env(tmp_path)
    calls = 400
    body = {"reason": "ACCESS_DENIED"}
    with _server(name, env, tmp_path) as (url, err), ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _fail(url, body), range(calls)))
        assert statuses == [200] * calls
        deadline = time.monotonic() + 5
        while len(_records(err)) < calls and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = err.read_text().splitlines()
    audit = [line for line in lines if '"event":"ciba_fail"' in line]
    assert len(audit) == calls
    assert all(line.startswith('{"time":') and line.endswith("}") for line in audit)
    assert len({json.loads(line)["request_id"] for line in audit}) == calls
