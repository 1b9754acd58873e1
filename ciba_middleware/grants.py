"""Grants read from ``CIBA_TOKENS_FILE``, reloaded while the process runs: :class:`ReloadingVerifier`.

Rotating a secret is editing the file. The process notices by itself, whatever the WSGI
server: at most once every ``CIBA_TOKENS_RELOAD_INTERVAL`` seconds (default 1), the first
fail call to arrive pays one ``os.stat`` of the file, and reads it only when it changed.
SIGHUP (where the server lets the process see it), a ``fork`` (gunicorn starting workers,
``--preload`` included) and :meth:`ReloadingVerifier.reload` read it at once.

A new file is validated whole, as at start-up (UTF-8, JSON, every grant), before it
replaces the grants in force. A bad one, or one caught half written, is refused with one
ERROR line naming the file and the problem; the last good grants stay in force, and the
file is read again when it changes. Nothing here ever raises out of a fail call except
:class:`GrantsUnavailable`, the contract's 500, and only in a process that never had good
grants (see :func:`first_start`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .auth import Principal, StaticTokenVerifier
from .errors import ConfigurationError, GrantsUnavailable

__all__ = [
    "DEFAULT_INTERVAL",
    "GrantsUnavailable",
    "ReloadingVerifier",
    "Snapshot",
    "Unavailable",
    "first_start",
    "parse_grants",
    "read_snapshot",
]

log = logging.getLogger(__name__)

#: Seconds between two looks at the file (``CIBA_TOKENS_RELOAD_INTERVAL``).
DEFAULT_INTERVAL = 1.0
#: A file modified this recently may still be written to within the same timestamp: its
#: signature is not trusted, and it is read again (the content's digest says if it changed).
_SETTLING = 2.0

#: Every live verifier, for SIGHUP and fork.
_LIVE: weakref.WeakSet[ReloadingVerifier] = weakref.WeakSet()


@dataclass(frozen=True)
class Snapshot:
    """One successful read of a grants file: the grants, their verifier and the content's SHA-256."""

    grants: tuple[Mapping[str, Any], ...]
    verifier: StaticTokenVerifier
    digest: str
    #: ``os.stat`` of the file before it was read (what a later look compares with).
    signature: tuple[int, ...] | None

    @property
    def version(self) -> str:
        """The start of the content's SHA-256: which file is in force, for logs and ``check``."""
        return self.digest[:12]


def parse_grants(raw: object, name: str) -> tuple[Mapping[str, Any], ...]:
    """``CIBA_TOKENS``'s value (JSON text, or already a list) as the list of grants.

    Raises :class:`ConfigurationError` naming ``name``; never RecursionError, whatever the
    nesting.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except RecursionError:
            raise ConfigurationError(f"{name} is nested too deeply to be a list of grants") from None
        except ValueError as exc:
            raise ConfigurationError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{name} must be a non-empty JSON list of grants")
    return tuple(raw)


def read_snapshot(path: str, name: str = "CIBA_TOKENS_FILE") -> Snapshot:
    """Read and validate the grants file at ``path``, or raise ConfigurationError naming ``name``."""
    data, signature = _read_file(path, name)
    grants, verifier = _validate(data, f"{name} {path!r}")
    return Snapshot(grants, verifier, hashlib.sha256(data).hexdigest(), signature)


def _read_file(path: str, name: str) -> tuple[bytes, tuple[int, ...]]:
    """The file's bytes, and its ``os.stat`` signature taken before they were read."""
    try:
        before = _signature(path)
        with open(path, "rb") as f:
            return f.read(), before
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from None


