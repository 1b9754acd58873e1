"""Rotating ``CIBA_TOKENS_FILE`` under real servers, as docs/deployment.md tells operators to.

gunicorn (with and without ``--preload``, SIGHUP to the master), waitress and Werkzeug with
the Flask extension: a bad file never takes the server down, the last good grants stay, a
good file replaces them, and pass-through answers throughout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import ROOT, SERVICE, LiveServer, free_port, port_open

from benchmarks.servers import Process
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
    # Forked from the master, which kept the last good grants (--preload), or finding the
    # copy the first workers left: the last good grants either way.
    assert {fail_call(server.url, "old-token").status_code for _ in range(4)} == {200}

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


# -- every server: only the first load may refuse; later loads keep the last good grants -----

ASGI_SERVERS = {
    "hypercorn": {"server": "hypercorn", "workers": 1},
    "gunicorn-uvicorn-worker": {"extra": ("-k", "uvicorn.workers.UvicornWorker")},
    "uvicorn-workers": {"server": "uvicorn", "workers": 2},
}


def _workers(server: LiveServer) -> list[int]:
    """The server's worker processes (hypercorn's and uvicorn's spawned children too)."""
    return [pid for pid in _children(server.process.pid) if "resource_tracker" not in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.parametrize("kind", ASGI_SERVERS)
def test_a_bad_file_and_new_workers_leave_an_asgi_server_serving_the_last_good_grants(
    tmp_path: Path, live_server: Callable[..., LiveServer], kind: str
) -> None:
    """hypercorn and gunicorn's uvicorn workers replace every worker on SIGHUP, uvicorn's
    supervisor a killed one: a bad file then used to stop (or crash-loop) the server."""
    tokens, env = tokens_file_env(tmp_path, interval="0.2")
    server = live_server("_asgi_apps:application", env=env, **ASGI_SERVERS[kind])
    wait_until(lambda: statuses(server.url, "old-token", "new-token") == {(200, 401)}, log=server.log)
    first = _workers(server)
    tokens.write_text(BAD)
    wait_until(lambda: bool(statuses(server.url, "old-token")) and "refused: CIBA_TOKENS_FILE" in server.log())

    if kind == "uvicorn-workers":
        os.kill(first[0], signal.SIGKILL)
    else:
        server.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: (
            len(_workers(server)) == len(first)
            and first[0] not in _workers(server)
            and port_open("127.0.0.1", server.port)
        ),
        log=server.log,
    )
    wait_until(lambda: "the last good grants of this server stay in force" in server.log(), log=server.log)
    time.sleep(0.5)
    assert server.process.poll() is None, server.log()
    assert requests.get(server.url + "/echo", timeout=10).status_code == 200
    assert statuses(server.url, "old-token", "new-token", calls=6) == {(200, 401)}

    write_atomically(tokens, grants_for("new-token"))
    wait_until(lambda: statuses(server.url, "old-token", "new-token", calls=6) == {(401, 200)}, log=server.log)
    assert "Traceback" not in server.log()
    assert "old-token" not in server.log()


def test_the_first_start_of_a_worker_server_still_refuses_a_bad_file(tmp_path: Path) -> None:
    tokens, env = tokens_file_env(tmp_path, interval="0.2")
    tokens.write_text(BAD)
    server = Process(
        "_asgi_apps:application",
        log_path=tmp_path / "uvicorn.log",
        env=env,
        server="uvicorn",
        workers=2,
        pythonpath=[ROOT / "tests"],
    )
    try:
        # Each worker refuses the file as it starts, and exits (uvicorn starts others, which
        # refuse it again): the error is in the log, and nothing answers meanwhile.
        wait_until(lambda: "unknown key 'tokn'" in server.log(), timeout=30, log=server.log)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert not _answers(server.port), server.log()
            time.sleep(0.2)
    finally:
        server.stop()


def _answers(port: int) -> bool:
    """Whether an HTTP request to ``port`` gets an answer within a second."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        return conn.recv(16).startswith(b"HTTP/1.")
    return False


def test_django_runserver_reloaded_on_a_bad_file_keeps_the_last_good_grants(tmp_path: Path) -> None:
    """runserver's autoreloader starts a new child on a code change: a later load, not a first start."""
    tokens, env = tokens_file_env(tmp_path, interval="0.2")
    port = free_port()
    full_env = {name: value for name, value in os.environ.items() if not name.startswith("CIBA_")}
    full_env.update(env, PYTHONPATH=str(ROOT / "tests"), DJANGO_SETTINGS_MODULE="djangoproject.settings")
    log = tmp_path / "runserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"],
            env=full_env,
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=30, log=log.read_text)
        wait_until(lambda: statuses(url, "old-token", "new-token") == {(200, 401)}, log=log.read_text)
        tokens.write_text(BAD)
        # A code change: the autoreloader's child exits and a new one loads everything again.
        views = ROOT / "tests" / "djangoproject" / "views.py"
        os.utime(views)
        wait_until(lambda: log.read_text().count("Starting development server") == 2, timeout=30, log=log.read_text)
        wait_until(lambda: port_open("127.0.0.1", port), timeout=30, log=log.read_text)
        assert statuses(url, "old-token", "new-token") == {(200, 401)}, log.read_text()
        assert "the last good grants of this server stay in force" in log.read_text()
        write_atomically(tokens, grants_for("new-token"))
        wait_until(lambda: statuses(url, "old-token", "new-token") == {(401, 200)}, log=log.read_text)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def test_uwsgi_lazy_apps_a_replacement_worker_keeps_the_last_good_grants(tmp_path: Path) -> None:
    """With --lazy-apps each uWSGI worker loads the app: the one the master forks after a
    crash is a later load of the same server."""
    uwsgi = Path(sys.executable).with_name("uwsgi")
    tokens, env = tokens_file_env(tmp_path, interval="0.2")
    port = free_port()
    full_env = {name: value for name, value in os.environ.items() if not name.startswith("CIBA_")}
    full_env.update(env, PYTHONPATH=str(ROOT))
    log = tmp_path / "uwsgi.log"
    command = [str(uwsgi), "--http-socket", f"127.0.0.1:{port}", "--module", "ciba_middleware.wsgi:application"]
    command += ["--master", "--processes", "1", "--lazy-apps", "--need-app", "--die-on-term"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=full_env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=30, log=log.read_text)
        wait_until(lambda: statuses(url, "old-token", "new-token") == {(200, 401)}, log=log.read_text)
        tokens.write_text(BAD)
        (worker,) = _children(process.pid)
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: _children(process.pid) not in ([], [worker]), timeout=30, log=log.read_text)
        wait_until(lambda: "the last good grants of this server stay in force" in log.read_text(), log=log.read_text)
        assert statuses(url, "old-token", "new-token") == {(200, 401)}
        assert requests.get(url + "/elsewhere", timeout=10).status_code == 404
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)
