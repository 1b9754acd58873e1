"""The client's form (``parameters``) as the family reads it: ``family._form``, the same
fields and the same errors as ``urllib.parse.parse_qsl`` followed by the duplicate check."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SERVICE
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_middleware.ciba.family import _REPEATABLE, _form
from ciba_middleware.config import Settings
from ciba_middleware.response import not_found_app

from ._family import GRANT, POLL, SECRET, family_env, signing_key


def structured(raw: str) -> dict[str, list[str]]:
    """The form read the general way: every pair by ``parse_qsl``, then the duplicates."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw), errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the request body is not a valid form: {exc}") from None
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        values = params.setdefault(key, [])
        if values and key not in _REPEATABLE:
            raise ValueError(f"{key} is given more than once")
        values.append(value)
    return params


def outcome(read: object, raw: str) -> object:
    try:
        return read(raw)  # type: ignore[operator]
    except ValueError as exc:
        return type(exc), str(exc)


# Pieces a form is made of, and what breaks one: separators, escapes (good, truncated, not
# hex, not UTF-8), '+', names the routes read, a repeatable one, non-ASCII and a surrogate.
PIECES = st.sampled_from(
    [
        *("&", "=", "%", "+", "%3A", "%3a", "%2B", "%26", "%3D", "%C3%A9", "%ff", "%e2%82", "%zz", "%4", "a", "b"),
        *("grant_type", "auth_req_id", "client_id", "resource", "urn:openid", " ", "é", "\ud800", "\x00", "~"),
        *("urn%3Aopenid%3Aparams%3Agrant-type%3Aciba", "urn%3aopenid%3aparams%3agrant-type%3aciba"),
    ]
)
TEXT = st.lists(PIECES, max_size=4).map("".join)
# Forms field by field, from few names (so that names repeat), some fields without '='.
FIELD = st.tuples(st.sampled_from(["a", "b", "resource", "a%3D", "%61", "%ff", ""]), st.sampled_from(["=", ""]), TEXT)
FORMS = st.lists(FIELD, max_size=6).map(lambda fields: "&".join(name + eq + value for name, eq, value in fields))


@settings(max_examples=1000, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
def test_the_same_as_parse_qsl_on_pieces(raw: str) -> None:
    assert outcome(_form, raw) == outcome(structured, raw)


@settings(max_examples=1000, deadline=None)
@given(FORMS)
def test_the_same_as_parse_qsl_field_by_field(raw: str) -> None:
    assert outcome(_form, raw) == outcome(structured, raw)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_the_same_as_parse_qsl_on_any_text(raw: str) -> None:
    assert outcome(_form, raw) == outcome(structured, raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param(
            "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=abc",
            {"grant_type": [GRANT], "auth_req_id": ["abc"]},
            id="a-poll",
        ),
        pytest.param(
            "grant_type=urn%3aopenid%3aparams%3agrant-type%3aciba&grant=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba+",
            {"grant_type": [GRANT], "grant": [GRANT + " "]},
            id="the-grant-type-in-lowercase-hex-and-not-alone",
        ),
        pytest.param("a=&b=x%2By+z", {"a": [""], "b": ["x+y z"]}, id="blank-plus-escaped-plus"),
        pytest.param("a=b=c", {"a": ["b=c"]}, id="equals-in-value"),
        pytest.param("resource=x&resource=y", {"resource": ["x", "y"]}, id="resource-repeats"),
    ],
)
def test_fields(raw: str, expected: dict[str, list[str]]) -> None:
    assert _form(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("a=1&b", "the request body is not a valid form: bad query field: 'b'", id="no-equals"),
        pytest.param("a=1&&b=2", "the request body is not a valid form: bad query field: ''", id="empty-field"),
        pytest.param("a=1&", "the request body is not a valid form: bad query field: ''", id="trailing-ampersand"),
        pytest.param(
            "a=%ff",
            "the request body is not a valid form: 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte",
            id="not-utf-8",
        ),
        pytest.param(
            "%e2%82=1",
            "the request body is not a valid form: 'utf-8' codec can't decode bytes in position 0-1: "
            "unexpected end of data",
            id="name-not-utf-8",
        ),
        pytest.param("a=1&a=2", "a is given more than once", id="repeated"),
        pytest.param("a=1&b=1&b=2&a=2", "b is given more than once", id="first-repeated-named"),
        pytest.param("a=1&a=2&b", "the request body is not a valid form: bad query field: 'b'", id="bad-field-first"),
        pytest.param(
            "a=1&a=2&b=%ff",
            "the request body is not a valid form: 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte",
            id="bad-escape-first",
        ),
    ],
)
def test_errors(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        _form(raw)
    assert str(raised.value) == message
    # A bad value fails every time: errors are not remembered with the decoded values.
    with pytest.raises(ValueError):
        _form(raw)


def test_the_token_endpoint_answers_a_bad_form(tmp_path: Path) -> None:
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    middleware = Settings.from_mapping(env).build_middleware(not_found_app, announce=False)
    try:
        for raw, description in [
            ("grant_type=x&auth_req_id=1&auth_req_id=2", "auth_req_id is given more than once"),
            (
                f"grant_type={GRANT}&auth_req_id=%ff",
                "the request body is not a valid form: 'utf-8' codec can't "
                "decode byte 0xff in position 0: invalid start byte",
            ),
        ]:
            status, body = middleware.api.call(
                "auth/token", SERVICE, {"parameters": raw, "clientId": POLL, "clientSecret": SECRET}
            )
            assert (status, body["resultCode"], body["action"]) == (200, "A188301", "BAD_REQUEST")
            assert body["responseContent"] == (
                '{"error":"invalid_request","error_description":' + f'"{description}"' + "}"
            )
    finally:
        middleware.store.close()
