"""``python -m benchmarks.versus REV``: this tree's end-to-end rows against another commit's.

Never a time assertion: what is checked is that both trees are served, each from its own
source, and that a bad commit is one clear line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from benchmarks import versus


def test_a_commit_is_exported_whole(tmp_path: Path) -> None:
    short = versus.export("HEAD", tmp_path / "tree")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert short == head.stdout.strip()
    # The commit's files, not the work tree's.
    shown = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:ciba_middleware/core.py"], capture_output=True)
    assert (tmp_path / "tree" / "ciba_middleware" / "core.py").read_bytes() == shown.stdout
    assert (tmp_path / "tree" / "benchmarks" / "apps.py").is_file()


def test_a_name_that_is_no_commit_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.versus", "no-such-commit-anywhere"],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "'no-such-commit-anywhere' is not a commit of" in done.stderr
    assert "Traceback" not in done.stderr


def test_each_side_is_served_from_its_own_tree(tmp_path: Path) -> None:
    base = tmp_path / "base"
    versus.export("HEAD", base)
    # Marks only the exported tree carries, written to the server's log when imported.
    for module in ("benchmarks/apps.py", "ciba_middleware/__init__.py"):
        source = base / module
        source.write_text(
            source.read_text() + f"\nimport sys\nprint('imported the exported {module}', file=sys.stderr)\n"
        )
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = versus.compare(base, "HEAD", rounds=1, seconds=1, log_dir=logs, variants=[versus.VARIANTS[1]])
    assert [row.name for row in rows] == ["gunicorn: Flask app wrapped, passing through: this tree / HEAD"]
    assert rows[0].value > 0
    logs_of = {p: p.read_text() for p in logs.glob("gunicorn-flask_wrapped-*.log")}
    assert len(logs_of) == 2
    marked = [text for text in logs_of.values() if "imported the exported benchmarks/apps.py" in text]
    assert len(marked) == 1
    assert "imported the exported ciba_middleware/__init__.py" in marked[0]


@pytest.mark.parametrize("argv", [["HEAD", "--rounds", "0"], ["HEAD", "--seconds", "0"]])
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        versus.main(argv)
    assert exit_info.value.code == 2
