"""The PostgreSQL store behind PgBouncer in transaction pooling mode, as Debian ships it.

Each transaction may run on another server connection, and a server connection serves
other clients next. The store sees the pooler (its cancel key is not the server's process
ID) and then prepares nothing and sets its statement timeout per transaction, so nothing of
it outlives a transaction. Without that, psycopg's prepared statements fail a quarter of
the calls ("prepared statement "_pg3_0" does not exist") and the session's timeout lands
on server connections other clients get.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _servers import find_binary, wait_port
from _stores import drop_postgres_table
from conftest import AT_ONCE, SERVICE, SERVICE_TOKEN, LiveServer, ciba_env, free_port, unique_name

from ciba_middleware.errors import StoreError
from ciba_middleware.stores import TicketStore, ticket_hash

from ._http import assert_success, fail

# Servers started, stopped and failed over: left to 3.11 (noxfile.py's SUBSET).
pytestmark = pytest.mark.slow

OpenStore = Callable[..., TicketStore]
#: Server connections PgBouncer may open to the database: fewer than the clients' threads,
#: so that transactions of one client land on many server connections and the reverse.
POOL_SIZE = 4


class PgBouncer:
    """Debian's ``pgbouncer``, ``pool_mode = transaction``, ``auth_type = trust``, in a
    temporary directory, in front of the PostgreSQL at ``url``; run as ``postgres`` when
    we are root (it refuses root)."""

    def __init__(self, url: str) -> None:
        binary = find_binary("pgbouncer", "/usr/sbin/pgbouncer")
        server = urlsplit(url)
        self.database = server.path.lstrip("/")
        self.user = server.username or "postgres"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ciba-pgbouncer-"))
        (self.dir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.database} = host={server.hostname} port={server.port or 5432} dbname={self.database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nmax_client_conn = 500\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if run_as:
            shutil.chown(self.dir, "postgres")
            for path in self.dir.iterdir():
                shutil.chown(path, "postgres")
        self.process = subprocess.Popen(
            [*run_as, binary, str(self.dir / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, up=True)
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pgbouncer(postgres_url: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(postgres_url)
    yield bouncer
    bouncer.close()


@pytest.fixture
def table(postgres_url: str) -> Iterator[str]:
    name = unique_name()
    yield name
    drop_postgres_table(postgres_url, name)


def server_connection_settings(bouncer: PgBouncer) -> list[tuple[str, str]]:
    """``statement_timeout`` and ``search_path`` as a plain client finds them on each of
    PgBouncer's server connections: as many clients as it has server connections, each
    holding one in a transaction."""
    import psycopg

    clients = [psycopg.connect(bouncer.url, prepare_threshold=None) for _ in range(POOL_SIZE)]
    try:
        found = []
        for client in clients:  # each BEGINs, and keeps its server connection until the end
            timeout = client.execute("SHOW statement_timeout").fetchone()
            path = client.execute("SHOW search_path").fetchone()
            assert timeout is not None
            assert path is not None
            found.append((timeout[0], path[0]))
        backends = {client.execute("SELECT pg_backend_pid()").fetchone() for client in clients}
        assert len(backends) == POOL_SIZE  # every server connection was looked at
        return found
    finally:
        for client in clients:
            client.close()


def test_fail_calls_through_pgbouncer_all_succeed_and_delete_each_ticket_once(
    pgbouncer: PgBouncer,
    postgres_url: str,
    table: str,
    live_server: Callable[..., LiveServer],
    open_store: OpenStore,
    tmp_path: Path,
) -> None:
    url = f"{pgbouncer.url}?table={table}"
    audit = tmp_path / "audit.jsonl"
    env = ciba_env(tmp_path, CIBA_STORE_URL=url, CIBA_AUDIT_LOG=str(audit), **AT_ONCE)
    server = live_server(env=env, workers=2, extra=("--threads", "4"))
    store = open_store(url)
    with ThreadPoolExecutor(8) as pool:
        tickets = list(pool.map(lambda _: store.issue(SERVICE, ttl=120), range(500)))
        # Each ticket failed twice, 1,000 calls in all, in an order that puts both calls
        # for a ticket close together, on either worker.
        calls = [ticket for pair in zip(tickets, tickets, strict=True) for ticket in pair]
        answers = list(pool.map(lambda t: fail(server, SERVICE, SERVICE_TOKEN, t, "ACCESS_DENIED"), calls))
    assert Counter(answer.status_code for answer in answers) == {200: 1000}
    for answer in answers:
        assert_success(answer, "FORBIDDEN", "access_denied")

    # The audit log says which call deleted: exactly one of the two for every ticket.
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == 1000
    deleted = Counter(record["ticket_hash"] for record in records if record["deleted"])
    assert deleted == {ticket_hash(ticket): 1 for ticket in tickets}

    import psycopg

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (0,)
    assert "prepared statement" not in server.log()


def test_the_store_leaves_no_session_setting_on_pgbouncers_server_connections(
    pgbouncer: PgBouncer, postgres_url: str, table: str, open_store: OpenStore
) -> None:
    import psycopg

    with psycopg.connect(postgres_url) as direct:
        default = direct.execute("SHOW statement_timeout").fetchone()
    assert default is not None
    before = server_connection_settings(pgbouncer)
    assert {timeout for timeout, _ in before} == {default[0]}

    store = open_store(f"{pgbouncer.url}?table={table}&statement_timeout=0.75")
    with ThreadPoolExecutor(8) as pool:
        tickets = list(pool.map(lambda _: store.issue("42", ttl=60), range(200)))
        assert all(pool.map(lambda t: store.delete("42", t), tickets))
        assert not any(pool.map(lambda t: store.exists("42", t), tickets))
    store.ping()
    assert server_connection_settings(pgbouncer) == before


def test_the_statement_timeout_holds_behind_pgbouncer(
    pgbouncer: PgBouncer, postgres_url: str, table: str, open_store: OpenStore
) -> None:
    import psycopg

    store = open_store(f"{pgbouncer.url}?table={table}&statement_timeout=0.5")
    ticket = store.issue("42", ttl=60)
    with psycopg.connect(postgres_url) as locker:
        locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        started = time.monotonic()
        with pytest.raises(StoreError, match="canceling statement due to statement timeout"):
            store.delete("42", ticket)
        assert 0.4 < time.monotonic() - started < 1.5
    assert store.delete("42", ticket) is True


def test_a_direct_connection_keeps_prepared_statements(postgres_url: str, table: str, open_store: OpenStore) -> None:
    """Without a pooler the store is as fast as before: psycopg prepares its statements
    (after five runs) and the timeout is set once per connection."""
    import psycopg

    store = open_store(f"{postgres_url}?table={table}&pool_max_size=1&statement_timeout=0.75")
    ticket = store.issue("42", ttl=60)
    for _ in range(6):
        store.exists("42", ticket)

    # On the store's one connection (which it holds between calls, out of the pool).
    def look(conn: psycopg.Connection[object], cursor: object) -> tuple[object, object]:
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        return prepared, conn.execute("SHOW statement_timeout").fetchone()

    prepared, timeout = store._run(look)  # type: ignore[attr-defined]
    assert isinstance(prepared, tuple)
    assert prepared[0] >= 1
    assert timeout == ("750ms",)
