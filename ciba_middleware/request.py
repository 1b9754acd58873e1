"""Reading and checking the fail API's request: body, content type, charset, fields.

Transport-free: :func:`read_params` takes the request's headers and a function that reads
its body, whatever server it came from; :func:`check_fields` takes a mapping of
already-decoded values, so the HTTP route and in-process calls share every check.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import functools
import json
import pkgutil
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from werkzeug.http import parse_options_header

from .errors import BadRequest, InvalidParameter, PayloadTooLarge, UnsupportedMediaType
from .reasons import Reason
from .tuples import new_tuple

__all__ = [
    "ALLOWED_CHARSETS",
    "FIELDS",
    "Body",
    "FailParams",
    "Reader",
    "check_fields",
    "read_fields",
    "read_params",
]

#: Reads up to n bytes of the body (fewer at its end): ``wsgi.input.read``, ``BytesIO.read``.
Reader = Callable[[int], bytes]

#: The request's fields, in Authlete's names.
FIELDS = ("ticket", "reason", "errorDescription", "errorUri")

_REASONS: dict[str, Reason] = {r.value: r for r in Reason}
_REASON_LIST = ", ".join(_REASONS)

# RFC 6749 5.2 / A.6: error_description = 1*( %x20-21 / %x23-5B / %x5D-7E )
_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
_DESCRIPTION_BAD = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
# RFC 6749 A.7: error_uri is a URI-reference whose characters are in %x21 / %x23-5B / %x5D-7E.
_URI_BAD = re.compile(r"[^\x21\x23-\x5b\x5d-\x7e]")


def _uri_reference() -> re.Pattern[str]:
    """RFC 3986 4.1 URI-reference, from the ABNF of its appendix A."""
    pct = r"%[0-9A-Fa-f]{2}"
    unreserved_sub = r"A-Za-z0-9\-._~!$&'()*+,;="
    pchar = rf"(?:[{unreserved_sub}:@]|{pct})"
    query = rf"(?:[{unreserved_sub}:@/?]|{pct})*"
    scheme = r"[A-Za-z][A-Za-z0-9+\-.]*"
    userinfo = rf"(?:[{unreserved_sub}:]|{pct})*"
    ip_literal = rf"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[{unreserved_sub}:]+)\]"
    reg_name = rf"(?:[{unreserved_sub}]|{pct})*"
    authority = rf"(?:{userinfo}@)?(?:{ip_literal}|{reg_name})(?::[0-9]*)?"
    segment = rf"{pchar}*"
    segment_nz = rf"{pchar}+"
    segment_nz_nc = rf"(?:[{unreserved_sub}@]|{pct})+"
    path_abempty = rf"(?:/{segment})*"
    path_absolute = rf"/(?:{segment_nz}(?:/{segment})*)?"
    path_rootless = rf"{segment_nz}(?:/{segment})*"
    path_noscheme = rf"{segment_nz_nc}(?:/{segment})*"
    hier_part = rf"(?://{authority}{path_abempty}|{path_absolute}|{path_rootless}|)"
    relative_part = rf"(?://{authority}{path_abempty}|{path_absolute}|{path_noscheme}|)"
    tail = rf"(?:\?{query})?(?:#{query})?"
    return re.compile(rf"(?:{scheme}:{hier_part}|{relative_part}){tail}")


_URI_REFERENCE = _uri_reference()

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"


class FailParams(NamedTuple):
    """The checked fields of one fail call.

    A named tuple rather than a frozen dataclass: as immutable, and built several times
    faster, which counts on the hot path.
    """

    ticket: str | None
    reason: Reason
    error_description: str | None
    error_uri: str | None


class Body(NamedTuple):
    """A request's body as the request carries it, whatever server it came through."""

    #: The ``Content-Type`` header ("" when absent).
    content_type: str
    #: The ``Content-Length`` header ("" when absent).
    content_length: str
    #: Reads the body; called only for as many bytes as may be read.
    read: Reader
    #: The stream ends where the body ends, so a body without ``Content-Length`` can be
    #: read to its end (WSGI's ``wsgi.input_terminated``; true for a body already in memory).
    terminated: bool = False
    #: The request announced a body without ``Content-Length`` (``Transfer-Encoding``).
    chunked: bool = False


def read_params(body: Body, max_body_bytes: int) -> FailParams:
    """Read the body of a fail call and check its fields.

    Raises :class:`UnsupportedMediaType` (415), :class:`PayloadTooLarge` (413),
    :class:`BadRequest` (400) or :class:`InvalidParameter` (400), each saying exactly what
    is wrong.
    """
    is_json, charset = _media_type(body.content_type)
    data = _read_body(body.content_length, body.read, max_body_bytes, body.terminated, body.chunked)
    return check_fields(_parse_json(data, charset) if is_json else _parse_form(data, charset))


