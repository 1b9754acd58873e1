"""The ``ciba-middleware`` command, run as users run it: the installed console script in a subprocess.

``serve`` is tested over real HTTP with a token from ``token new`` and a ticket from ``ticket
issue``; every error case checks the exit code and the exact one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from conftest import GRANTS, OTHER_SERVICE, SERVICE, SERVICE_TOKEN, ciba_env, free_port, port_open, unique_name

from ciba_middleware import StaticTokenVerifier, sha256_hex
from ciba_middleware.cli import mask_url
from ciba_middleware.stores import SCHEMES, store_from_url, ticket_hash, well_formed

# The console script pip installed beside this interpreter (.venv/bin, /tmp/dev/bin).
SCRIPT = Path(sys.executable).parent / "ciba-middleware"
PROG = "ciba-middleware"
NO_TOKENS = (
    f"{PROG}: error: CIBA_TOKENS (or CIBA_TOKENS_FILE) is not set: no caller could authenticate. "
    "Create a token with `ciba-middleware token new --service ID`.\n"
)
SAVED_NOTE = (
    f"{PROG}: the secret above is shown once and stored nowhere; give it to the caller now, "
    "and add the grant to the CIBA_TOKENS list.\n"
)
FAIL_PATH = "/api/{}/backchannel/authentication/fail"


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any CIBA_* variable, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CIBA_", "PROMETHEUS_"))}
    full.update(env or {})
    return full


def cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], env=clean_env(env), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def store_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"CIBA_STORE_URL": f"sqlite:///{tmp_path / 'tickets.sqlite3'}", **extra}


def test_console_script_is_installed() -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: pip install -e . installs it"
    assert os.access(SCRIPT, os.X_OK)


# -- help and usage -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        pytest.param([], ["serve", "token", "ticket", "check", "CIBA_STORE_URL", "exit codes"], id="top"),
        pytest.param(
            ["serve"], ["--host HOST", "--port PORT", "--workers WORKERS", "--app MODULE:CALLABLE"], id="serve"
        ),
        pytest.param(["token"], ["new"], id="token"),
        pytest.param(
            ["token", "new"], ["--service ID", "--organization NAME", "--services ID,ID", "--v2"], id="token-new"
        ),
        pytest.param(["ticket"], ["issue", "show", "delete"], id="ticket"),
        pytest.param(["ticket", "issue"], ["--service ID", "--ttl SECONDS"], id="ticket-issue"),
        pytest.param(["ticket", "show"], ["--service ID", "TICKET", "1 no such ticket"], id="ticket-show"),
        pytest.param(["ticket", "delete"], ["--service ID", "TICKET", "1 no such ticket"], id="ticket-delete"),
        pytest.param(["check"], ["ping the store", "CIBA_TOKENS"], id="check"),
    ],
)
def test_every_command_has_help(command: list[str], mentions: list[str]) -> None:
    result = cli(*command, "--help")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"usage: {' '.join([PROG, *command])} [-h]")
    words = " ".join(result.stdout.split())  # help is filled to the width: compare words
    for text in mentions:
        assert text in words


def test_python_dash_m_is_the_same_command() -> None:
    via_module = subprocess.run(
        [sys.executable, "-m", "ciba_middleware", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert via_module.returncode == 0
    assert via_module.stdout == cli("--help").stdout


def test_version() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{PROG} 0.1.0\n", "")


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        pytest.param(
            [], f"{PROG}: error: the following arguments are required: COMMAND (see {PROG} --help)\n", id="no-command"
        ),
        pytest.param(
            ["token", "new"],
            f"{PROG} token new: error: one of the arguments --service --organization is required "
            f"(see {PROG} token new --help)\n",
            id="token-new-nobody",
        ),
        pytest.param(
            ["token", "new", "--service", "1", "--organization", "acme"],
            f"{PROG} token new: error: argument --organization: not allowed with argument --service "
            f"(see {PROG} token new --help)\n",
            id="service-and-organization",
        ),
        pytest.param(
            ["token", "new", "--organization", "acme"],
            f"{PROG}: error: --organization needs --services ID,ID\n",
            id="organization-without-services",
        ),
        pytest.param(
            ["token", "new", "--v2", "--organization", "acme", "--services", "1"],
            f"{PROG}: error: --v2 needs --service: an API v2 key belongs to one service\n",
            id="v2-organization",
        ),
        pytest.param(
            ["token", "new", "--service", "1", "--services", "1,2"],
            f"{PROG}: error: --services goes with --organization; for one service use --service ID\n",
            id="services-without-organization",
        ),
        pytest.param(
            ["token", "new", "--service", " 1"],
            f"{PROG} token new: error: argument --service: must be non-empty, without surrounding spaces or "
            f"control characters: ' 1' (see {PROG} token new --help)\n",
            id="service-with-space",
        ),
        pytest.param(
            ["token", "new", "--organization", "acme", "--services", "1,,2"],
            f"{PROG} token new: error: argument --services: must be non-empty, without surrounding spaces or "
            f"control characters: '' (see {PROG} token new --help)\n",
            id="empty-service-in-list",
        ),
        pytest.param(
            ["ticket", "issue", "--service", "1", "--ttl", "0"],
            f"{PROG} ticket issue: error: argument --ttl: must be a positive number of seconds, not '0' "
            f"(see {PROG} ticket issue --help)\n",
            id="ttl-zero",
        ),
        pytest.param(
            ["ticket", "issue", "--service", "1", "--ttl", "nan"],
            f"{PROG} ticket issue: error: argument --ttl: must be a positive number of seconds, not 'nan' "
            f"(see {PROG} ticket issue --help)\n",
            id="ttl-nan",
        ),
        pytest.param(
            ["ticket", "show", "--service", "1"],
            f"{PROG} ticket show: error: the following arguments are required: TICKET "
            f"(see {PROG} ticket show --help)\n",
            id="show-without-ticket",
        ),
        pytest.param(
            ["serve", "--port", "70000"],
            f"{PROG} serve: error: argument --port: must be a port number from 0 to 65535, not '70000' "
            f"(see {PROG} serve --help)\n",
            id="port-out-of-range",
        ),
        pytest.param(
            ["serve", "--workers", "0"],
            f"{PROG} serve: error: argument --workers: must be a positive integer, not '0' (see {PROG} serve --help)\n",
            id="no-workers",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], stderr: str) -> None:
    result = cli(*args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


# -- token new ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "labels", "check"),
    [
        pytest.param(
            ["--service", SERVICE],
            ["token"],
            lambda v, secret: v.verify_bearer(secret).services == {SERVICE},
            id="service",
        ),
        pytest.param(
            ["--organization", "acme", "--services", f"{SERVICE}, 42,{SERVICE}"],
            ["token"],
            lambda v, secret: v.verify_bearer(secret).services == {SERVICE, "42"},
            id="organization",
        ),
        pytest.param(
            ["--v2", "--service", SERVICE],
            ["api_key", "api_secret"],
            lambda v, secret: v.verify_api_key(SERVICE, secret).services == {SERVICE},
            id="v2",
        ),
    ],
)
def test_token_new_prints_a_secret_and_a_grant_that_accepts_it(
    args: list[str], labels: list[str], check: Callable[[StaticTokenVerifier, str], bool]
) -> None:
    # token new reads no configuration: a broken environment does not matter to it.
    broken = {"CIBA_TOKENS": "not json", "CIBA_STORE_URL": "nope://"}
    result = cli("token", "new", *args, env=broken)
    assert (result.returncode, result.stderr) == (0, SAVED_NOTE)
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [*labels, "grant"]
    secret = lines[-2].split()[-1]
    grant = json.loads(lines[-1].removeprefix("grant: "))
    assert len(secret) == 43
    assert secret not in lines[-1]
    assert check(StaticTokenVerifier([grant]), secret)

    as_json = cli("token", "new", "--json", *args)
    assert (as_json.returncode, as_json.stderr) == (0, "")
    shown = json.loads(as_json.stdout)
    assert sorted(shown) == sorted([*labels, "grant"])
    assert check(StaticTokenVerifier([shown["grant"]]), shown[labels[-1]])
    assert shown[labels[-1]] != secret


def test_token_new_grant_shapes() -> None:
    result = cli("token", "new", "--json", "--organization", "acme", "--services", "1,2,1")
    grant = json.loads(result.stdout)["grant"]
    assert list(grant) == ["organization", "services", "token_sha256"]
    assert (grant["organization"], grant["services"]) == ("acme", ["1", "2"])
    v2 = json.loads(cli("token", "new", "--json", "--v2", "--service", "7").stdout)
    assert (v2["api_key"], list(v2["grant"])) == ("7", ["service", "api_secret_sha256"])


# -- ticket -------------------------------------------------------------------------------


def test_ticket_lifecycle_without_tokens(tmp_path: Path) -> None:
    """issue, show, delete against the store of CIBA_STORE_URL; CIBA_TOKENS is not even read."""
    env = store_env(tmp_path, CIBA_TOKENS="not json", CIBA_PATH_PREFIX="not a prefix")
    issued = cli("ticket", "issue", "--service", SERVICE, env=env)
    assert (issued.returncode, issued.stderr) == (0, "")
    ticket = issued.stdout.rstrip("\n")
    assert issued.stdout == ticket + "\n"
    assert well_formed(ticket)
    # It is in the configured store, where the middleware will look for it.
    store = store_from_url(env["CIBA_STORE_URL"])
    try:
        assert store.exists(SERVICE, ticket)
    finally:
        store.close()

    h = ticket_hash(ticket)
    steps = [
        (["show", "--service", SERVICE, ticket], 0, f"ticket {h} exists for service {SERVICE}\n"),
        (
            ["show", "--service", OTHER_SERVICE, ticket],
            1,
            f"no such ticket for service {OTHER_SERVICE} (unknown, expired, used, or of another service)\n",
        ),
        (
            ["delete", "--service", OTHER_SERVICE, ticket],
            1,
            f"no such ticket for service {OTHER_SERVICE}: nothing deleted\n",
        ),
        (["delete", "--service", SERVICE, ticket], 0, f"deleted ticket {h} of service {SERVICE}\n"),
        (
            ["show", "--service", SERVICE, ticket],
            1,
            f"no such ticket for service {SERVICE} (unknown, expired, used, or of another service)\n",
        ),
        (["delete", "--service", SERVICE, ticket], 1, f"no such ticket for service {SERVICE}: nothing deleted\n"),
        (
            ["show", "--service", SERVICE, "not a ticket"],
            1,
            f"no such ticket for service {SERVICE} (unknown, expired, used, or of another service)\n",
        ),
    ]
    for args, code, stdout in steps:
        result = cli("ticket", *args, env=env)
        assert (args, result.returncode, result.stdout, result.stderr) == (args, code, stdout, "")


@pytest.mark.parametrize(
    ("args", "env", "ttl"),
    [
        pytest.param([], {}, 600, id="default"),
        pytest.param([], {"CIBA_TICKET_TTL": "120"}, 120, id="CIBA_TICKET_TTL"),
        pytest.param(["--ttl", "30"], {}, 30, id="--ttl"),
        pytest.param(["--ttl", "2.5"], {"CIBA_TICKET_TTL": "120"}, 2.5, id="--ttl-wins"),
    ],
)
def test_ticket_issue_ttl(tmp_path: Path, args: list[str], env: dict[str, str], ttl: float) -> None:
    before = time.time()
    result = cli("ticket", "issue", "--service", SERVICE, *args, env=store_env(tmp_path, **env))
    after = time.time()
    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "tickets.sqlite3")) as db:
        (expires_at,) = db.execute(
            "SELECT expires_at FROM ciba_tickets WHERE ticket = ?", (result.stdout.strip(),)
        ).fetchone()
    assert before + ttl <= expires_at <= after + ttl


def test_expired_ticket_is_not_found(tmp_path: Path) -> None:
    env = store_env(tmp_path)
    ticket = cli("ticket", "issue", "--service", SERVICE, "--ttl", "0.3", env=env).stdout.strip()
    time.sleep(0.4)
    assert cli("ticket", "show", "--service", SERVICE, ticket, env=env).returncode == 1


def failing_sqlite(tmp_path: Path) -> str:
    """An SQLite store whose table refuses every new ticket: the store fails, not the config."""
    path = tmp_path / "failing.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE ciba_tickets (ticket TEXT PRIMARY KEY, service TEXT NOT NULL, expires_at REAL NOT NULL)"
        )
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON ciba_tickets BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("store_url", "extra", "code", "stderr"),
    [
        pytest.param(
            "memory://",
            {},
            2,
            f"{PROG}: error: CIBA_STORE_URL is memory://: its tickets live inside one server process, out of this "
            "command's reach; use sqlite://, redis:// or postgresql://\n",
            id="memory",
        ),
        pytest.param(
            "ftp://user:hunter2@example.org/",
            {},
            2,
            f"{PROG}: error: CIBA_STORE_URL: unknown ticket store URL scheme ftp://; expected one of "
            + ", ".join(f"{scheme}://" for scheme in sorted(SCHEMES))
            + "\n",
            id="unknown-scheme",
        ),
        pytest.param(
            "sqlite:///{tmp}/tickets.sqlite3",
            {"CIBA_TICKET_TTL": "-1"},
            2,
            f"{PROG}: error: CIBA_TICKET_TTL must be a number of seconds above 0 and at most 31622400 (366 days), "
            "not '-1'\n",
            id="bad-ttl",
        ),
        pytest.param(
            "sqlite:///{tmp}",
            {},
            2,
            f"{PROG}: error: CIBA_STORE_URL: cannot open SQLite ticket store '{{tmp}}': unable to open database file\n",
            id="sqlite-directory",
        ),
        pytest.param(
            "failing",
            {},
            3,
            f"{PROG}: error: the ticket store failed: sqlite: disk on fire\n",
            id="store-fails",
        ),
    ],
)
def test_ticket_errors(tmp_path: Path, store_url: str, extra: dict[str, str], code: int, stderr: str) -> None:
    url = failing_sqlite(tmp_path) if store_url == "failing" else store_url.format(tmp=tmp_path)
    result = cli("ticket", "issue", "--service", SERVICE, env={"CIBA_STORE_URL": url, **extra})
    assert (result.returncode, result.stdout, result.stderr) == (code, "", stderr.format(tmp=tmp_path))


# -- check --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "summary"),
    [
        pytest.param(
            {},
            "5 grants covering 3 services from CIBA_TOKENS, prefix '', max body 16384 bytes, ticket TTL 600 s, "
            "audit log on, metrics off",
            id="defaults",
        ),
        pytest.param(
            {
                "CIBA_PATH_PREFIX": "/authlete",
                "CIBA_MAX_BODY_BYTES": "2048",
                "CIBA_TICKET_TTL": "90",
                "CIBA_TOKENS": json.dumps(GRANTS[:1]),
                "CIBA_AUDIT_LOG": "stderr",
                "CIBA_METRICS_PATH": "/metrics",
                "CIBA_METRICS_TOKEN_SHA256": "0" * 64,
            },
            "1 grant covering 1 service from CIBA_TOKENS, prefix '/authlete', max body 2048 bytes, ticket TTL 90 s, "
            "audit log stderr, metrics /metrics",
            id="set",
        ),
    ],
)
def test_check_ok(tmp_path: Path, extra: dict[str, str], summary: str) -> None:
    result = cli("check", env=ciba_env(tmp_path, **extra))
    store = f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    assert (result.returncode, result.stdout, result.stderr) == (0, f"ok: store {store} reachable, {summary}\n", "")


def test_check_masks_the_store_password(tmp_path: Path, postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    table = unique_name()
    url = f"postgresql://{parts.username}:hunter2@{parts.hostname}:{parts.port}{parts.path}?table={table}"
    try:
        result = cli("check", env=ciba_env(tmp_path, CIBA_STORE_URL=url))
    finally:
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    masked = f"postgresql://{parts.username}:***@{parts.hostname}:{parts.port}{parts.path}?table={table}"
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"ok: store {masked} reachable, 5 grants covering 3 services from CIBA_TOKENS, prefix '', "
        "max body 16384 bytes, ticket TTL 600 s, audit log on, metrics off\n"
    )


def test_check_unreachable_store(tmp_path: Path) -> None:
    port = free_port()
    result = cli("check", env=ciba_env(tmp_path, CIBA_STORE_URL=f"redis://:hunter2@127.0.0.1:{port}/15"))
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.startswith(f"{PROG}: error: store redis://:***@127.0.0.1:{port}/15 unreachable: redis: ")
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("env", "stderr"),
    [
        pytest.param({"CIBA_TOKENS": ""}, NO_TOKENS, id="no-tokens"),
        pytest.param(
            {"CIBA_TOKENS": "[{"},
            f"{PROG}: error: CIBA_TOKENS is not valid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 3 (char 2)\n",
            id="tokens-not-json",
        ),
        pytest.param(
            {"CIBA_TOKENS": json.dumps([{"service": "1", "token": "x", "extra": 1}])},
            f"{PROG}: error: CIBA_TOKENS: grant #1: unknown key 'extra' (known: api_secret, api_secret_sha256, "
            "dpop_jkt, dpop_require_ath, organization, service, services, token, token_sha256)\n",
            id="bad-grant",
        ),
        pytest.param(
            {"CIBA_TOKENS": "", "CIBA_TOKENS_FILE": "/nonexistent/tokens.json"},
            f"{PROG}: error: CIBA_TOKENS_FILE: cannot read '/nonexistent/tokens.json': No such file or directory "
            "(a running server refuses this file, logs it at ERROR and keeps its last good grants)\n",
            id="tokens-file-missing",
        ),
        pytest.param(
            {"CIBA_PATH_PREFIX": "authlete/"},
            f"{PROG}: error: CIBA_PATH_PREFIX must be empty or like /authlete (no trailing /), not 'authlete/'\n",
            id="bad-prefix",
        ),
        pytest.param(
            {"CIBA_MAX_BODY_BYTES": "lots"},
            f"{PROG}: error: CIBA_MAX_BODY_BYTES must be a whole number of bytes from 1 to 1048576, not 'lots'\n",
            id="bad-max-body",
        ),
        pytest.param(
            {"CIBA_STORE_URL": "sqlite://host/x.db"},
            f"{PROG}: error: CIBA_STORE_URL: sqlite URLs have no host: use sqlite:///relative.db or "
            "sqlite:////absolute.db, not 'sqlite://host/x.db'\n",
            id="bad-store-url",
        ),
    ],
)
def test_check_bad_configuration(tmp_path: Path, env: dict[str, str], stderr: str) -> None:
    result = cli("check", env=ciba_env(tmp_path, **env))
    assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        pytest.param("sqlite:////var/lib/ciba.sqlite3", "sqlite:////var/lib/ciba.sqlite3", id="sqlite-absolute"),
        pytest.param("sqlite:///ciba.sqlite3?timeout=2", "sqlite:///ciba.sqlite3?timeout=2", id="sqlite-relative"),
        pytest.param("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0", id="redis-password"),
        pytest.param("redis://app:s3cret@cache/0", "redis://app:***@cache/0", id="redis-user-password"),
        pytest.param("redis://app@cache/0", "redis://app@cache/0", id="user-only"),
        pytest.param(
            "postgresql://app:p%40ss:w@db:5432/ciba?sslmode=require&password=zz",
            "postgresql://app:***@db:5432/ciba?sslmode=require&password=***",
            id="postgres-query-password",
        ),
        pytest.param("memory://", "memory://", id="memory"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# -- serve --------------------------------------------------------------------------------


class Serve:
    """``ciba-middleware serve`` on a free port, in its own process."""

    def __init__(self, env: Mapping[str, str], *args: str, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(SCRIPT), "serve", "--port", str(self.port), "--graceful-timeout", "5", *args],
            env=clean_env(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve did not start:\n{self.stderr}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait; SIGTERM, as SIGKILL would orphan the workers."""
        if hasattr(self, "stderr"):
            return self.process.returncode
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.stdout, self.stderr = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.stdout, self.stderr = self.process.communicate()
        return self.process.returncode


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Tracked(Serve):
        def __init__(self, *args: object, **kw: object) -> None:
            started.append(self)
            super().__init__(*args, **kw)  # type: ignore[arg-type]

    yield Tracked
    for server in started:
        server.stop()


