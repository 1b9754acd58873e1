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
grants and whose server never had any either.

Only the server's very first load may refuse to start on a bad file (:func:`first_start`).
Every later load keeps the last good grants, whatever the server: a worker process that
replaces another (gunicorn with any worker class, ``uvicorn --workers``, hypercorn, the
child of Django's autoreloader, uWSGI's workers and its re-executed master) finds them in
:func:`last_good`, a copy its server's earlier workers left in a private directory.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
    "last_good",
    "parse_grants",
    "read_snapshot",
    "remember",
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
    #: The file's bytes, for :func:`remember`.
    content: bytes = field(default=b"", repr=False, compare=False)

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


def read_snapshot(
    path: str,
    name: str = "CIBA_TOKENS_FILE",
    validate: Callable[[bytes, str], tuple[tuple[Mapping[str, Any], ...], Any]] | None = None,
) -> Snapshot:
    """Read and validate the grants file at ``path``, or raise ConfigurationError naming ``name``.

    ``validate`` reads another kind of file the same way (``CIBA_CLIENTS_FILE``).
    """
    data, signature = _read_file(path, name)
    grants, verifier = (validate or _validate)(data, f"{name} {path!r}")
    return Snapshot(grants, verifier, hashlib.sha256(data).hexdigest(), signature, data)


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
    """Whether this load is part of the server's very first start, where a bad configuration
    must stop the server rather than be served around.

    False in a worker process whose server already loaded the app once (:func:`last_good`
    has a record of it), and in a gunicorn worker beyond the first ``--workers`` (its age,
    gunicorn's count of workers spawned, is beyond it: a SIGHUP, ``--max-requests`` or a
    crash replaced one). Such a worker must boot, whatever it finds: gunicorn, hypercorn and
    uvicorn stop (or crash-loop) the whole server when a worker fails to.
    """
    worker = _gunicorn_worker()
    if worker is not None:
        age = getattr(worker, "age", None)
        workers = getattr(getattr(worker, "cfg", None), "workers", None)
        if isinstance(age, int) and isinstance(workers, int) and age > workers:
            return False
    folder = _records()
    return folder is None or not any(folder[0].glob(f"{folder[1]}-*"))


def last_good(path: str, name: str = "CIBA_TOKENS_FILE") -> Snapshot | None:
    """The last good grants of ``path`` that an earlier load of this server recorded
    (:func:`remember`), or None: in the server's first start, outside a worker process, or
    when no good file was ever read."""
    record = _record(path)
    if record is None:
        return None
    try:
        data = record.read_bytes()
        grants, verifier = _validate(data, f"{name} {path!r} (last good copy)")
    except (OSError, ConfigurationError):
        return None
    return Snapshot(grants, verifier, hashlib.sha256(data).hexdigest(), None, data)


def remember(path: str, snapshot: Snapshot) -> None:
    """Record ``snapshot`` as the last good grants of ``path`` for the later loads of this
    server (a worker replacing another); nothing outside a worker process.

    The copy is the file's own bytes, in a directory only this user can read
    (``$TMPDIR/ciba-middleware-<uid>``), one file per server process and path; the records
    of servers that are gone are removed on the way.
    """
    record = _record(path)
    if record is None or not snapshot.content:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            if record.read_bytes() == snapshot.content:
                return
        temporary = record.with_name(f".{record.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(snapshot.content)
        os.replace(temporary, record)
        _forget_gone(record.parent)
    except OSError as exc:
        log.warning("could not keep a copy of the last good %s for later workers: %s", path, exc)


def _record(path: str) -> Path | None:
    folder = _records()
    if folder is None:
        return None
    directory, server = folder
    key = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return directory / f"{server}-{key}"


def _records() -> tuple[Path, str] | None:
    """This user's directory of records and the name of this process's server in it
    (``pid.starttime``), or None outside a worker process or where either is unknown."""
    server = _server_pid()
    if server is None:
        return None
    started = _start_time(server)
    if started is None:
        return None
    directory = Path(tempfile.gettempdir()) / f"ciba-middleware-{os.getuid()}"
    try:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        st = os.lstat(directory)
    except OSError:
        return None
    # Another user's directory, or one others may write into: not trusted.
    if not os.path.isdir(directory) or os.path.islink(directory) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return directory, f"{server}.{started}"


def _server_pid() -> int | None:
    """The process that started this one as a worker, whose later workers share its records;
    None when this process is not a worker (it is the server: its own start is the first)."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid:
        return parent.pid  # uvicorn --workers, hypercorn: spawned workers
    if os.environ.get("RUN_MAIN") == "true":
        return os.getppid()  # Django's runserver: the autoreloader's child
    if _gunicorn_worker() is not None:
        return os.getppid()
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None:
        # Workers forked from the master; a SIGHUP re-executes the master in the same process.
        with contextlib.suppress(Exception):
            master: int = uwsgi.masterpid()
            return master or os.getpid()
    return None


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _forget_gone(directory: Path) -> None:
    for record in directory.glob("*-*"):
        pid, _, started = record.name.partition("-")[0].partition(".")
        if pid.isdigit() and _start_time(int(pid)) != started:
            with contextlib.suppress(OSError):
                record.unlink()


_workers: dict[int, Any] = {}


def _gunicorn_worker() -> Any:
    """This process's gunicorn worker object, or None outside gunicorn's workers."""
    pid = os.getpid()
    if pid not in _workers:
        _workers[pid] = _find_gunicorn_worker(pid)
    return _workers[pid]


def _find_gunicorn_worker(pid: int) -> Any:
    base = sys.modules.get("gunicorn.workers.base")
    if base is None:
        return None
    # A sync worker handles SIGTERM with a bound method of itself, set before the app is
    # imported; other worker classes (uvicorn's) replace the handler before the app starts.
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if isinstance(worker, base.Worker):
        return worker
    return next((o for o in gc.get_objects() if isinstance(o, base.Worker) and o.pid == pid), None)


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

    A subclass reloads another kind of file (``CIBA_CLIENTS_FILE``) by giving its own
    ``_validate``.

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

    #: Reads a file's bytes into its entries and what serves them, or ConfigurationError.
    _validate = staticmethod(_validate)
    #: What a refused file leaves, for the ERROR line: with nothing loaded, and with a load before.
    _without = "the fail API answers 500 until the file is fixed"
    _kept = "the grants loaded before stay in force"

    def look_if_due(self) -> None:
        """Look at the file when the interval since the last look has run out."""
        if time.monotonic() >= self._next_check:
            self._look(forced=False)

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
            grants, verifier = self._validate(data, f"{self.name} {self.path!r}")
        except ConfigurationError as exc:
            self._refuse(str(exc), digest)
            return
        new = Snapshot(grants, verifier, digest, signature, data)
        self.snapshot, self.loaded_at, self.refused, self._refused_digest = new, time.time(), None, None
        remember(self.path, new)
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
            log.error("refused: %s; %s", problem, self._without)
        else:
            version = self.snapshot.version
            log.error("refused: %s; %s (version %s)", problem, self._kept, version)
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
