"""linewriter: where the package's own lines go, and how a line is written."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_middleware.linewriter import LOGGING, STDERR, LineHandler, _chunks, destination


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger below a parent, both of the test's own, outside the logging tree."""
    # Made directly, not by getLogger: the test runner's handlers never reach them.
    parent = logging.Logger("ciba_test_output")  # noqa: LOG001
    child = logging.Logger("ciba_test_output.child")  # noqa: LOG001
    child.parent = parent
    yield child
    for lg in (parent, child):
        for handler in lg.handlers:
            handler.close()


def test_no_handler_at_all_goes_to_the_fallback(logger: logging.Logger) -> None:
    assert destination(logger, logging.INFO) is STDERR
    assert destination(logger, logging.INFO, fallback=None) is None


def test_a_level_someone_set_is_respected_without_handlers(logger: logging.Logger) -> None:
    logger.setLevel(logging.WARNING)
    assert destination(logger, logging.INFO) is None
    assert destination(logger, logging.WARNING) is STDERR


def test_handlers_that_do_not_take_the_level_mean_nowhere(logger: logging.Logger) -> None:
    handler = logging.NullHandler(logging.ERROR)
    logger.parent.addHandler(handler)  # type: ignore[union-attr]
    logger.setLevel(logging.INFO)
    assert destination(logger, logging.INFO) is None
    handler.setLevel(logging.INFO)
    assert destination(logger, logging.INFO) is LOGGING


def test_a_disabled_logger_means_nowhere(logger: logging.Logger) -> None:
    logging.disable(logging.INFO)
    try:
        assert destination(logger, logging.INFO) is None
    finally:
        logging.disable(logging.NOTSET)


def test_a_lone_line_handler_is_written_to_directly(logger: logging.Logger, tmp_path: Path) -> None:
    handler = LineHandler(str(tmp_path / "lines"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    assert destination(logger, logging.INFO) is handler
    # Anything that would change the line sends it through logging instead.
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    assert destination(logger, logging.INFO) is LOGGING
    handler.setFormatter(handler.plain)
    logger.addFilter(lambda record: False)
    assert destination(logger, logging.INFO) is LOGGING


def test_a_file_is_appended_to_and_reopened_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("kept\n")
    handler = LineHandler(str(path))
    handler.write('{"n":1}')
    handler.flush()
    os.rename(path, tmp_path / "audit.jsonl.1")
    handler.write('{"n":2}')
    handler.close()
    assert (tmp_path / "audit.jsonl.1").read_text() == 'kept\n{"n":1}\n'
    assert path.read_text() == '{"n":2}\n'


def test_non_ascii_is_escaped_so_a_line_stays_one_line(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path))
    handler.write("caf\u00e9")
    handler.close()
    assert path.read_bytes() == b"caf\\xe9\n"


def test_a_stream_without_a_descriptor_gets_its_own_write(capsys: pytest.CaptureFixture[str]) -> None:
    LineHandler("stdout").write("one line")
    assert capsys.readouterr().out == "one line\n"


def test_emit_writes_the_message(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path))
    logger.addHandler(handler)
    logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.INFO)
    assert destination(logger, logging.INFO) is LOGGING
    logger.info("%s", "a message")
    handler.close()
    assert path.read_text() == "a message\n"


# -- lines that wait: fewer write() calls, none lost ---------------------------------------


