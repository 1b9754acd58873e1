"""An SQLite file replaced or removed under a running server, and bad SQLite settings.

A gunicorn server with two workers serves fail calls on a file; the file is replaced (a new
one renamed over it) or deleted, and another process (the CLI) issues tickets at the path.
Each worker notices at its first call made ``FILE_CHECK_INTERVAL`` seconds after the change
(a store looks the path up at most that often) and moves to the file now at the path, so
those tickets are deleted by fail calls over HTTP: no worker keeps answering from a file
that nobody else sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from conftest import AT_ONCE, SERVICE, SERVICE_TOKEN, LiveServer, ciba_env

from ciba_middleware.errors import ConfigurationError, StoreError
from ciba_middleware.stores import store_from_url, ticket_hash
from ciba_middleware.stores.sqlite import FILE_CHECK_INTERVAL, SQLiteTicketStore

from ._cli import cli
from ._http import assert_success, fail
from .test_store_outages import STORE_FAILED

# Worker servers whose files are replaced under them: left to 3.11 (noxfile.py's SUBSET).
pytestmark = pytest.mark.slow


def issue_with_cli(env: Mapping[str, str]) -> str:
    result = cli("ticket", "issue", "--service", SERVICE, "--ttl", "120", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def deleted_hashes(audit: Path) -> list[str]:
    return [r["ticket_hash"] for r in map(json.loads, audit.read_text().splitlines()) if r["deleted"]]


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_tickets_at_a_replaced_or_removed_path_are_deleted_by_every_worker(
    change: str, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    path = tmp_path / "tickets.sqlite3"
    audit = tmp_path / "audit.jsonl"
    env = ciba_env(tmp_path, CIBA_AUDIT_LOG=str(audit), **AT_ONCE)
    server = live_server(env=env, workers=2)
    # Both workers get a connection on the first file (calls go to either).
    before = [issue_with_cli(env) for _ in range(4)]
    for ticket in before:
        assert_success(fail(server, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED"), "FORBIDDEN", "access_denied")
    for _ in range(20):
        fail(server, SERVICE, SERVICE_TOKEN, "T" * 43, "ACCESS_DENIED")
    assert deleted_hashes(audit) == [ticket_hash(t) for t in before]
    if change == "replaced":
        fresh = tmp_path / "fresh.sqlite3"
        SQLiteTicketStore(str(fresh)).close()
        os.replace(fresh, path)
        time.sleep(FILE_CHECK_INTERVAL)
        after = [issue_with_cli(env) for _ in range(10)]
    else:
        path.unlink()
        time.sleep(FILE_CHECK_INTERVAL)
        # SQLite names its -shm file after the path: until every worker has let go of the
        # old file, opening a new one there fails ("disk I/O error"), a clean 500. Each
        # worker lets go at its next call; then every call works.
        answers = []
        while len(answers) < 10 or {a.status_code for a in answers[-10:]} != {200}:
            assert len(answers) < 200, [a.status_code for a in answers]
            answers.append(fail(server, SERVICE, SERVICE_TOKEN, "T" * 43, "ACCESS_DENIED"))
        for answer in answers:
            if answer.status_code != 200:
                assert (answer.status_code, answer.json()) == (500, STORE_FAILED)
        after = [issue_with_cli(env) for _ in range(10)]
    for ticket in after:
        assert_success(fail(server, SERVICE, SERVICE_TOKEN, ticket, "ACCESS_DENIED"), "FORBIDDEN", "access_denied")
    # Every one was deleted by the call for it, whichever worker took it.
    assert deleted_hashes(audit) == [ticket_hash(t) for t in before + after]
    for ticket in after:
        shown = cli("ticket", "show", "--service", SERVICE, "--", ticket, env=env)
        assert shown.returncode == 1, shown.stdout
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM ciba_tickets").fetchone() == (0,)
    conn.close()


def test_a_path_that_cannot_be_opened_any_more_fails_the_call(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    store = SQLiteTicketStore(str(directory / "tickets.sqlite3"))
    ticket = store.issue("42", ttl=60)
    (directory / "tickets.sqlite3").unlink()
    for leftover in directory.iterdir():
        leftover.unlink()
    directory.rmdir()
    time.sleep(FILE_CHECK_INTERVAL)  # the store looks at most this often
    with pytest.raises(StoreError, match=r"^sqlite: unable to open database file$"):
        store.delete("42", ticket)
    directory.mkdir()  # back: the store works again, on a new, empty file
    assert store.delete("42", ticket) is False
    assert store.delete("42", store.issue("42", ttl=60)) is True
    store.close()


def test_the_content_of_a_file_renamed_over_a_live_one_is_what_the_store_sees(tmp_path: Path) -> None:
    path = tmp_path / "tickets.sqlite3"
    store = SQLiteTicketStore(str(path))
    old = [store.issue("42", ttl=60) for _ in range(50)]  # in the old file's WAL
    fresh = tmp_path / "fresh.sqlite3"
    other = SQLiteTicketStore(str(fresh))
    new = other.issue("42", ttl=60)
    other.close()
    os.replace(fresh, path)
    time.sleep(FILE_CHECK_INTERVAL)  # the store looks at most this often
    assert not any(store.exists("42", ticket) for ticket in old)
    assert store.delete("42", new) is True
    later = SQLiteTicketStore(str(path))  # another process's view of the path
    ticket = later.issue("42", ttl=60)
    assert store.delete("42", ticket) is True
    later.close()
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "sqlite:///tick%00ets.db",
            "sqlite path must not contain a NUL character (%00): 'tick\\x00ets.db'",
            id="nul",
        ),
        *(
            pytest.param(
                f"sqlite:///t.db?timeout={value}",
                f"sqlite option timeout must be a number from 0 to 3600, not '{value}'",
                id=f"timeout-{value}",
            )
            for value in ("nan", "inf", "1e308", "-1")
        ),
    ],
)
def test_bad_sqlite_settings_are_one_line_configuration_errors(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        store_from_url(url)
    assert str(raised.value) == message
    result = cli("check", env=ciba_env(tmp_path, CIBA_STORE_URL=url))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"ciba-middleware: error: CIBA_STORE_URL: {message}\n"
