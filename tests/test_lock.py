"""The locked toolchain (requirements/, made by ``bash scripts/lock``) against the ranges.

The package's own requirements stay ranges (pyproject.toml's ``dependencies``, setup.py's
EXTRAS): a library does not pin its users. CI installs from the locks instead, so these
tests check that each lock still satisfies every range, on each supported Python, and that
every package in it is pinned with its hashes.
"""

from __future__ import annotations

import runpy
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PYTHONS = ["3.11", "3.12", "3.13"]


def _environment(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0"}


def _applies(marker: Marker | None, python: str, extra: str = "") -> bool:
    return marker is None or marker.evaluate({**_environment(python), "extra": extra})


def parse_lock(text: str) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of a lock file (``name==version ; marker``) with its hashes."""
    entries: list[tuple[Requirement, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            if not entries:
                raise ValueError(f"a hash before any requirement: {raw!r}")
            entries[-1][1].append(line.removeprefix("--hash="))
        else:
            entries.append((Requirement(line), []))
    return entries


def pins(lock: str, python: str) -> dict[NormalizedName, Version]:
    """The versions ``lock`` installs on ``python``."""
    found: dict[NormalizedName, Version] = {}
    for requirement, _ in parse_lock((LOCKS / lock).read_text()):
        if _applies(requirement.marker, python):
            name = canonicalize_name(requirement.name)
            assert name not in found, f"{lock} pins {name} twice on Python {python}"
            (specifier,) = requirement.specifier
            found[name] = Version(specifier.version)
    return found


def setup_extras() -> dict[str, list[str]]:
    """setup.py's EXTRAS, as it hands them to setuptools."""
    captured: dict[str, Any] = {}
    # A stand-in for setuptools (which a test venv may not have): setup() records its arguments.
    stand_in = types.ModuleType("setuptools")
    stand_in.setup = lambda **kw: captured.update(kw)  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "setuptools", stand_in)
        runpy.run_path(str(ROOT / "setup.py"))
    extras: dict[str, list[str]] = captured["extras_require"]
    return extras


def project_dependencies() -> list[str]:
    dependencies: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dependencies


def unmet(requirements: list[str], installed: dict[NormalizedName, Version], python: str) -> list[str]:
    """The requirements (and their extras' packages' names) that ``installed`` does not satisfy."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        if not _applies(requirement.marker, python):
            continue
        version = installed.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (locked: {version})")
    return missing


@pytest.mark.parametrize("python", PYTHONS)
def test_the_dev_lock_satisfies_every_range_of_the_package(python: str) -> None:
    extras = setup_extras()
    installed = pins("dev.lock", python)
    wanted = project_dependencies() + [text for extra in extras.values() for text in extra]
    assert unmet(wanted, installed, python) == []


@pytest.mark.parametrize("python", PYTHONS)
def test_the_test_lock_is_the_test_extra_at_the_dev_locks_versions(python: str) -> None:
    extras = setup_extras()
    installed = pins("test.lock", python)
    assert unmet(project_dependencies() + extras["test"], installed, python) == []
    dev = pins("dev.lock", python)
    assert {name: (version, dev.get(name)) for name, version in installed.items() if dev.get(name) != version} == {}


def test_the_extras_own_extras_are_locked_too() -> None:
    """``redis[hiredis]``, ``psycopg[binary]``: the packages behind an extra are in the lock
    (on every Python: hiredis and psycopg-binary have wheels for each)."""
    requirements = [Requirement(text) for texts in setup_extras().values() for text in texts]
    named = {(requirement.name, extra) for requirement in requirements for extra in requirement.extras}
    assert named == {("redis", "hiredis"), ("psycopg", "binary")}  # a new one: add its package below
    for python in PYTHONS:
        assert {"hiredis", "psycopg-binary"} <= pins("dev.lock", python).keys()
        assert {"hiredis", "psycopg-binary"} <= pins("test.lock", python).keys()


@pytest.mark.parametrize("lock", ["bootstrap.lock", "dev.lock", "test.lock"])
def test_every_locked_package_is_pinned_with_hashes(lock: str) -> None:
    entries = parse_lock((LOCKS / lock).read_text())
    assert entries
    for requirement, hashes in entries:
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", requirement
        assert hashes, f"{requirement} has no hash"
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in hashes), requirement


def test_uv_is_locked_at_the_version_scripts_lock_names() -> None:
    (line,) = (line for line in (ROOT / "scripts" / "lock").read_text().splitlines() if line.startswith("UV_VERSION="))
    ((requirement, _),) = parse_lock((LOCKS / "bootstrap.lock").read_text())
    assert requirement.name == "uv"
    assert str(requirement.specifier) == "==" + line.removeprefix("UV_VERSION=")


def test_a_lock_that_misses_a_range_is_reported() -> None:
    """The check above can fail: a pin below a range, and a package missing, are named."""
    installed = {canonicalize_name("redis"): Version("4.6.0")}
    assert unmet(["redis[hiredis]>=5.0", "Flask>=3.0"], installed, "3.11") == [
        "redis[hiredis]>=5.0 (locked: 4.6.0)",
        "Flask>=3.0 (locked: None)",
    ]
    # A requirement whose marker excludes the Python is not asked of the lock.
    assert unmet(["tomli>=2 ; python_version < '3.11'"], {}, "3.11") == []


def test_a_hash_before_any_requirement_is_a_broken_lock() -> None:
    with pytest.raises(ValueError, match="a hash before any requirement"):
        parse_lock("    --hash=sha256:" + "0" * 64)