def _write_calls() -> int:
    """The write-like system calls this process has made (Linux's /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/self/io")


def _wait_for(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_with_no_delay_a_line_is_written_before_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0)
    handler.write("at once")
    assert path.read_text() == "at once\n"
    handler.close()


def test_on_an_event_loop_a_line_without_delay_is_handed_to_the_thread(tmp_path: Path) -> None:
    """Under ASGI the loop never waits on a write: even with no delay, the writer thread writes."""
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0)
    writers: list[int] = []
    real = os.write

    def counted(fd: int, data: bytes) -> int:
        writers.append(threading.get_ident())
        return real(fd, data)

    async def on_the_loop() -> None:
        handler.write("from the loop")

    os.write = counted  # type: ignore[assignment]
    try:
        asyncio.run(on_the_loop())
        assert _wait_for(path, 1) == ["from the loop"]
    finally:
        os.write = real  # type: ignore[assignment]
    assert writers
    assert threading.get_ident() not in writers
    handler.close()


def test_a_line_waits_at_most_the_delay_without_anyone_flushing(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0.05)
    started = time.monotonic()
    handler.write("later")
    assert _wait_for(path, 1) == ["later"]
    # Well within the delay plus the time a thread takes to be scheduled.
    assert time.monotonic() - started < 1.0
    handler.close()


def test_flush_waits_for_the_lines_the_writer_thread_is_writing(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0.01)
    write = handler._write
    writing = threading.Event()

    def slow_write(lines: list[str]) -> None:
        writing.set()  # the writer thread has taken the line: nothing waits any more
        time.sleep(0.3)
        write(lines)

    handler._write = slow_write  # type: ignore[method-assign]
    handler.write("taken")
    assert writing.wait(5)
    handler.flush()
    assert path.read_text() == "taken\n"
    handler.close()


def test_lines_written_together_share_write_calls_and_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0.2)
    lines = [f'{{"n":{n},"pad":"{"x" * 400}"}}' for n in range(200)]
    before = _write_calls()
    for line in lines:
        handler.write(line)
    assert _wait_for(path, len(lines)) == lines
    calls = _write_calls() - before
    # 200 lines of ~420 bytes: a few 64 KiB writes to a file, not 200.
    assert calls < 20, calls
    handler.close()


def test_a_pipe_gets_whole_lines_in_writes_of_at_most_pipe_buf(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    handler = LineHandler(str(fifo), delay=0.2)
    lines = [f'{{"n":{n},"pad":"{"y" * 400}"}}' for n in range(100)]
    before = _write_calls()
    for line in lines:
        handler.write(line)
    handler.flush()
    calls = _write_calls() - before
    data = b""
    while True:
        try:
            chunk = os.read(reader, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    os.close(reader)
    handler.close()
    assert data.decode().splitlines() == lines
    size = len(data)
    # As few writes as PIPE_BUF allows, and no fewer: each one a whole number of lines.
    assert -(-size // select.PIPE_BUF) <= calls <= len(lines) // 4, (size, calls)


def test_lines_that_wait_are_written_when_the_process_ends(tmp_path: Path) -> None:
    path = tmp_path / "out"
    code = (
        "from ciba_middleware.linewriter import LineHandler\n"
        f"handler = LineHandler({str(path)!r}, delay=1.0)\n"
        "for n in range(1000):\n"
        "    handler.write(str(n))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert path.read_text().splitlines() == [str(n) for n in range(1000)]


def test_a_forked_child_writes_its_own_lines_and_not_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=1.0)
    handler.write("parent, before the fork")
    pid = os.fork()
    if pid == 0:  # the child
        try:
            handler.write("child")
            handler.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    handler.flush()
    assert sorted(path.read_text().splitlines()) == ["child", "parent, before the fork"]
    handler.close()


@pytest.mark.parametrize("delay", [-0.1, 1.5])
def test_a_delay_out_of_bounds_is_refused(tmp_path: Path, delay: float) -> None:
    with pytest.raises(ValueError, match="delay must be between 0 and 1 seconds"):
        LineHandler(str(tmp_path / "out"), delay=delay)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_ends_is_replaced_by_the_next_line(tmp_path: Path) -> None:
    class Fatal(LineHandler):
        def flush(self) -> None:
            raise SystemExit("the thread ends")  # what no `except Exception` stops

    fatal = Fatal(str(tmp_path / "fatal"), delay=0.01)
    fatal.write("ends the thread")
    deadline = time.monotonic() + 5
    while fatal._armed and time.monotonic() < deadline:
        time.sleep(0.01)
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0.01)
    handler.write("after")
    assert _wait_for(path, 1) == ["after"]
    handler.close()
    fatal._pending.clear()


def test_lines_never_wait_without_bound(tmp_path: Path) -> None:
    handler = LineHandler(str(tmp_path / "out"), delay=1.0)
    for n in range(25_000):
        handler.write(str(n))
        assert len(handler._pending) < 10_000
    handler.close()
    assert len((tmp_path / "out").read_text().splitlines()) == 25_000


def test_a_line_made_later_is_made_by_the_writer_thread_on_an_event_loop(tmp_path: Path) -> None:
    """Under ASGI the audit line is made off the loop: the loop hands over only its parts."""
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=0)
    makers: list[int] = []

    def make(a: str, b: int) -> str:
        makers.append(threading.get_ident())
        return f"{a}-{b}"

    async def on_the_loop() -> None:
        handler.write("first")
        handler.write_later(make, "second", 2)
        handler.write("third")

    asyncio.run(on_the_loop())
    assert _wait_for(path, 3) == ["first", "second-2", "third"]
    assert makers
    assert threading.get_ident() not in makers
    handler.close()


def test_off_a_loop_a_line_made_later_is_made_by_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=1.0)
    makers: list[int] = []

    def make(a: str, b: int) -> str:
        makers.append(threading.get_ident())
        return f"{a}={b}"

    handler.write_later(make, "a", 1)
    assert makers == [threading.get_ident()]
    handler.flush()
    assert path.read_text() == "a=1\n"
    handler.close()


def test_a_line_that_cannot_be_made_is_lost_alone_and_said_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out"
    handler = LineHandler(str(path), delay=1.0)

    def broken() -> str:
        raise ValueError("no line")

    async def on_the_loop() -> None:
        handler.write("before")
        handler.write_later(broken)
        handler.write("after")

    asyncio.run(on_the_loop())
    # Whoever takes the lines (the writer thread, or this flush) makes them before writing.
    handler.flush()
    assert _wait_for(path, 2) == ["before", "after"]
    assert "ciba-middleware: a line could not be made by broken: ValueError('no line')" in capsys.readouterr().err
    handler.close()


def _chunks_line_by_line(lines: list[str], limit: int) -> list[bytes]:
    """What ``_chunks`` gives, made one line at a time (its former way)."""
    pieces: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        data = (line + "\n").encode("ascii", "backslashreplace")
        if chunk and size + len(data) > limit:
            pieces.append(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        pieces.append(b"".join(chunk))
    return pieces


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.text(alphabet=st.sampled_from('ab\u00e9"\\'), max_size=40), min_size=1),
    limit=st.integers(1, 60),
)
def test_the_pieces_hold_whole_lines_within_the_limit(lines: list[str], limit: int) -> None:
    """Made from one encoding of the batch: the same pieces as line by line, each of whole
    lines and at most ``limit`` bytes, or one line of its own when that line is longer."""
    pieces = list(_chunks(lines, limit))
    assert pieces == _chunks_line_by_line(lines, limit)
    for piece in pieces:
        assert piece.endswith(b"\n")
        assert len(piece) <= limit or piece.count(b"\n") == 1
