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


def _stdlib_says(name: str) -> bool:
    import codecs

    try:
        return bool(getattr(codecs.lookup(name), "_is_text_encoding", True))
    except LookupError:
        return False


def test_every_standard_charset_name_is_still_understood() -> None:
    import encodings.aliases

    from ciba_middleware.request import _text_codec

    names = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
    variants = {
        v
        for n in names
        for v in (n, n.upper(), n.replace("_", "-"), n.replace("_", " "), n.replace("_", "."), n.replace("_", ""))
    }
    differ = [v for v in sorted(variants) if _text_codec(v) != _stdlib_says(v)]
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
