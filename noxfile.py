"""The test suite on every supported Python, run from the built sdist.

Each session makes a fresh venv of its Python with uv, installs requirements/test.lock there
(the ``test`` extra at the locked versions, hashes checked) and the sdist of the checkout
without dependencies, unpacks the sdist and runs pytest in the unpacked tree: so the sdist is
proven to hold what its tests need and the ``test`` extra what they import, with nothing of
the checkout around. Warnings are errors (pyproject.toml's ``filterwarnings``) on every
version.

    nox                              # tests-3.11, tests-3.12, tests-3.13: the SUBSET below
    nox -s tests-3.13                # one Python
    nox -s tests-3.12 -- tests -x    # pytest arguments instead of the subset: here, everything

``scripts/check`` runs the whole suite on 3.11 from the checkout and, at the same time,
tests-3.12 and tests-3.13 (the subset), on pytest-xdist workers: ``CIBA_TEST_WORKERS``, when
set, is the number a session's pytest gets (``-n``; scripts/check gives each session one).
It builds the sdist once beforehand and names its directory in ``CIBA_SDIST_DIR``, which the
sessions then test instead of building their own in the checkout at the same time; it makes
their venvs first (``--install-only``), and runs them with ``-R`` (reuse, no install).
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.11", "3.12", "3.13"]

#: What the other Pythons run by default: the middleware end to end over WSGI and real
#: gunicorn servers, the contract, credentials and configuration, the command line (a part), the
#: Flask extension, the ASGI adapter (asyncio changes between Pythons), the CIBA family's
#: routes, endpoints and records, in-process fail(), metrics and audit, and the stores'
#: contract, their async paths, SQLite's locking and PostgreSQL's recovery, against the real
#: backends (SQLite, Redis plain and over TLS, PostgreSQL; SUBSET_BACKENDS). Left to 3.11:
#: the slow multi-process and outage tests (processes racing on one record, Sentinel, Cluster
#: and PgBouncer topologies, servers stopped and restarted, files replaced under workers), the
#: record stores' and the URLs' full matrices and two stores on one server (tests/stores'
#: test_records, test_store_backends, test_store_nodes), the stores over Unix sockets and
#: Redis Cluster (the same code on every Python), the fuzzers and hardening suite, the demo,
#: the benchmarks' smoke test, the docs' examples (they start servers for every curl example)
#: and the packaging tests (they build from a git checkout).
SUBSET = [
    "tests/test_wsgi.py",
    "tests/test_contract.py",
    "tests/test_auth.py",
    "tests/test_config.py",
    # The command line: each test is a process of its own; these cover every command's
    # parsing, help and errors, a ticket's life, check and serve.
    "tests/test_cli.py::test_version",
    "tests/test_cli.py::test_every_command_has_help",
    "tests/test_cli.py::test_bad_arguments_are_one_line_and_exit_2",
    "tests/test_cli.py::test_ticket_lifecycle_without_tokens",
    "tests/test_cli.py::test_check_ok",
    "tests/test_cli.py::test_serve_answers_the_fail_api",
    "tests/test_flask.py",
    "tests/test_asgi.py",
    "tests/test_inprocess.py",
    "tests/test_passthrough.py",
    "tests/test_client.py",
    "tests/test_audit.py",
    "tests/test_metrics.py",
    "tests/ciba/test_routes.py",
    "tests/ciba/test_endpoints.py",
    "tests/ciba/test_records.py",
    "tests/stores/test_store_contract.py",
    "tests/stores/test_store_async.py",
    "tests/stores/test_sqlite_hot_path.py",
    "tests/stores/test_sqlite_threads.py",
    "tests/stores/test_sqlite_resources.py",
    "tests/stores/test_store_outages.py",
    "tests/stores/test_postgres_recovery.py",
    "tests/stores/test_schemes.py",
    "-m",
    "not slow",
]
#: The store suites' backends in the SUBSET (``CIBA_TEST_BACKENDS``, tests/_stores.py).
SUBSET_BACKENDS = "memory,sqlite,redis,rediss,postgresql"

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True
# Venvs made and filled by uv: the one installed from requirements/bootstrap.lock beside nox.
nox.options.default_venv_backend = "uv"
UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
LOCK = ROOT / "requirements" / "test.lock"

#: What the SUBSET never starts, left out of its install: uWSGI has no wheel, and building it
#: from source for each Python would take longer than the subset's tests.
NOT_FOR_SUBSET = ("uwsgi",)


def _lock_for_subset(tmp: Path) -> Path:
    """test.lock without the requirements of NOT_FOR_SUBSET (a requirement's hashes and
    comments are the indented lines under it)."""
    kept: list[str] = []
    skipping = False
    for line in LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            skipping = line.split("==", 1)[0].strip() in NOT_FOR_SUBSET
        if not skipping:
            kept.append(line)
    path = tmp / "test-subset.lock"
    path.write_text("\n".join(kept) + "\n")
    return path


# pyenv's interpreters, where a machine has them but no pyenv shim selects them.
for _version in PYTHONS:
    for _bin in sorted(Path.home().glob(f".pyenv/versions/{_version}.*/bin"), reverse=True)[:1]:
        os.environ["PATH"] = f"{_bin}{os.pathsep}{os.environ.get('PATH', '')}"
# uv uses those, or fails: it never downloads an interpreter of its own here.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    tmp = Path(session.create_tmp())
    for old in tmp.glob("ciba_middleware-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    built = os.environ.get("CIBA_SDIST_DIR")
    if not built:
        session.run(UV, "build", "-q", "--sdist", "--out-dir", str(tmp), str(ROOT), external=True)
    (sdist,) = Path(built or tmp).glob("ciba_middleware-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp, filter="data")
    source = tmp / sdist.name.removesuffix(".tar.gz")
    session.install("--require-hashes", "-r", str(LOCK if session.posargs else _lock_for_subset(tmp)))
    session.install("--no-deps", str(sdist))
    session.chdir(source)
    workers = os.environ.get("CIBA_TEST_WORKERS")
    parallel = ["-n", workers] if workers else []
    backends = {} if session.posargs else {"CIBA_TEST_BACKENDS": SUBSET_BACKENDS}
    arguments = session.posargs or SUBSET
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *parallel, *arguments, env=backends)