def _validate(data: bytes, named: str) -> tuple[tuple[Mapping[str, Any], ...], StaticTokenVerifier]:
    """The file's grants and their verifier, checked whole, or ConfigurationError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{named} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    grants = parse_grants(text, named)
    try:
        return grants, StaticTokenVerifier(grants)
    except RecursionError:
        raise ConfigurationError(f"{named}: a grant is nested too deeply") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{named}: {exc}") from None


def first_start() -> bool:
    """Whether this process is part of the server's first start, where bad configuration
    must stop the server rather than be served around.

    True everywhere except in a gunicorn worker started after the first ones: a worker
    whose age (gunicorn numbers the workers it spawns) is beyond ``--workers``, because a
    SIGHUP, ``--max-requests`` or a crash replaced one. gunicorn stops the whole server
    when a worker fails to boot, so such a worker must boot, and serve what it can.
    """
    # A gunicorn worker handles SIGTERM with a bound method of itself, set before the app
    # is imported: the one handle this process has on which worker it is.
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if not type(worker).__module__.startswith("gunicorn."):
        return True
    age = getattr(worker, "age", None)
    workers = getattr(getattr(worker, "cfg", None), "workers", None)
    if not isinstance(age, int) or not isinstance(workers, int):
        return True
    return age <= workers


class Unavailable:
    """A verifier for a process that has no usable configuration: every call is a 500.

    Pass-through requests are unaffected; the fail API answers ``A185103`` and the reason
    is in the server log, not in the answer.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def verify_bearer(self, token: str) -> Principal | None:
        raise GrantsUnavailable("no grants are loaded; see the server log.")

    def verify_api_key(self, api_key: str, api_secret: str) -> Principal | None:
        raise GrantsUnavailable("no grants are loaded; see the server log.")

    @property
    def services(self) -> frozenset[str]:
        return frozenset()


