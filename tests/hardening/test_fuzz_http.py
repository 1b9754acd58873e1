"""Raw HTTP fuzzing against gunicorn: what reaches the middleware through a real server.

Generated request heads and bodies go over a socket as bytes: duplicated and folded headers,
chunked bodies (well formed or not), both Content-Length and Transfer-Encoding, odd
methods and targets. For each: the server answers (no hang, no dropped connection), and
the answer is either gunicorn's own rejection of malformed HTTP (a 4xx that is not JSON)
or, when the request reached a route, the contract's JSON with the contract's headers and
no 500. At the end, gunicorn's log has no traceback and no worker was replaced.

``CIBA_FUZZ_EXAMPLES`` (shared) sets the examples: a tenth of it, 150 in CI.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import GRANTS, SERVICE, LiveServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._support import BASIC_OWN, BEARER_ORG, BEARER_OWN, SUFFIX, Answer, check_contract, report

EXAMPLES = max(50, int(os.environ.get("CIBA_FUZZ_EXAMPLES", "1500")) // 10)
_counts: Counter[str] = Counter()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path_factory.mktemp('http') / 't.sqlite3'}",
        "CIBA_TOKENS": json.dumps(GRANTS),
    }
    live = LiveServer("ciba_middleware.wsgi:application", env, workers=2)
    yield live
    log = live.log()
    live.stop()
    report("http_fuzz", examples=EXAMPLES, **_counts)
    assert "Traceback" not in log
    assert "WORKER TIMEOUT" not in log
    assert log.count("Booting worker") == 2


header_values = st.one_of(
    st.sampled_from(
        [
            BEARER_OWN,
            BEARER_ORG,
            BASIC_OWN,
            "application/json",
            "application/x-www-form-urlencoded",
            "chunked",
            "gzip, chunked",
            "0",
            "5",
            "-1",
            "close",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30),
)
header_names = st.sampled_from(
    ["Authorization", "Content-Type", "Content-Length", "Transfer-Encoding", "X-Request-ID", "Expect", "Host"]
)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["POST"] * 4 + ["GET", "HEAD", "PUT", "post", "P\x00ST"]))
    target = draw(
        st.sampled_from(
            [
                f"/api/{SERVICE}{SUFFIX}",
                f"/api{SUFFIX}",
                f"/api/{SERVICE}{SUFFIX}?x=1",
                f"/api/%0D%0A{SUFFIX}",
                "*",
                "/other",
            ]
        )
    )
    body = draw(
        st.one_of(
            st.just(b'{"reason":"ACCESS_DENIED"}'),
            st.just(b"reason=INVALID_TARGET&errorDescription=x"),
            st.binary(max_size=64),
        )
    )
    headers = [("Host", "127.0.0.1"), ("Connection", "close")]
    if draw(st.booleans()):
        headers.append(("Authorization", draw(st.sampled_from([BEARER_OWN, BEARER_ORG, BASIC_OWN]))))
    if draw(st.booleans()):
        headers.append(
            ("Content-Type", draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded"])))
        )
    framing = draw(st.integers(0, 4))
    if framing == 0:
        headers.append(("Content-Length", str(len(body))))
        payload = body
    elif framing == 1:
        headers.append(("Transfer-Encoding", "chunked"))
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    elif framing == 2:  # a chunked body that lies
        headers.append(("Transfer-Encoding", "chunked"))
        payload = draw(st.sampled_from([b"zz\r\n", b"5\r\nab\r\n0\r\n\r\n", b"ffffffffffffffff\r\n", b""]))
    elif framing == 3:
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Transfer-Encoding", "chunked"))
        payload = body
    else:
        payload = body  # no framing at all
    for _ in range(max(0, draw(st.integers(0, 9)) - 6)):  # mostly none: most requests reach the app
        headers.append((draw(header_names), draw(header_values)))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + payload


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(65536), b""))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=raw_requests())
def test_raw_http_gets_gunicorns_rejection_or_the_contract(server: LiveServer, data: bytes) -> None:
    response = _exchange(server.port, data)
    assert response.startswith(b"HTTP/1."), response[:100]
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    is_json = ("Content-Type", "application/json;charset=UTF-8") in headers
    if status == 404 or not is_json:
        # gunicorn's own answer to malformed HTTP, or the 404 app behind the middleware.
        assert status in (400, 404, 405, 411, 413, 414, 417, 431, 501), (status, response[:300])
        _counts[f"server {status}"] += 1
        return
    method = data.split(b" ", 1)[0].decode("latin-1")
    answer = Answer(status, [(k, v) for k, v in headers if k.lower() not in ("server", "date", "connection")], body)
    check_contract(answer, method)
    assert status != 500
    _counts[f"contract {status}"] += 1
