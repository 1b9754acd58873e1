"""A store that is never closed leaves nothing for the garbage collector to complain about.

Python 3.13 warns ``ResourceWarning: unclosed database`` for every sqlite3 connection that
is collected open, which fails suites run with ``-W error``. The store closes its idle
connections when it is collected, and at interpreter exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import werkzeug

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import gc, os, sys
from ciba_middleware.stores.sqlite import SQLiteTicketStore

directory = sys.argv[1]
dropped = SQLiteTicketStore(os.path.join(directory, "dropped.db"))
dropped.delete("42", dropped.issue("42"))
memory = SQLiteTicketStore(":memory:")
memory.issue("42")
del dropped, memory
gc.collect()
# Its last connection closed, SQLite folded the WAL back into the file and removed it.
assert not os.path.exists(os.path.join(directory, "dropped.db-wal"))
kept = SQLiteTicketStore(os.path.join(directory, "kept.db"))  # open until the interpreter exits
kept.issue("42")
print("done")
"""


def interpreters() -> list[object]:
    found: list[object] = [pytest.param(sys.executable, id=f"python{sys.version_info[0]}.{sys.version_info[1]}")]
    if sys.version_info < (3, 13):
        candidates = [os.path.expanduser("~/.pyenv/versions/3.13.0/bin/python"), shutil.which("python3.13")]
        usable = [c for c in candidates if c and _runs(c)]
        marks = [] if usable else [pytest.mark.skip(reason="no Python 3.13 here")]
        found.append(pytest.param(usable[0] if usable else "python3.13", id="python3.13", marks=marks))
    return found


def _runs(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        return False


@pytest.mark.parametrize("python", interpreters())
def test_an_unclosed_store_gives_no_resource_warning(python: str, tmp_path: Path) -> None:
    # The package from this tree; its pure-Python dependencies from this environment.
    path = os.pathsep.join([str(ROOT), str(Path(werkzeug.__file__).parent.parent)])
    result = subprocess.run(
        [python, "-W", "error", "-c", SCRIPT, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")
    assert not (tmp_path / "kept.db-wal").exists()  # closed at exit too