def read_fields(body: Body, max_body_bytes: int) -> Mapping[str, Any]:
    """Read a body as :func:`read_params` does (same media types, charsets, limits and
    errors) into its fields, unchecked: for the CIBA family's routes, whose fields differ."""
    is_json, charset = _media_type(body.content_type)
    data = _read_body(body.content_length, body.read, max_body_bytes, body.terminated, body.chunked)
    return _parse_json(data, charset) if is_json else _parse_form(data, charset)


# A caller sends the same Content-Type on every call: parse each distinct header once.
# Bounded, so a caller varying the header costs only cache misses. Errors are not cached.
@functools.lru_cache(maxsize=64)
def _media_type(content_type: str) -> tuple[bool, str]:
    """Whether the body is JSON (else a form), and its charset; raises 415 for anything else."""
    mimetype, _, rest = content_type.partition(";")
    mimetype = mimetype.strip().lower()
    if mimetype != _JSON and mimetype != _FORM:
        shown = f"'{_show_text(mimetype)}'" if mimetype else "missing"
        raise UnsupportedMediaType(f"Content-Type is {shown}; use {_JSON} or {_FORM}.")
    charset = "utf-8"
    if rest:
        if len(_CHARSET_PARAMETER.findall(rest)) > 1:
            # Werkzeug would keep the last one, another parser the first: refuse to guess.
            raise UnsupportedMediaType("Content-Type has the charset parameter more than once.")
        given = parse_options_header(content_type)[1].get("charset")
        if given:
            charset = given.strip().lower()
            if not _text_codec(charset):
                raise UnsupportedMediaType(f"charset '{_show_text(charset)}' is not supported; use utf-8.")
    return mimetype == _JSON, charset


def _read_body(length_header: str, read: Reader, limit: int, terminated: bool, chunked: bool) -> bytes:
    if length_header:
        # isdigit() alone also accepts "²" or "١٢", which int() rejects or misreads.
        if not (length_header.isascii() and length_header.isdigit()):
            raise BadRequest(f"Content-Length '{_show_text(length_header)}' is not a number of bytes.")
        length = int(length_header)
        if length > limit:
            raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}.")
        if not length:
            return b""
        try:
            body: bytes = read(length)
        except Exception as exc:
            raise _unreadable(exc) from None
        if len(body) != length:
            raise BadRequest(f"the body ended after {len(body)} of the {length} bytes Content-Length announced.")
        return body
    # No Content-Length: a chunked body, readable to its end only where the server says so
    # (gunicorn and Werkzeug set wsgi.input_terminated). Read one byte past the limit.
    if terminated:
        try:
            body = read(limit + 1)
        except Exception as exc:
            raise _unreadable(exc) from None
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes.")
        return body
    if chunked:
        # A body is there, but this server cannot say where it ends: reading could block.
        # Refuse it rather than fail the request with the wrong reason and keep its ticket.
        raise BadRequest("a body without Content-Length needs a WSGI server that sets wsgi.input_terminated.")
    return b""


def _unreadable(exc: Exception) -> BadRequest:
    # The server raises its own errors when the caller's framing is broken (gunicorn's
    # InvalidChunkSize, NoMoreData) or the caller went away: the request's fault, a 400,
    # not an unexpected error with a traceback in the log.
    return BadRequest(f"the body could not be read ({type(exc).__name__}); check its framing.")


def _known_codec_names() -> frozenset[str]:
    names = set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
    names.update(module.name for module in pkgutil.iter_modules(encodings.__path__))
    return frozenset(names)


# codecs.lookup() remembers every name it failed to find (encodings._cache), forever: asked
# only about the names of the standard encodings, it cannot be made to grow by callers
# sending a new charset name each time.
_KNOWN_CODECS = _known_codec_names()


#: The charsets a body may be decoded from (by the codec's canonical name; any alias of
#: these is accepted). Each reads every byte one way only, and ASCII's characters as
#: ASCII, so a body cannot mean one thing to this parser and another to the next: not
#: utf-7 (``+ACI-`` is a quote), not EBCDIC, not the escape codecs. docs/api.md lists them.
ALLOWED_CHARSETS = frozenset(
    {"utf-8", "ascii", "iso8859-1", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}
)
# A parameter named charset, at the start of the parameters or after a ";".
_CHARSET_PARAMETER = re.compile(r"(?:^|;)\s*charset\s*=", re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _text_codec(charset: str) -> bool:
    """Whether a body may be decoded from ``charset``: a known name of an allowed codec."""
    name = encodings.normalize_encoding(charset.lower().replace(" ", "-"))
    if name not in _KNOWN_CODECS and name.replace(".", "_") not in _KNOWN_CODECS:
        return False
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return False
    return info.name in ALLOWED_CHARSETS


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid {charset}: byte {exc.start} cannot be decoded.") from None
    except (UnicodeError, ValueError):
        raise BadRequest(f"the body is not valid {charset}.") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"the JSON has the member '{_show_text(key)}' more than once.")
            seen.add(key)
    return result