def test_serve_answers_the_fail_api(tmp_path: Path, serve: type[Serve]) -> None:
    """The whole operator story: a token, a ticket, a server, a fail call, the ticket gone."""
    made = json.loads(cli("token", "new", "--json", "--service", SERVICE).stdout)
    env = store_env(tmp_path, CIBA_TOKENS=json.dumps([made["grant"]]))
    ticket = cli("ticket", "issue", "--service", SERVICE, env=env).stdout.strip()
    server = serve(env, "--workers", "2")

    response = requests.post(
        server.url + FAIL_PATH.format(SERVICE),
        json={"ticket": ticket, "reason": "ACCESS_DENIED", "errorDescription": "The user said no."},
        headers={"Authorization": f"Bearer {made['token']}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert (response.headers["Cache-Control"], response.headers["Pragma"]) == ("no-store", "no-cache")
    assert response.json() == {
        "resultCode": "A185001",
        "resultMessage": "[A185001] Successfully generated an error response for the backchannel authentication "
        "request.",
        "action": "FORBIDDEN",
        "responseContent": '{"error":"access_denied","error_description":"The user said no."}',
    }
    gone = cli("ticket", "show", "--service", SERVICE, ticket, env=env)
    assert gone.returncode == 1

    wrong = requests.post(
        server.url + FAIL_PATH.format(SERVICE), json={}, headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    other = requests.get(server.url + "/", timeout=10)
    assert (other.status_code, other.content) == (404, b'{"error":"not_found"}')

    assert server.stop(signal.SIGTERM) == 0
    assert server.stdout == ""  # logs go to stderr
    assert f"Listening at: http://127.0.0.1:{server.port}" in server.stderr
    assert "Traceback" not in server.stderr
    assert made["token"] not in server.stderr
    assert ticket not in server.stderr


def test_serve_wraps_an_app(tmp_path: Path, serve: type[Serve]) -> None:
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello from ' + environ['PATH_INFO'].encode()]\n"
    )
    server = serve(ciba_env(tmp_path), "--app", "hello:app", cwd=tmp_path)
    hello = requests.get(server.url + "/anything", timeout=10)
    assert (hello.status_code, hello.text) == (200, "hello from /anything")
    fail = requests.post(
        server.url + FAIL_PATH.format(SERVICE),
        json={"reason": "UNKNOWN_USER_ID"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=10,
    )
    assert (fail.status_code, fail.json()["responseContent"]) == (200, '{"error":"unknown_user_id"}')
    assert server.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")])
def test_serve_stops_cleanly(tmp_path: Path, serve: type[Serve], sig: signal.Signals) -> None:
    server = serve(ciba_env(tmp_path))
    # The port opens before the worker has booted, and gunicorn's worker ignores a SIGTERM
    # that arrives before it sets its own handlers (it waits for the graceful timeout's
    # SIGKILL): stop the server once its one worker has answered, as a running server is.
    assert requests.get(f"{server.url}/elsewhere", timeout=10).status_code == 404
    started = time.monotonic()
    assert server.stop(sig) == 0
    assert time.monotonic() - started < 5
    assert "Shutting down: Master" in server.stderr
    assert not port_open("127.0.0.1", server.port)


@pytest.mark.parametrize(
    ("args", "env", "code", "stderr"),
    [
        pytest.param([], {"CIBA_TOKENS": ""}, 2, NO_TOKENS, id="no-tokens"),
        pytest.param(
            ["--app", "nowhere:app"],
            {},
            2,
            f"{PROG}: error: --app nowhere:app: cannot load it: ModuleNotFoundError: No module named 'nowhere'\n",
            id="app-module-missing",
        ),
        pytest.param(
            ["--app", "json:nothing"],
            {},
            2,
            f"{PROG}: error: --app json:nothing: cannot load it: AppImportError: Failed to find attribute 'nothing' "
            "in 'json'.\n",
            id="app-attribute-missing",
        ),
        pytest.param(
            ["--workers", "2"],
            {"CIBA_STORE_URL": "memory://"},
            2,
            f"{PROG}: error: CIBA_STORE_URL is memory://, whose tickets live in one process: use --workers 1, or "
            "a store the workers share (sqlite://, redis://, postgresql://)\n",
            id="memory-several-workers",
        ),
        pytest.param(
            ["--host", "192.0.2.1"],  # TEST-NET-1 (RFC 5737): never an address of this host
            {},
            2,
            f"{PROG}: error: cannot listen on 192.0.2.1:{{port}}: Cannot assign requested address\n",
            id="foreign-address",
        ),
        pytest.param(
            [],
            {"CIBA_STORE_URL": "redis://127.0.0.1:{store_port}/15"},
            3,
            f"{PROG}: error: store redis://127.0.0.1:{{store_port}}/15 unreachable: redis: ",
            id="store-unreachable",
        ),
    ],
)
def test_serve_refuses_a_bad_configuration(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, stderr: str
) -> None:
    port, store_port = free_port(), free_port()
    env = {k: v.format(store_port=store_port) for k, v in env.items()}
    result = subprocess.run(
        [str(SCRIPT), "serve", "--port", str(port), *args],
        env=clean_env(ciba_env(tmp_path, **env)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith(stderr.format(port=port, store_port=store_port))
    assert result.stderr.count("\n") == 1
    assert "Starting gunicorn" not in result.stderr


def test_serve_port_in_use(tmp_path: Path, serve: type[Serve]) -> None:
    """One line at once, instead of gunicorn's five retries over five seconds."""
    first = serve(ciba_env(tmp_path))
    started = time.monotonic()
    result = cli("serve", "--port", str(first.port), env=ciba_env(tmp_path))
    assert time.monotonic() - started < 5
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{PROG}: error: cannot listen on 127.0.0.1:{first.port}: Address already in use\n"


def test_check_warnings_are_one_line_each(tmp_path: Path) -> None:
    result = cli("check", env=ciba_env(tmp_path, CIBA_TOKENS=json.dumps([{"service": "1", "token": "dev-only"}])))
    assert result.returncode == 0
    assert result.stdout.startswith(f"ok: store sqlite:///{tmp_path / 'tickets.sqlite3'} reachable, 1 grant covering")
    assert result.stderr == (
        f"{PROG}: warning: grant for 1 has a clear-text 'token'; use 'token_sha256' (the SHA-256) outside development\n"
    )


def test_serve_sighup_rereads_the_tokens_file(tmp_path: Path, serve: type[Serve]) -> None:
    """kill -HUP starts new workers with the file's grants; a bad file keeps the last good
    ones and the server up (docs/deployment.md). Looks are off, so only the SIGHUP reads."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([{"service": SERVICE, "token_sha256": sha256_hex("old-token")}]))
    env = store_env(tmp_path, CIBA_TOKENS_FILE=str(tokens), CIBA_TOKENS_RELOAD_INTERVAL="0")
    server = serve(env, "--log-level", "warning", "--workers", "2")

    def status(token: str) -> int:
        url = server.url + FAIL_PATH.format(SERVICE)
        return requests.post(url, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    def switch_to(expected: tuple[int, int]) -> None:
        # Old and new workers overlap for a moment; wait until only new ones answer.
        deadline = time.monotonic() + 15
        while {(status("old-token"), status("new-token")) for _ in range(4)} != {expected}:
            assert time.monotonic() < deadline, f"the workers never answered {expected}"
            time.sleep(0.1)

    assert (status("old-token"), status("new-token")) == (200, 401)
    tokens.write_text(json.dumps([{"service": SERVICE, "tokn": "typo"}]))
    server.process.send_signal(signal.SIGHUP)
    time.sleep(2)
    assert server.process.poll() is None
    switch_to((200, 401))  # the master refused the file: its workers keep the grants of before
    tokens.write_text(json.dumps([{"service": SERVICE, "token_sha256": sha256_hex("new-token")}]))
    server.process.send_signal(signal.SIGHUP)
    switch_to((401, 200))
    assert requests.get(server.url + "/", timeout=10).status_code == 404
    assert server.stop() == 0
    assert "refused: CIBA_TOKENS_FILE" in server.stderr
    assert "Traceback" not in server.stderr


def test_serve_a_worker_that_cannot_build_serves_degraded(tmp_path: Path, serve: type[Serve]) -> None:
    """Past the first start, a worker's failed boot must not stop gunicorn (it would)."""
    data = tmp_path / "data"
    data.mkdir()
    server = serve(ciba_env(tmp_path, CIBA_STORE_URL=f"sqlite:///{data / 't.sqlite3'}"), "--log-level", "warning")
    url = server.url + FAIL_PATH.format(SERVICE)
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    assert requests.post(url, json={}, headers=headers, timeout=10).status_code == 200
    for leftover in data.iterdir():
        leftover.unlink()
    data.rmdir()
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    (worker,) = map(int, children.read_text().split())
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while children.read_text().split() in ([], [str(worker)]):
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.1)
    answer = requests.post(url, json={}, headers=headers, timeout=10)
    assert (answer.status_code, answer.json()["resultCode"]) == (500, "A185103")
    assert requests.get(server.url + "/", timeout=10).status_code == 404
    assert server.stop() == 0
    assert "the fail API answers 500 in this process until it is fixed" in server.stderr, server.stderr


def test_serve_refuses_an_app_that_already_serves_the_fail_api(tmp_path: Path) -> None:
    """Two middlewares with two stores: the outer would answer, the app's ticket would stay."""
    (tmp_path / "carrier.py").write_text(
        "from flask import Flask\n"
        "from ciba_middleware.flask import CibaMiddleware\n"
        "app = Flask(__name__)\n"
        "app.config.from_prefixed_env()\n"
        "CibaMiddleware(app)\n"
    )
    env = {**ciba_env(tmp_path), "FLASK_CIBA_STORE_URL": "memory://", "FLASK_CIBA_TOKENS": json.dumps(GRANTS)}
    env["FLASK_CIBA_SERVICE_ID"] = SERVICE
    result = subprocess.run(
        [str(SCRIPT), "serve", "--port", str(free_port()), "--app", "carrier:app"],
        env=clean_env(env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert "Starting gunicorn" not in result.stderr  # the app's own log line comes first, as it imports
    assert result.stderr.splitlines()[-1] + "\n" == (
        f"{PROG}: error: --app carrier:app already serves the fail API (it carries a BackchannelFailMiddleware, "
        "e.g. from CibaMiddleware or from_env()): serve would answer in front of it with another store; run it "
        "without serve, e.g. gunicorn 'carrier:app'\n"
    )


def test_a_ticket_that_starts_with_a_dash_is_a_ticket(tmp_path: Path) -> None:
    """One ticket in 64 starts with '-': argparse took it for an option."""
    env = store_env(tmp_path)
    store = store_from_url(env["CIBA_STORE_URL"])
    try:
        ticket = next(t for t in (store.issue(SERVICE, 60) for _ in range(5000)) if t.startswith("-"))
    finally:
        store.close()
    h = ticket_hash(ticket)
    for args, code, stdout in [
        (["show", "--service", SERVICE, ticket], 0, f"ticket {h} exists for service {SERVICE}\n"),
        (["show", ticket, "--service", SERVICE], 0, f"ticket {h} exists for service {SERVICE}\n"),
        (["show", "--service", SERVICE, "--", ticket], 0, f"ticket {h} exists for service {SERVICE}\n"),
        (["delete", "--service", SERVICE, ticket], 0, f"deleted ticket {h} of service {SERVICE}\n"),
        (["show", "--service", SERVICE, ticket], 1, f"no such ticket for service {SERVICE} "
         "(unknown, expired, used, or of another service)\n"),
    ]:  # fmt: skip
        result = cli("ticket", *args, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (code, stdout, ""), args
    # Anything else that starts with '-' is still an option, and still refused as one.
    result = cli("ticket", "show", "--service", SERVICE, "-x", env=env)
    assert result.returncode == 2
    assert "unrecognized arguments: -x" in result.stderr or "required: TICKET" in result.stderr


@pytest.mark.parametrize(
    ("raised", "code", "stderr"),
    [
        pytest.param(
            RuntimeError("boom"),
            4,
            f"{PROG}: error: unexpected RuntimeError: boom (a bug: please report it)\n",
            id="bug",
        ),
        pytest.param(KeyboardInterrupt(), 130, "", id="ctrl-c"),
    ],
)
def test_unexpected_errors_are_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: BaseException, code: int, stderr: str
) -> None:
    """In process, since nothing in a healthy install raises these on cue."""
    import ciba_middleware.cli

    def explode(nbytes: int) -> str:
        raise raised

    monkeypatch.setattr(ciba_middleware.cli.secrets, "token_urlsafe", explode)
    assert ciba_middleware.cli.main(["token", "new", "--service", SERVICE]) == code
    assert capsys.readouterr() == ("", stderr)
