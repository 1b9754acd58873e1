"""Bugs the hardening work found, each pinned by the smallest request that showed it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from conftest import GRANTS, SERVICE, LiveServer

from ._support import BEARER_OWN, SUFFIX, call, check_contract, environ, middleware

BODY = b'{"reason":"ACCESS_DENIED"}'


@pytest.mark.parametrize(
    "content_length",
    [
        # str.isdigit() is true for these, but int() rejects the first two (a 500 with a
        # traceback before the fix) and reads the last as 26 (accepted before the fix).
        pytest.param("\u00b2\u2076", id="superscript-digits"),
        pytest.param("\u2460", id="circled-digit"),
        pytest.param("\u0662\u0666", id="arabic-indic-digits"),
        pytest.param("+26", id="plus-sign"),
        pytest.param(" 26", id="leading-space"),
        pytest.param("26 ", id="trailing-space"),
        pytest.param("-1", id="negative"),
        pytest.param("0x1a", id="hex"),
    ],
)
def test_a_content_length_that_is_not_ascii_digits_is_a_400(content_length: str) -> None:
    answer = call(middleware(), environ(body=BODY, content_length=content_length))
    data = check_contract(answer)
    assert answer.status == 400
    assert data["resultCode"] == "A185201"
    assert "Content-Length" in data["resultMessage"]


def _allowed(name: str) -> bool:
    import codecs

    from ciba_middleware.request import ALLOWED_CHARSETS

    try:
        return codecs.lookup(name).name in ALLOWED_CHARSETS
    except LookupError:
        return False


def test_every_name_of_an_allowed_charset_is_understood_and_no_other() -> None:
    import encodings.aliases

    from ciba_middleware.request import _text_codec

    names = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
    variants = {
        v
        for n in names
        for v in (n, n.upper(), n.replace("_", "-"), n.replace("_", " "), n.replace("_", "."), n.replace("_", ""))
    }
    differ = [v for v in sorted(variants) if _text_codec(v) != _allowed(v)]
    assert len(variants) > 1400
    assert differ == []


def test_new_charset_names_do_not_grow_the_codec_cache() -> None:
    # codecs.lookup() caches every name it could not find in encodings._cache, forever;
    # before the fix each new charset name an authenticated caller sent grew the process.
    import encodings

    mw = middleware()
    before = len(encodings._cache)  # type: ignore[attr-defined]
    for i in range(2000):
        answer = call(mw, environ(body=BODY, content_type=f"application/json; charset=x-unknown-{i}"))
        assert answer.status == 415
    assert len(encodings._cache) == before  # type: ignore[attr-defined]


class _BrokenInput:
    """A server's wsgi.input failing the way servers do when the caller's framing breaks."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="connection-reset"),
        pytest.param(OSError("read failed"), id="os-error"),
        pytest.param(type("InvalidChunkSize", (Exception,), {})("zz"), id="server-parse-error"),
    ],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_the_server_cannot_read_is_a_400_not_a_500(
    error: Exception, framing: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = environ(body=BODY)
    env["wsgi.input"] = _BrokenInput(error)
    if framing == "chunked":
        del env["CONTENT_LENGTH"]
        env["wsgi.input_terminated"] = True
    answer = call(middleware(), env)
    data = check_contract(answer)
    assert answer.status == 400
    assert data["resultCode"] == "A185201"
    assert data["resultMessage"].endswith(f"the body could not be read ({type(error).__name__}); check its framing.")
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"zz\r\n", id="chunk-size-not-hex"),
        pytest.param(b"5\r\nab\r\n0\r\n\r\n", id="chunk-shorter-than-its-size"),
        pytest.param(b"", id="no-chunk-at-all"),
        pytest.param(b"1a\r\n{", id="caller-gone-mid-chunk"),
    ],
)
def test_broken_chunked_framing_over_gunicorn_is_a_400(chunks: bytes, tmp_path: Path) -> None:
    env = {"CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}", "CIBA_TOKENS": json.dumps(GRANTS)}
    server = LiveServer("ciba_middleware.wsgi:application", env)
    try:
        head = (
            f"POST /api/{SERVICE}{SUFFIX} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: {BEARER_OWN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head.encode() + chunks)
            sock.shutdown(socket.SHUT_WR)
            response = b"".join(iter(lambda: sock.recv(65536), b""))
        log = server.log()
    finally:
        server.stop()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n"), response[:200]
    assert b'"resultCode":"A185201"' in response
    assert "Traceback" not in log
