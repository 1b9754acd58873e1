"""Web servers on spare ports: the end-to-end rows' (one process group per variant, same settings), and the tests'."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import gunicorn

ROOT = Path(__file__).resolve().parent.parent

#: The settings every server gets (see docs/performance.md): gunicorn's default sync
#: worker, one worker per core, no access log.
WORKER_CLASS = "sync"
#: gunicorn >= 25.1 opens a control socket at one path per user, which the servers started
#: side by side would take from each other: none of them opens it.
NO_CONTROL_SOCKET = ("--no-control-socket",) if gunicorn.version_info >= (25, 1) else ()


#: Where free_port looks (use_ports); None: wherever the system gives a free one.
_ports: Iterator[int] | None = None


def use_ports(ports: range) -> None:
    """Take the ports of free_port from ``ports`` (cycling, from a random one), not from the
    system's ephemeral range: the test suite gives each of its parallel workers a range."""
    global _ports
    start = random.randrange(len(ports))
    _ports = itertools.cycle([*ports[start:], *ports[:start]])


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    if _ports is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    for _ in range(1000):
        candidate = next(_ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError("no free port in the range of use_ports")


class Process:
    """A web server process on a free port of 127.0.0.1, its output in a log file.

    ``server`` is ``gunicorn`` (a WSGI app), ``uvicorn`` or ``hypercorn`` (an ASGI app);
    ``options`` go on its command line before ``app``; ``pythonpath`` is put in front of the
    repository on its ``PYTHONPATH``; ``launcher`` runs the interpreter (e.g. under valgrind);
    ``root`` is the source tree it runs from (its working directory, first on its
    ``PYTHONPATH``): this repository, or another commit's export (:mod:`benchmarks.versus`).
    The one launcher of the tests' servers (``tests/conftest.py``'s ``LiveServer``) and the
    benchmarks' (:class:`Server`).
    """

    def __init__(
        self,
        app: str,
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        server: str = "gunicorn",
        workers: int = 1,
        options: Sequence[str] = (),
        pythonpath: Sequence[Path] = (),
        launcher: Sequence[str] = (),
        root: Path = ROOT,
    ) -> None:
        self.app = app
        self.server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        paths = [str(root), *map(str, pythonpath), full_env.get("PYTHONPATH", "")]
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        self.log_path = log_path
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (kept open for the process's life)
        self.process = subprocess.Popen(
            [*launcher, sys.executable, "-m", *_command(server, self.port, workers), *options, app],
            env=full_env,
            cwd=str(root),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 30.0) -> None:
        """Until the server answers (or raise, with its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # closes the log file: the caller never gets this server to stop
                raise RuntimeError(f"{self.server} ({self.app}) exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /__ready__ HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                if s.recv(16).startswith(b"HTTP/1."):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.server} ({self.app}) did not start within {timeout}s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def log(self, tail: int | None = None) -> str:
        """The server's log (its last ``tail`` characters when given)."""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _command(server: str, port: int, workers: int) -> list[str]:
    """The server's command line up to its own options: bound to 127.0.0.1:``port``."""
    if server == "gunicorn":
        return [
            *("gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
            *("--graceful-timeout", "5", *NO_CONTROL_SOCKET),
        ]
    if server == "uvicorn":
        return [
            *("uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--timeout-graceful-shutdown", "5", "--no-access-log"),
        ]
    if server == "hypercorn":
        return ["hypercorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    raise ValueError(f"unknown server {server!r}")


class Server(Process):
    """``gunicorn benchmarks.apps:application`` with ``BENCH_APP`` = ``app``, or another WSGI
    application given as ``wsgi`` (``app`` then only names the log); with ``asgi``, that ASGI
    application under uvicorn instead. Every server gets the settings of docs/performance.md."""

    def __init__(
        self,
        app: str,
        *,
        workers: int,
        env: Mapping[str, str] | None = None,
        log_dir: Path,
        wsgi: str = "benchmarks.apps:application",
        asgi: str | None = None,
        launcher: Sequence[str] = (),
        asgi_server: str = "uvicorn",
        root: Path = ROOT,
    ) -> None:
        full_env = {**(env or {}), "BENCH_APP": app}
        log_path = log_dir / f"{asgi_server if asgi else 'gunicorn'}-{app}-{free_port()}.log"
        if asgi is None:
            options: tuple[str, ...] = ("--worker-class", WORKER_CLASS, "--backlog", "2048")
            super().__init__(
                wsgi, log_path=log_path, env=full_env, workers=workers, options=options, launcher=launcher, root=root
            )
        else:
            # One process: uvicorn's --workers N leaves Nagle's algorithm on for every
            # connection (its shared listener has proto 0, so asyncio skips TCP_NODELAY) and
            # each keep-alive answer then waits ~40 ms for the client's delayed ACK.
            # uvicorn: its HTTP parser is httptools when installed (the [bench] extra has it).
            options = ("--backlog", "2048")
            super().__init__(asgi, log_path=log_path, env=full_env, server=asgi_server, options=options, root=root)
        self.app = app

    def log(self, tail: int | None = 4000) -> str:
        """The end of the server's log (all of it with ``tail=None``)."""
        return super().log(tail)


@contextlib.contextmanager
def servers(
    specs: Mapping[str, tuple[str, Mapping[str, str]]],
    *,
    workers: int,
    log_dir: Path,
    wsgi: str = "benchmarks.apps:application",
    asgi: str | None = None,
    launcher: Sequence[str] = (),
    timeout: float = 30.0,
    asgi_server: str = "uvicorn",
    roots: Mapping[str, Path] | None = None,
) -> Iterator[dict[str, Server]]:
    """Start one server per ``name: (app, env)``; stop them all on the way out.

    ``wsgi``, ``asgi`` and ``launcher`` are :class:`Server`'s: which application the servers
    load, and what runs them (gunicorn WSGI servers only); ``asgi_server`` (``uvicorn`` or
    ``hypercorn``) serves ``asgi``; ``roots`` names the source tree of some servers (by
    default, this repository). Each must answer within ``timeout``.
    """
    started: dict[str, Server] = {}
    try:
        for name, (app, env) in specs.items():
            started[name] = Server(
                app,
                workers=workers,
                env=env,
                log_dir=log_dir,
                wsgi=wsgi,
                asgi=asgi,
                launcher=launcher,
                asgi_server=asgi_server,
                root=(roots or {}).get(name, ROOT),
            )
        for server in started.values():  # started together, waited for in turn
            server.wait(timeout)
        yield started
    finally:
        for server in started.values():
            server.stop()


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")
