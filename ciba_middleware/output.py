"""Where the package's own lines go: the app's logging when it has any, else stderr.

A library should write through :mod:`logging`; but under a bare ``gunicorn app:app``,
``flask run`` or uWSGI nobody configures logging, and Python then drops every INFO record.
The audit log and the start-up line are written for an operator, so :func:`destination`
decides, per line, where it goes:

- through :mod:`logging` when a handler of the logger (or of one it propagates to) takes
  the level: the app's own configuration wins;
- nowhere when there are handlers but none takes the level (nothing is built for a line
  no handler will emit);
- to stderr when there is no handler at all, as one ``write()`` of one line.

A :class:`LineHandler` writes each line with one ``write()`` system call after flushing
whatever the stream had buffered, so lines of several workers sharing a pipe or an
``O_APPEND`` file never interleave (POSIX makes a pipe write of at most ``PIPE_BUF``,
4096 bytes on Linux, atomic; an audit line is about 450).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import IO, Final

__all__ = ["LOGGING", "STDERR", "LineHandler", "destination"]


class LineHandler(logging.Handler):
    """A handler writing each record's message as one line, in one ``write()``.

    ``target`` is ``stdout``, ``stderr`` (the stream ``sys`` has at the time of each write,
    so a redirection made later is followed) or an absolute path, opened with
    ``O_APPEND`` and reopened when the file at the path changes (after logrotate moves it,
    as :class:`logging.handlers.WatchedFileHandler` does).

    The audit log calls :meth:`write` directly when this handler is the only one a record
    would reach, skipping the ``LogRecord``.
    """

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.setFormatter(logging.Formatter("%(message)s"))
        self.plain = self.formatter
        self._fd = -1
        self._file_id: tuple[int, int] | None = None
        self._reopen_lock = threading.Lock()
        self._standard = target in ("stdout", "stderr")
        # The stream of sys last seen, and its descriptor (-1: none).
        self._stream: object = None
        self._stream_fd = -1
        if not self._standard:
            self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)

    def write(self, line: str) -> None:
        """Write ``line`` and a newline; non-ASCII is escaped, so a line is always whole."""
        data = (line + "\n").encode("ascii", "backslashreplace")
        if self._standard:
            stream: IO[str] = getattr(sys, self.target)
            if stream is not self._stream:
                self._stream, self._stream_fd = stream, _descriptor(stream)
            if self._stream_fd < 0:
                # A stream without a file descriptor (a test's capture, an embedding
                # server's object): its own write, which is all it offers.
                stream.write(data.decode("ascii"))
                stream.flush()
                return
            # Whatever the stream holds goes first, so that our line is not cut into it.
            stream.flush()
            _write_all(self._stream_fd, data)
            return
        self._check_file()
        _write_all(self._fd, data)

    def _open(self) -> None:
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        stat = os.fstat(fd)
        old, self._fd, self._file_id = self._fd, fd, (stat.st_dev, stat.st_ino)
        if old >= 0:
            os.close(old)

    def _check_file(self) -> None:
        try:
            stat = os.stat(self.target)
            current: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            current = None
        if current != self._file_id:
            with self._reopen_lock:
                self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()


def _descriptor(stream: IO[str]) -> int:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return -1


def _write_all(fd: int, data: bytes) -> None:
    # One call writes everything but on a full disk or a signal; finish the line then.
    written = os.write(fd, data)
    while written < len(data):
        data = data[written:]
        written = os.write(fd, data)


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

    Looked up on every line, so a logging configuration made after start-up is followed;
    the walk is what ``Logger.callHandlers`` does, without building a ``LogRecord``.
    """
    if logger.disabled or logger.manager.disable >= level:
        return None
    taken: list[logging.Handler] = []
    seen = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            seen = True
            if level >= handler.level:
                taken.append(handler)
        if not current.propagate:
            break
        current = current.parent
    if not seen:
        return fallback if _chosen_level(logger) <= level else None
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
