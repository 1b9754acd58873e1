"""Rotating ``CIBA_TOKENS_FILE`` under real servers, as docs/deployment.md tells operators to.

gunicorn (with and without ``--preload``, SIGHUP to the master), waitress and Werkzeug with
the Flask extension: a bad file never takes the server down, the last good grants stay, a
good file replaces them, and pass-through answers throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import ROOT, SERVICE, LiveServer, free_port, port_open

from ciba_middleware import sha256_hex

FAIL = f"/api/{SERVICE}/backchannel/authentication/fail"
BAD = json.dumps([{"service": SERVICE, "tokn": "typo"}])


def grants_for(*tokens: str) -> str:
    return json.dumps([{"service": SERVICE, "token_sha256": sha256_hex(token)} for token in tokens])


def write_atomically(path: Path, text: str) -> None:
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def fail_call(base: str, token: str) -> requests.Response:
    return requests.post(base + FAIL, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def statuses(base: str, *tokens: str, calls: int = 4) -> set[tuple[int, ...]]:
    """The statuses of each token, ``calls`` times over (several workers answer in turn)."""
    return {tuple(fail_call(base, token).status_code for token in tokens) for _ in range(calls)}


def wait_until(check: Callable[[], bool], timeout: float = 15.0, log: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened:\n{log()}"
        time.sleep(0.1)


def hup_and_wait(server: LiveServer, workers: int = 2) -> None:
    """SIGHUP the master and wait until the workers it starts have replaced the old ones."""
    booted, exited = server.log().count("Booting worker"), server.log().count("Worker exiting")
    server.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: (
            server.log().count("Booting worker") >= booted + workers
            and server.log().count("Worker exiting") >= exited + workers
        ),
        log=server.log,
    )
    time.sleep(0.5)


def tokens_file_env(tmp_path: Path, *, interval: str) -> tuple[Path, dict[str, str]]:
    """A tokens file granting "old-token", and the environment of a server reading it."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(grants_for("old-token"))
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}",
        "CIBA_TOKENS_FILE": str(tokens),
        "CIBA_TOKENS_RELOAD_INTERVAL": interval,
    }
    return tokens, env


@pytest.mark.parametrize("preload", [pytest.param(False, id="no-preload"), pytest.param(True, id="preload")])
def test_gunicorn_bad_file_then_good_one(tmp_path: Path, live_server: Callable[..., LiveServer], preload: bool) -> None:
    tokens, env = tokens_file_env(tmp_path, interval="0.2")
    server = live_server(env=env, workers=2, extra=("--preload",) if preload else ())
    # Both workers of the first start have read the file (one that had not would stop the
    # server on the bad file below: it is still the first start).
    time.sleep(1.0)
    assert statuses(server.url, "old-token", "new-token") == {(200, 401)}

    # A typo: refused, the old grants stay in every worker.
    tokens.write_text(BAD)
    time.sleep(0.5)
    assert statuses(server.url, "old-token") == {(200,)}
    wait_until(lambda: "refused: CIBA_TOKENS_FILE" in server.log())
    assert "grant #1: unknown key 'tokn'" in server.log()

    # SIGHUP with the bad file: new workers boot, the server stays up.
    hup_and_wait(server)
    assert server.process.poll() is None
    assert requests.get(server.url + "/elsewhere", timeout=10).status_code == 404
    answers = {fail_call(server.url, "old-token").status_code for _ in range(4)}
    if preload:
        assert answers == {200}  # forked from the master, which kept the last good grants
    else:
        # A worker started on a bad file never had good grants: the contract's 500.
        assert answers == {500}
        assert fail_call(server.url, "old-token").json()["resultCode"] == "A185103"

    # The good rotation: the old token is refused, the new one accepted, by every worker.
    write_atomically(tokens, grants_for("new-token"))
    wait_until(lambda: statuses(server.url, "old-token", "new-token") == {(401, 200)})
    assert requests.get(server.url + "/elsewhere", timeout=10).status_code == 404
    assert server.process.poll() is None
    assert "Traceback" not in server.log()
    assert "old-token" not in server.log()
    assert "new-token" not in server.log()


def test_gunicorn_preload_sighup_reads_the_file(tmp_path: Path, live_server: Callable[..., LiveServer]) -> None:
    """Under --preload the workers are forks of the master: SIGHUP used to give them the
    grants of start-up again. With looks turned off, only the SIGHUP can bring the new file."""
    tokens, env = tokens_file_env(tmp_path, interval="0")
    server = live_server(env=env, extra=("--preload",))
    assert statuses(server.url, "old-token", "new-token") == {(200, 401)}  # the worker's first look
    write_atomically(tokens, grants_for("new-token"))
    time.sleep(0.5)
    assert statuses(server.url, "old-token", "new-token") == {(200, 401)}
    hup_and_wait(server, workers=1)
    wait_until(lambda: statuses(server.url, "old-token", "new-token") == {(401, 200)})