# Built once: json.loads(..., object_pairs_hook=...) builds a decoder on every call.
# scan_once is the C scanner json.loads ends in; typeshed does not declare the attribute.
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(object_pairs_hook=_unique_pairs).scan_once  # type: ignore[attr-defined]


#: The deepest nesting of arrays and objects a JSON body may have. The fail API's fields are
#: strings, so a real call nests one level.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _nesting(text: str) -> int:
    """How deep arrays and objects nest in ``text``, brackets inside strings not counted."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _parse_json(body: bytes, charset: str) -> Mapping[str, Any]:
    try:
        text = body.decode(charset)
    except (UnicodeError, ValueError):
        text = _decode(body, charset)  # raises the BadRequest that says what is wrong
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nesting(text) > MAX_JSON_DEPTH:
        # Python's own limit depends on its version (3.11 stops near 1,000 levels, 3.13
        # goes deeper): one limit of ours, so that every version answers alike.
        raise BadRequest("the body is not acceptable JSON: it nests too deeply.")
    if text[:1] == "{" and text[-1:] == "}":
        # The usual body: one object, no surrounding whitespace. Scan it directly, as
        # json.loads would after skipping whitespace; anything else (an error, trailing
        # data) takes json.loads below, which gives the exact error message.
        try:
            value, end = _scan_json(text, 0)
        except (ValueError, RecursionError, StopIteration):
            pass
        else:
            if end == len(text):
                return value  # type: ignore[no-any-return]
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except RecursionError:
        raise BadRequest("the body is not acceptable JSON: it nests too deeply.") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise BadRequest(f"the body is not acceptable JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, not {_json_type(value)}.")
    return value


def _parse_form(body: bytes, charset: str) -> Mapping[str, Any]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"a form body must be ASCII (percent-encode other bytes); byte {exc.start} is not.") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding=charset, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"a percent-encoded form value is not valid {charset}: {exc.reason}.") from None
    except ValueError as exc:
        raise BadRequest(f"the form body is malformed: {exc}.") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise BadRequest(f"the form has the field '{_show_text(key)}' more than once.")
        fields[key] = value
    return fields


def check_fields(fields: Mapping[str, Any]) -> FailParams:
    """Check the four fields (absent and None alike) and return them typed.

    Raises :class:`InvalidParameter` naming the field and what is wrong with it.
    """
    # Plain str or None is the usual case; _coerce handles (and rejects) the rest.
    get = fields.get
    ticket = get("ticket")
    if ticket is not None and type(ticket) is not str:
        ticket = _coerce(ticket, "ticket")
    reason_value = get("reason")
    if reason_value is None:
        reason = Reason.SERVER_ERROR
    else:
        if type(reason_value) is not str:
            reason_value = _coerce(reason_value, "reason")
        found = _REASONS.get(reason_value)
        if found is None:
            raise InvalidParameter("reason", f"is {_show(reason_value)}, which is not one of {_REASON_LIST}.")
        reason = found
    description = get("errorDescription")
    if description is not None:
        if type(description) is not str:
            description = _coerce(description, "errorDescription")
        if not _DESCRIPTION.fullmatch(description):
            _reject_characters("errorDescription", description, _DESCRIPTION_BAD, "%x20-21 / %x23-5B / %x5D-7E")
    uri = get("errorUri")
    if uri is not None:
        if type(uri) is not str:
            uri = _coerce(uri, "errorUri")
        _reject_characters("errorUri", uri, _URI_BAD, "%x21 / %x23-5B / %x5D-7E")
        if not _URI_REFERENCE.fullmatch(uri):
            raise InvalidParameter("errorUri", f"is {_show(uri)}, which is not a URI-reference (RFC 3986 4.1).")
    return new_tuple(FailParams, (ticket, reason, description, uri))


def _coerce(value: object, name: str) -> str:
    """A non-null value that is not exactly a str: a str subclass (e.g. a Reason passed
    in process) becomes a plain str; anything else is rejected."""
    if isinstance(value, str):
        return str.__str__(value)
    raise InvalidParameter(name, f"must be a string or null, not {_json_type(value)}.")


def _reject_characters(name: str, value: str, bad: re.Pattern[str], allowed: str) -> None:
    if not value:
        raise InvalidParameter(name, "must not be empty; omit it or send null.")
    match = bad.search(value)
    if match is not None:
        char = match.group()
        raise InvalidParameter(
            name,
            f"has the character {_show(char)} (U+{ord(char):04X}) at index {match.start()}; "
            f"RFC 6749 allows only {allowed}.",
        )


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def _show(value: str, limit: int = 40) -> str:
    """A caller's value, quoted, shortened and ASCII-escaped, safe to put in a message."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(shown)


def _show_text(value: str, limit: int = 40) -> str:
    return _show(value, limit)[1:-1]
