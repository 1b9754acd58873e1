"""Bugs the hardening work found, each pinned by the smallest request that showed it."""

from __future__ import annotations

import pytest

from ._support import call, check_contract, environ, middleware

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