class ReloadingVerifier:
    """A :class:`~ciba_middleware.StaticTokenVerifier` over a file, replaced when the file changes.

    ::

        verifier = ReloadingVerifier("/etc/ciba/tokens.json", read_snapshot("/etc/ciba/tokens.json"))

    :param path: the grants file.
    :param snapshot: the grants read at start-up, or None in a process that could not read
        them (then every fail call gets :class:`GrantsUnavailable` until a good file appears).
    :param interval: seconds between two looks at the file on the request path; 0: look
        only on SIGHUP, after a fork, or when :meth:`reload` is called.
    :param name: the variable, for messages.
    :param refused: why the file was refused at start-up, when ``snapshot`` is None.
    """

    def __init__(
        self,
        path: str,
        snapshot: Snapshot | None,
        *,
        interval: float = DEFAULT_INTERVAL,
        name: str = "CIBA_TOKENS_FILE",
        refused: str | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 <= interval < math.inf:
            raise ConfigurationError(f"interval must be a number of seconds, 0 or more, not {interval!r}")
        self.path = path
        self.name = name
        self.interval = float(interval)
        self.snapshot = snapshot
        #: Wall-clock time of the last successful load (start-up included), or None.
        self.loaded_at: float | None = time.time() if snapshot is not None else None
        #: How many files were refused since start-up.
        self.failures = 0 if refused is None else 1
        #: Why the file now on disk was refused, or None when the grants in force are its own.
        self.refused = refused
        #: Called once for each refused file (the metrics' counter).
        self.on_refused: Callable[[], None] | None = None
        self._signature = snapshot.signature if snapshot is not None else None
        self._settled = snapshot is not None and not _recent(snapshot.signature)
        # Refused at start-up (and logged then): said refused again only if it changes.
        self._refused_digest: str | None = None
        if refused is not None:
            with contextlib.suppress(ConfigurationError):
                self._refused_digest = hashlib.sha256(_read_file(path, name)[0]).hexdigest()
        self._next_check = time.monotonic() + self.interval if self.interval else math.inf
        self._lock = threading.Lock()
        _LIVE.add(self)
        _install_sighup()

    # -- the TokenVerifier protocol -----------------------------------------------------

    def verify_bearer(self, token: str) -> Principal | None:
        if time.monotonic() >= self._next_check:
            self._look(forced=False)
        return self._current().verify_bearer(token)

    def verify_api_key(self, api_key: str, api_secret: str) -> Principal | None:
        if time.monotonic() >= self._next_check:
            self._look(forced=False)
        return self._current().verify_api_key(api_key, api_secret)

    @property
    def services(self) -> frozenset[str]:
        """The services the grants in force cover."""
        return self.snapshot.verifier.services if self.snapshot is not None else frozenset()

    def __len__(self) -> int:
        return len(self.snapshot.grants) if self.snapshot is not None else 0

    # -- reloading ------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the file now, whether or not it looks changed; True when its grants are in force."""
        self._look(forced=True)
        return self.refused is None and self.snapshot is not None

    def _current(self) -> StaticTokenVerifier:
        snapshot = self.snapshot
        if snapshot is None:
            raise GrantsUnavailable("no grants are loaded; see the server log.")
        return snapshot.verifier

    def _look(self, *, forced: bool) -> None:
        # One thread looks; the others go on with the grants in force.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = time.monotonic() + self.interval if self.interval else math.inf
            if not forced and self._settled:
                try:
                    if _signature(self.path) == self._signature:
                        return
                except OSError:
                    pass  # read below, which says why
            self._read()
        finally:
            self._lock.release()

    def _read(self) -> None:
        try:
            data, signature = _read_file(self.path, self.name)
        except ConfigurationError as exc:
            self._refuse(str(exc), None)
            return
        digest = hashlib.sha256(data).hexdigest()
        # A file modified within the last moments may still be being written: read it
        # again at the next look, even if it looks the same.
        self._signature, self._settled = signature, not _recent(signature)
        old = self.snapshot
        if old is not None and old.digest == digest:
            if self.refused is not None:
                log.info("%s %s is back to the grants in force (version %s)", self.name, self.path, old.version)
            self.refused = self._refused_digest = None
            return
        if digest == self._refused_digest:
            return  # refused already, and said so
        try:
            grants, verifier = _validate(data, f"{self.name} {self.path!r}")
        except ConfigurationError as exc:
            self._refuse(str(exc), digest)
            return
        new = Snapshot(grants, verifier, digest, signature)
        self.snapshot, self.loaded_at, self.refused, self._refused_digest = new, time.time(), None, None
        log.info(
            "%s %s reloaded: %d grants covering %d services (version %s)",
            self.name,
            self.path,
            len(new.grants),
            len(new.verifier.services),
            new.version,
        )

    def _refuse(self, problem: str, digest: str | None) -> None:
        """Keep the grants in force; say why once per refused content (or unreadable file)."""
        if digest is None:
            self._settled = False  # cannot be read: try again at each look
            if problem == self.refused and self._refused_digest is None:
                return
        self.refused, self._refused_digest = problem, digest
        self.failures += 1
        if self.snapshot is None:
            log.error("refused: %s; the fail API answers 500 until the file is fixed", problem)
        else:
            version = self.snapshot.version
            log.error("refused: %s; the grants loaded before stay in force (version %s)", problem, version)
        if self.on_refused is not None:
            try:
                self.on_refused()
            except Exception:
                log.exception("counting a refused %s failed", self.name)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        # A worker forked from a master (gunicorn --preload, or a SIGHUP's new workers)
        # looks at the file on its first call, whatever the interval.
        self._next_check = 0.0


def _signature(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _recent(signature: tuple[int, ...] | None) -> bool:
    return signature is None or time.time() - signature[3] / 1e9 < _SETTLING


# -- SIGHUP and fork ----------------------------------------------------------------------

_previous_hup: Any = None
_hup_installed = False


def _install_sighup() -> None:
    """Reload every verifier on SIGHUP, in the main thread of a process that lets us.

    SIGHUP's default is to end the process: a WSGI server that does not handle it (Werkzeug,
    waitress, a gunicorn worker) now reloads the grants instead. A handler already there is
    called after ours. Servers that install their own later (gunicorn's master) keep it.
    """
    global _previous_hup, _hup_installed
    if _hup_installed or not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGHUP)
    if current is _on_sighup:
        return
    _previous_hup = current if callable(current) else None
    signal.signal(signal.SIGHUP, _on_sighup)
    _hup_installed = True


def _on_sighup(signum: int, frame: FrameType | None) -> None:
    # Not in the handler itself: it may interrupt a thread holding a lock the reload needs.
    threading.Thread(target=_reload_all, name="ciba-tokens-reload", daemon=True).start()
    if _previous_hup is not None:
        _previous_hup(signum, frame)


def _reload_all() -> None:
    for verifier in list(_LIVE):
        log.info("SIGHUP: reading %s %s", verifier.name, verifier.path)
        verifier.reload()


def _before_fork() -> None:
    # In the parent (gunicorn's master under --preload): bring the grants up to date, so
    # that the child starts from the last good ones rather than those of start-up.
    for verifier in list(_LIVE):
        verifier._look(forced=False)


def _after_fork_in_child() -> None:
    global _hup_installed
    _hup_installed = False
    for verifier in list(_LIVE):
        verifier._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
