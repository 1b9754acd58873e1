"""Servers of the tests' own, on spare ports of 127.0.0.1, which a test may kill or pause.

The machine's shared Redis (6379) and PostgreSQL (5432) are never touched: outage, restart
and topology tests start these instead. PostgreSQL refuses to run as root, so as root it runs
as the ``postgres`` user. A missing binary skips the test locally and fails it under
``CI=true`` (``conftest.unreachable``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from conftest import free_port, port_open, unreachable

__all__ = ["PrivatePostgres", "PrivateRedis", "PrivateRedisCluster", "PrivateSentinel", "find_binary", "wait_port"]


def redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.RedisError,)


def find_binary(name: str, *candidates: str) -> str:
    for candidate in (shutil.which(name), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unreachable(f"{name} is not installed")
    raise AssertionError("unreachable")


def wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, 0.2) == up:
            return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'} within {timeout}s")


def _wait_unix_socket(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                time.sleep(0.02)
            else:
                return
    raise RuntimeError(f"{path} did not listen within {timeout}s")


class PrivateRedis:
    """A ``redis-server`` of our own on a spare port (and a Unix socket), without persistence."""

    def __init__(self, *extra: str) -> None:
        self.binary = find_binary("redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="ciba-redis-"))
        self.port = free_port()
        self.socket = self.dir / "redis.sock"
        self.extra = extra
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(self.socket),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port, up=True)
            if self.process.poll() is not None:
                # Another process's listener answered on the port: ours could not bind it.
                raise RuntimeError(f"redis-server exited at start (port {self.port} taken?)")
            # The Unix socket listens a moment after the TCP port does.
            _wait_unix_socket(self.socket)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        """Die as in a crash: SIGKILL, connections reset, nothing saved."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(5)
        wait_port(self.port, up=False)

    def pause(self, paused: bool = True) -> None:
        """Freeze (or thaw) the server: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def client(self) -> Any:
        """A redis-py client of this server."""
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster of our own on a spare port, in a temporary directory.

    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
    """

    def __init__(self) -> None:
        self.bin = Path(
            find_binary("pg_ctl", *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))))
        ).parent
        self.dir = Path(tempfile.mkdtemp(prefix="ciba-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def kill(self) -> None:
        """Stop at once (``-m immediate``: no clean shutdown, clients see their connections drop)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        wait_port(self.port, up=False)

    def pause(self, paused: bool = True) -> None:
        """Freeze (or thaw) the postmaster and every backend: connections stay open, the
        kernel still acknowledges what is sent, and nothing is answered."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
        for pid in [postmaster, *map(int, children.stdout.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedisCluster:
    """A Redis Cluster of three masters on spare ports, a third of the slots each.

    Each node keeps its ``nodes.conf`` in its own directory, so the test may kill every
    node and start them again: they come back as the same cluster.
    """

    def __init__(self, masters: int = 3) -> None:
        import redis

        self.nodes: list[PrivateRedis] = []
        try:
            for _ in range(masters):
                # The bus port is set: by default it is the port + 10000, which may not be free.
                bus = free_port()
                node = PrivateRedis(
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-port", str(bus), "--cluster-node-timeout", "1000"),
                )
                node.bus = bus  # type: ignore[attr-defined]
                self.nodes.append(node)
            for i, node in enumerate(self.nodes):
                with redis.Redis(port=node.port) as client:
                    first, last = i * 16384 // masters, (i + 1) * 16384 // masters - 1
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            with redis.Redis(port=self.nodes[0].port) as client:
                for node in self.nodes[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus)  # type: ignore[attr-defined]
            self.wait_ready()
            for node in self.nodes:
                with redis.Redis(port=node.port) as client:
                    client.execute_command("CLUSTER", "SAVECONFIG")
        except BaseException:
            self.close()
            raise
        self.ports = [node.port for node in self.nodes]

    def url(self, *ports: int, query: str = "") -> str:
        """A ``redis+cluster://`` URL with ``ports`` (by default every node's) as the seeds."""
        seeds = ",".join(f"127.0.0.1:{port}" for port in ports or self.ports)
        return f"redis+cluster://{seeds}" + (f"?{query}" if query else "")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every node sees every other and the cluster state is ok."""
        import redis

        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with redis.Redis(port=node.port, socket_timeout=1) as client:
                while True:
                    info = client.execute_command("CLUSTER", "INFO")
                    if b"cluster_state:ok" in info and f"cluster_known_nodes:{len(self.nodes)}".encode() in info:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the private Redis Cluster did not become ready: {info!r}")
                    time.sleep(0.05)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def keys_per_node(self) -> list[int]:
        import redis

        counts = []
        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                counts.append(int(client.dbsize()))
        return counts

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class PrivateSentinel:
    """A private master, its replica and one Sentinel watching them (quorum 1), on spare ports.

    The Sentinel asks for ``password`` (``requirepass``), and declares the master down after
    ``down-after-milliseconds`` 500, so that a failover takes about a second or two.
    """

    service = "mymaster"
    password = "sentinel-test-password"

    def __init__(self, tls: Path | None = None) -> None:
        """With ``tls`` (a directory holding ``cert.pem`` and ``key.pem``), the master and
        the Sentinel speak TLS only, and there is no replica."""
        self.tls = tls
        tls_port = free_port()
        tls_options = (
            (
                *("--tls-port", str(tls_port), "--tls-cert-file", str(tls / "cert.pem")),
                *("--tls-key-file", str(tls / "key.pem"), "--tls-ca-cert-file", str(tls / "cert.pem")),
                *("--tls-auth-clients", "no"),
            )
            if tls
            else ()
        )
        self.master = PrivateRedis(*tls_options)
        self.replica: PrivateRedis | None = None
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.port = free_port()
            self.config = self.master.dir / "sentinel.conf"
            if tls:
                listen = f"port 0\ntls-port {self.port}\ntls-replication yes\n" + "".join(
                    f"{tls_options[i].removeprefix('--')} {tls_options[i + 1]}\n" for i in range(2, len(tls_options), 2)
                )
                watched = tls_port
            else:
                self.replica = PrivateRedis("--replicaof", "127.0.0.1", str(self.master.port))
                listen, watched = f"port {self.port}\n", self.master.port
            self.config.write_text(
                f"{listen}bind 127.0.0.1\ndir {self.master.dir}\nrequirepass {self.password}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {watched} 1\n"
                f"sentinel down-after-milliseconds {self.service} 500\n"
                f"sentinel failover-timeout {self.service} 5000\n"
            )
            self.start()
            self.wait_watching()
        except BaseException:
            self.close()
            raise

    def url(self, path: str = "", query: str = "") -> str:
        tls = f"ssl_ca_certs={self.tls / 'cert.pem'}" if self.tls else ""
        query = "&".join(filter(None, [f"sentinel_password={self.password}", tls, query]))
        return f"{'rediss' if self.tls else 'redis'}+sentinel://127.0.0.1:{self.port}/{self.service}{path}?{query}"

    def client(self) -> Any:
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.tls / "cert.pem")} if self.tls else {}
        return redis.Redis("127.0.0.1", self.port, password=self.password, socket_timeout=2, **tls)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.master.binary, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, up=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        wait_port(self.port, up=False)

    def master_port(self) -> int:
        with self.client() as client:
            _, port = client.sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def wait_watching(self, timeout: float = 20.0) -> None:
        """Until the Sentinel sees the master up and, if there is one, the replica in sync."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                with contextlib.suppress(redis_errors()):
                    master = client.sentinel_master(self.service)
                    replicas = client.sentinel_slaves(self.service)
                    if (
                        master["is_master"]
                        and not master["is_sdown"]
                        and (
                            self.replica is None
                            or (replicas and replicas[0]["master-link-status"] == "ok" and not replicas[0]["is_sdown"])
                        )
                    ):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError("the private Sentinel did not see its servers")
                time.sleep(0.05)

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until the replica has every write the master has (replication is asynchronous)."""
        import redis

        deadline = time.monotonic() + timeout
        assert self.replica is not None
        with redis.Redis(port=self.master.port) as master, redis.Redis(port=self.replica.port) as replica:
            offset = master.info("replication")["master_repl_offset"]
            while replica.info("replication")["slave_repl_offset"] < offset:
                if time.monotonic() > deadline:
                    raise RuntimeError("the private replica did not catch up with its master")
                time.sleep(0.02)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.kill()
        for server in (self.replica, self.master):
            if server is not None:
                server.close()
