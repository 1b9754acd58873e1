"""The test suite on every supported Python, run from the built sdist.

Each session builds the sdist of the checkout, installs it with the ``test`` extra into a
fresh venv of its Python, unpacks it and runs pytest in the unpacked tree: so the sdist is
proven to hold what its tests need and the ``test`` extra what they import, with nothing of
the checkout around. Warnings are errors (pyproject.toml's ``filterwarnings``) on every
version.

    nox                              # tests-3.11, tests-3.12, tests-3.13: the SUBSET below
    nox -s tests-3.13                # one Python
    nox -s tests-3.12 -- tests -x    # pytest arguments instead of the subset: here, everything

``scripts/check`` runs the whole suite on 3.11 from the checkout, then tests-3.12 and
tests-3.13 (the subset, about a minute each), to stay well inside CI's time.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.11", "3.12", "3.13"]

#: What the other Pythons run by default: the middleware end to end over WSGI and real
#: gunicorn servers, the contract, credentials and configuration, the command line, the
#: Flask extension, in-process fail(), metrics and audit, and every store against its
#: real backend (SQLite, Redis, PostgreSQL). Left to 3.11: the slow multi-process and
#: outage tests, the fuzzers and hardening suite, the demo, the benchmarks' smoke test,
#: the docs' examples (they start servers for every curl example) and the
#: packaging tests (they build from a git checkout).
SUBSET = [
    "tests/test_wsgi.py",
    "tests/test_contract.py",
    "tests/test_auth.py",
    "tests/test_config.py",
    "tests/test_cli.py",
    "tests/test_flask.py",
    "tests/test_inprocess.py",
    "tests/test_passthrough.py",
    "tests/test_client.py",
    "tests/test_audit.py",
    "tests/test_metrics.py",
    "tests/stores",
    "-m",
    "not slow",
]

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

# pyenv's interpreters, where a machine has them but no pyenv shim selects them.
for _version in PYTHONS:
    for _bin in sorted(Path.home().glob(f".pyenv/versions/{_version}.*/bin"), reverse=True)[:1]:
        os.environ["PATH"] = f"{_bin}{os.pathsep}{os.environ.get('PATH', '')}"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    tmp = Path(session.create_tmp())
    for old in tmp.glob("ciba_middleware-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    session.install("build")
    session.run("python", "-m", "build", "--sdist", "--outdir", str(tmp), str(ROOT), silent=True)
    (sdist,) = tmp.glob("ciba_middleware-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp, filter="data")
    source = tmp / sdist.name.removesuffix(".tar.gz")
    session.install(f"{sdist}[test]")
    session.chdir(source)
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *(session.posargs or SUBSET))