def test_gunicorn_in_place_half_write(tmp_path: Path, live_server: Callable[..., LiveServer]) -> None:
    tokens, env = tokens_file_env(tmp_path, interval="0.2")
    server = live_server(env=env)
    whole = grants_for("new-token")
    with open(tokens, "w") as f:
        f.write(whole[:20])
        f.flush()
        wait_until(
            lambda: fail_call(server.url, "old-token").status_code == 200 and "is not valid JSON" in server.log(),
            log=server.log,
        )
        assert fail_call(server.url, "new-token").status_code == 401
        f.write(whole[20:])
    wait_until(lambda: statuses(server.url, "old-token", "new-token") == {(401, 200)})


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_gunicorn_a_later_worker_that_cannot_build_serves_degraded(
    tmp_path: Path, live_server: Callable[..., LiveServer]
) -> None:
    """Past the first start, a worker's failed boot no longer halts gunicorn."""
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}",
        "CIBA_TOKENS": grants_for("old-token"),
        "CIBA_AUDIT_LOG": str(logs / "audit.log"),
    }
    server = live_server(env=env)
    assert fail_call(server.url, "old-token").status_code == 200
    (logs / "audit.log").unlink()
    logs.rmdir()
    (worker,) = _children(server.process.pid)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: len(_children(server.process.pid)) == 1 and _children(server.process.pid) != [worker])
    wait_until(lambda: "configuration error: CIBA_AUDIT_LOG" in server.log())
    answer = fail_call(server.url, "old-token")
    assert (answer.status_code, answer.json()["resultCode"]) == (500, "A185103")
    assert requests.get(server.url + "/elsewhere", timeout=10).status_code == 404
    assert server.process.poll() is None


FLASK_APP = """\
from flask import Flask

from ciba_middleware.flask import CibaMiddleware

app = Flask(__name__)
app.config.from_prefixed_env()
CibaMiddleware(app)


@app.get("/hello")
def hello():
    return "hello from the app"
"""

SERVERS = {
    "waitress": [sys.executable, "-m", "waitress", "--listen=127.0.0.1:{port}", "flaskapp:app"],
    "werkzeug": [
        sys.executable,
        "-c",
        "import flaskapp; from werkzeug.serving import run_simple; run_simple('127.0.0.1', {port}, flaskapp.app)",
    ],
}


@pytest.fixture
def flask_server(tmp_path: Path) -> Iterator[Callable[[str, str], tuple[subprocess.Popen[bytes], str, Path]]]:
    started: list[tuple[subprocess.Popen[bytes], object]] = []

    def start(name: str, interval: str) -> tuple[subprocess.Popen[bytes], str, Path]:
        (tmp_path / "flaskapp.py").write_text(FLASK_APP)
        tokens = tmp_path / "tokens.json"
        tokens.write_text(grants_for("old-token"))
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            "FLASK_CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}",
            "FLASK_CIBA_TOKENS_FILE": str(tokens),
            "FLASK_CIBA_TOKENS_RELOAD_INTERVAL": interval,
        }
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the process's life)
        command = [part.format(port=port) for part in SERVERS[name]]
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log))
        wait_until(lambda: port_open("127.0.0.1", port) or process.poll() is not None)
        assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
        return process, f"http://127.0.0.1:{port}", tmp_path / f"{name}.log"

    yield start
    for process, log in started:
        process.terminate()
        process.wait(10)
        log.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(SERVERS))
@pytest.mark.parametrize("via", ["sighup", "looks"])
def test_other_servers_with_the_flask_extension(
    tmp_path: Path, flask_server: Callable[[str, str], tuple[subprocess.Popen[bytes], str, Path]], name: str, via: str
) -> None:
    process, base, log = flask_server(name, "0" if via == "sighup" else "0.2")
    tokens = tmp_path / "tokens.json"

    def rotate(text: str) -> None:
        write_atomically(tokens, text)
        if via == "sighup":
            # These servers leave SIGHUP alone; its default would end the process.
            process.send_signal(signal.SIGHUP)

    assert statuses(base, "old-token", "new-token", calls=1) == {(200, 401)}
    rotate(BAD)
    wait_until(
        lambda: statuses(base, "old-token", calls=1) == {(200,)} and "refused: CIBA_TOKENS_FILE" in log.read_text()
    )
    assert process.poll() is None
    assert requests.get(base + "/hello", timeout=10).text == "hello from the app"

    rotate(grants_for("new-token"))
    wait_until(lambda: statuses(base, "old-token", "new-token", calls=1) == {(401, 200)})
    assert requests.get(base + "/hello", timeout=10).text == "hello from the app"
    assert process.poll() is None
    assert "Traceback" not in log.read_text()
