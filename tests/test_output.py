"""output: where the package's own lines go, and how a line is written."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciba_middleware.output import LOGGING, STDERR, LineHandler, destination


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
