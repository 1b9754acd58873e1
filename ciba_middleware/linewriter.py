"""Where the package's own lines go: the app's logging when it has any, else stderr.

A library should write through :mod:`logging`; but under a bare ``gunicorn app:app``,
``flask run`` or uWSGI nobody configures logging, and Python then drops every INFO record.
The audit log and the start-up line are written for an operator, so :func:`destination`
decides where it goes (the audit log asks once per second of the clock):

- through :mod:`logging` when a handler of the logger (or of one it propagates to) takes
  the level: the app's own configuration wins;
- nowhere when there are handlers but none takes the level (nothing is built for a line
  no handler will emit);
- to stderr when there is no handler at all.

A :class:`LineHandler` writes whole lines only, in as few ``write()`` system calls as it
can: a line waits in memory for at most :attr:`LineHandler.delay` seconds (0.02 by
default), and the lines that waited together go out in one call of at most ``PIPE_BUF``
bytes (4096 on Linux) to a pipe, a socket or a terminal, 64 KiB to a file. So lines of
several workers sharing a pipe or an ``O_APPEND`` file never interleave (POSIX makes a pipe
write of at most ``PIPE_BUF`` bytes atomic; an audit line is about 450), and the system call
that costs more than the whole fail call (``docs/observability.md``) is paid once for many
lines, by a background thread, while the request's thread goes on.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import select
import stat
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, Final

__all__ = ["DEFAULT_DELAY", "LOGGING", "MAX_DELAY", "STDERR", "LineHandler", "destination"]

#: Seconds a line may wait in memory before it is written, by default (``CIBA_AUDIT_FLUSH``).
DEFAULT_DELAY: Final = 0.02
#: The longest wait a handler accepts.
MAX_DELAY: Final = 1.0

# A line to be made by the writer thread: (make, args) of LineHandler.write_later.
_Later = tuple[Callable[..., str], tuple[Any, ...]]
# The most lines a handler holds; beyond, the line's own caller writes them.
_MAX_WAITING = 10_000
# The most bytes one write() may carry and stay whole beside other writers' lines.
_PIPE_CHUNK = select.PIPE_BUF
_FILE_CHUNK = 65536


class LineHandler(logging.Handler):
    """A handler writing each record's message as one line, lines never torn.

    ``target`` is ``stdout``, ``stderr`` (the stream ``sys`` has at the time of each write,
    so a redirection made later is followed) or an absolute path, opened with
    ``O_APPEND`` and reopened when the file at the path changes (after logrotate moves it,
    as :class:`logging.handlers.WatchedFileHandler` does).

    ``delay`` is how long a line may wait before it is written, so that the lines of a busy
    process share system calls; 0 writes each line before :meth:`write` returns. Lines wait
    only where a thread can write them later: to a stream without a file descriptor (a
    test's capture) and under uWSGI (which forks its workers without Python's fork hooks
    and, by default, runs no thread between requests) every line is written at once.
    :meth:`flush` writes what waits now; so does the end of the process, and
    :func:`logging.shutdown`. A process killed outright (``SIGKILL``) loses the lines of
    its last ``delay`` seconds. At most 10,000 lines wait: beyond, :meth:`write` writes them
    itself.

    The audit log calls :meth:`write` directly when this handler is the only one a record
    would reach, skipping the ``LogRecord``.
    """

    def __init__(self, target: str, delay: float = DEFAULT_DELAY) -> None:
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY:g} seconds, not {delay!r}")
        super().__init__()
        self.target = target
        self.delay = delay
        self.setFormatter(logging.Formatter("%(message)s"))
        self.plain = self.formatter
        self._fd = -1
        self._file_id: tuple[int, int] | None = None
        self._chunk = _FILE_CHUNK
        self._standard = target in ("stdout", "stderr")
        # The stream of sys last seen, and its descriptor (-1: none).
        self._stream: object = None
        self._stream_fd = -1
        self._pending: deque[str | _Later] = deque()
        # Whether the writer thread has been asked to come for this handler's lines.
        self._armed = False
        self._write_lock = threading.Lock()
        # Held from taking the waiting lines to their write: a flush waits for one under way.
        self._flush_lock = threading.Lock()
        _HANDLERS.add(self)
        if not self._standard:
            self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)

    def write(self, line: str) -> None:
        """Write ``line`` and a newline, now or within :attr:`delay` seconds; non-ASCII is
        escaped, so a line is always whole."""
        if not self._hold(line):
            self._write([line])

    def write_later(self, make: Callable[..., str], *args: object) -> None:
        """Write the line ``make(*args)`` as :meth:`write` writes a line. On an event loop the
        writer thread makes it (the loop only hands over ``args``: the audit line's formatting
        leaves the loop); elsewhere it is made now, by the caller. ``make`` must need nothing
        but ``args``, which must not change; one that raises loses its own line only."""
        if asyncio._get_running_loop() is None:
            line = make(*args)
            if not self._hold(line):
                self._write([line])
        elif not self._hold((make, args)):
            self._write([make(*args)])

    def _hold(self, item: str | _Later) -> bool:
        """Give ``item`` to the writer thread when lines may wait now; False when not."""
        if not (
            # On an event loop, a line waits for the thread even without a delay: the loop
            # must not wait on a write (the thread writes it at once).
            (self.delay or asyncio._get_running_loop() is not None)
            and (not self._standard or (getattr(sys, self.target) is self._stream and self._stream_fd >= 0))
            and (_writer._thread is not None or _writer.running())
        ):
            return False
        pending = self._pending
        pending.append(item)
        if len(pending) >= _MAX_WAITING:
            # The thread is not keeping up (a stalled disk, a starved thread): this
            # thread writes, rather than hold lines without bound.
            self.flush()
        elif not self._armed:
            self._armed = True
            _writer.call(self)
        return True

    def flush(self) -> None:
        """Write the lines waiting now (:meth:`logging.Handler.flush`): when it returns, every
        line handed over before it was called is written, including those another thread's
        flush (the writer thread's) had taken and was still writing."""
        with self._flush_lock:
            pending = self._pending
            lines: list[str] = []
            append = lines.append
            take = pending.popleft
            try:
                while True:
                    item = take()
                    if item.__class__ is not tuple:
                        append(item)  # type: ignore[arg-type]
                    elif (line := _made(item)) is not None:
                        append(line)
            except IndexError:
                pass
            if lines:
                self._write(lines)

    def _write(self, lines: list[str]) -> None:
        with self._write_lock:
            if self._standard:
                stream: IO[str] = getattr(sys, self.target)
                if stream is not self._stream:
                    self._stream, self._stream_fd = stream, _descriptor(stream)
                    self._chunk = _chunk_size(self._stream_fd)
                if self._stream_fd < 0:
                    # A stream without a file descriptor (a test's capture, an embedding
                    # server's object): its own write, which is all it offers.
                    stream.write("".join(f"{line}\n" for line in lines))
                    stream.flush()
                    return
                # Whatever the stream holds goes first, so that our lines are not cut into it.
                stream.flush()
                fd = self._stream_fd
            else:
                self._check_file()
                fd = self._fd
            for chunk in _chunks(lines, self._chunk):
                _write_all(fd, chunk)

    def _open(self) -> None:
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        info = os.fstat(fd)
        old, self._fd, self._file_id = self._fd, fd, (info.st_dev, info.st_ino)
        self._chunk = _chunk_size(fd)
        if old >= 0:
            os.close(old)

    def _check_file(self) -> None:
        try:
            info = os.stat(self.target)
            current: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            current = None
        if current != self._file_id:
            self._open()

    def close(self) -> None:
        self.flush()
        with self._write_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        super().close()

    def _after_fork(self) -> None:
        # The parent writes the lines it held; the child starts empty, with locks no
        # thread of the parent can be holding.
        self._pending.clear()
        self._armed = False
        self._write_lock = threading.Lock()
        self._flush_lock = threading.Lock()


def _made(later: _Later) -> str | None:
    """The line of a :meth:`LineHandler.write_later`, or None when making it failed: that
    line is lost, never its neighbours, and stderr says so (not the target, whose every
    line may be read as a record)."""
    make, args = later
    try:
        return make(*args)
    except Exception as exc:
        name = getattr(make, "__name__", make)
        with contextlib.suppress(Exception):
            sys.stderr.write(f"ciba-middleware: a line could not be made by {name}: {exc!r}\n")
        return None


def _chunks(lines: list[str], limit: int) -> Iterator[bytes]:
    """``lines`` as newline-ended ASCII, in pieces of at most ``limit`` bytes that each
    hold whole lines (a line longer than ``limit`` is a piece of its own)."""
    # One join and one encoding for the whole batch, not one per line; then each piece
    # ends at the last newline that fits (or, for a line longer than the limit, its own).
    if not lines:
        return
    data = "\n".join([*lines, ""]).encode("ascii", "backslashreplace")
    size = len(data)
    start = 0
    while size - start > limit:
        end = data.rfind(b"\n", start, start + limit) + 1
        if end <= start:
            end = data.index(b"\n", start) + 1
        yield data[start:end]
        start = end
    if not start:
        yield data
    elif start < size:
        yield data[start:]


def _chunk_size(fd: int) -> int:
    """How many bytes one write to ``fd`` may carry and stay whole beside other writers'."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return _PIPE_CHUNK
    # A regular file opened for appending takes each write whole; anything else (a pipe,
    # a socket, a terminal) only up to PIPE_BUF.
    return _FILE_CHUNK if stat.S_ISREG(mode) else _PIPE_CHUNK


def _descriptor(stream: IO[str]) -> int:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return -1


def _write_all(fd: int, data: bytes) -> None:
    # One call writes everything but on a full disk or a signal; finish the lines then.
    written = os.write(fd, data)
    while written < len(data):
        data = data[written:]
        written = os.write(fd, data)


class _Writer:
    """The process's one thread writing the lines that wait in :class:`LineHandler`\\ s.

    A handler with lines asks once (:meth:`call`) and is not asked again until its lines
    are taken. The thread writes at once when it has not written for ``delay`` seconds, so
    an idle server's line appears without waiting; when it has, it waits the rest of the
    ``delay`` first, so that a busy server's lines are written together.
    """

    def __init__(self) -> None:
        self._reset()
        # Known per process: whether threads can write lines later at all.
        self._threads_run: bool | None = None

    def _reset(self) -> None:
        self._called: deque[LineHandler] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last = 0.0

    def running(self) -> bool:
        """Whether lines may wait for this thread (starting it when it has not started)."""
        if self._thread is not None:
            return True
        if self._threads_run is None:
            self._threads_run = "uwsgi" not in sys.modules
        if not self._threads_run:
            return False
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="ciba-middleware-lines", daemon=True)
                thread.start()
                self._thread = thread
        return True

    def call(self, handler: LineHandler) -> None:
        self._called.append(handler)
        self._wake.set()

    def _run(self) -> None:
        called = self._called
        wake = self._wake
        try:
            while True:
                wake.wait()
                wake.clear()
                if not called:
                    continue
                wait = self._last + called[0].delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._take(called)
                self._last = time.monotonic()
        finally:
            # Whatever ended the thread, the next line starts another, and asks it anew.
            self._thread = None
            for handler in list(_HANDLERS):
                handler._armed = False

    @staticmethod
    def _take(called: deque[LineHandler]) -> None:
        while called:
            handler = called.popleft()
            # Disarmed before its lines are taken: a line added from now on asks again.
            handler._armed = False
            try:
                handler.flush()
            except Exception as exc:  # a full disk must not stop the thread
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"ciba-middleware: lines could not be written to {handler.target}: {exc}\n")

    def after_fork(self) -> None:
        self._reset()
        for handler in list(_HANDLERS):
            handler._after_fork()


_HANDLERS: weakref.WeakSet[LineHandler] = weakref.WeakSet()
_writer = _Writer()


def _flush_all() -> None:
    for handler in list(_HANDLERS):
        with contextlib.suppress(Exception):  # at exit: nothing more can be done
            handler.flush()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_writer.after_fork)


#: The stderr writer of last resort, shared by everything in the process.
STDERR: Final = LineHandler("stderr")


class _Logging:
    """The marker :func:`destination` returns for "through the logging system"."""

    def __repr__(self) -> str:
        return "LOGGING"


LOGGING: Final = _Logging()


def destination(
    logger: logging.Logger, level: int, fallback: LineHandler | None = STDERR
) -> LineHandler | _Logging | None:
    """Where a line for ``logger`` at ``level`` should go now.

    ``None``: nowhere (the logger is disabled for the level, or has handlers but none
    takes it; with no handler at all, a level set on the logger or a parent still counts,
    but not the root's default WARNING, which only says that nothing is configured).
    :data:`LOGGING`: through ``logger.log``. A :class:`LineHandler`: straight to it,
    because it is the only handler the record would reach and nothing filters or formats
    it, or because no handler exists at all (then ``fallback``, which may be None).

    Each call walks the loggers again, so a logging configuration made after start-up is
    followed (the audit log calls it once per second of the clock, not per line); the walk is
    what ``Logger.callHandlers`` does, without building a ``LogRecord``.
    """
    if logger.disabled or logger.manager.disable >= level:
        return None
    taken: list[logging.Handler] = []
    seen = False
    # The level someone set for the logger or a parent; NOTSET when only the root's default
    # WARNING applies, which is no one's choice: nothing is configured.
    chosen = logging.NOTSET
    current: logging.Logger | None = logger
    while current is not None:
        if chosen == logging.NOTSET and current.level != logging.NOTSET:
            chosen = current.level
            if current is logging.root and chosen == logging.WARNING:
                chosen = logging.NOTSET
        for handler in current.handlers:
            seen = True
            if level >= handler.level:
                taken.append(handler)
        if not current.propagate:
            break
        current = current.parent
    if not seen:
        if chosen == logging.NOTSET and current is not None and current is not logging.root:
            # The walk stopped early (propagate off): a level set above still counts.
            chosen = _chosen_level(current.parent) if current.parent is not None else logging.NOTSET
        return fallback if chosen <= level else None
    if not taken or not logger.isEnabledFor(level):
        return None
    if len(taken) == 1 and not logger.filters:
        handler = taken[0]
        if type(handler) is LineHandler and not handler.filters and handler.formatter is handler.plain:
            return handler
    return LOGGING


def _chosen_level(logger: logging.Logger) -> int:
    """The level someone set for ``logger`` or a parent; NOTSET when only the root's
    default WARNING applies, which is no one's choice: nothing is configured."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.level != logging.NOTSET:
            if current is logging.root and current.level == logging.WARNING:
                return logging.NOTSET
            return current.level
        current = current.parent
    return logging.NOTSET
