"""The audit log: one JSON line per fail call, routed by CIBA_AUDIT_LOG, never a secret."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import webtest
from conftest import (
    API_SECRET,
    AT_ONCE,
    GRANTS,
    ORG_TOKEN,
    OTHER_SERVICE,
    OTHER_TOKEN,
    SERVICE,
    SERVICE_TOKEN,
    LiveServer,
    basic,
    bearer,
    ciba_env,
    free_port,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_middleware import (
    BackchannelFailMiddleware,
    ConfigurationError,
    Reason,
    Settings,
    StaticTokenVerifier,
    not_found_app,
)
from ciba_middleware.audit import AUDIT_LOGGER, AuditLog, audit_line, audit_record, route
from ciba_middleware.auth import Principal, PrincipalKind
from ciba_middleware.ciba.answers import ApiAction
from ciba_middleware.events import FailEvent
from ciba_middleware.linewriter import LineHandler
from ciba_middleware.reasons import Action
from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.base import new_ticket, ticket_hash

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FIELDS = [
    "time",
    "event",
    "request_id",
    "via",
    "route",
    "service",
    "principal_kind",
    "principal_id",
    "reason",
    "action",
    "ticket_hash",
    "deleted",
    "outcome",
    "client_addr",
    "status",
    "result_code",
    "auth_failure",
    "store_error",
    "duration_ms",
]


@pytest.fixture(autouse=True)
def audit_logger() -> Iterator[logging.Logger]:
    """Give each test the audit logger as it found it: handlers, level, propagation."""
    logger = logging.getLogger(AUDIT_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def stable(record: dict[str, Any]) -> dict[str, Any]:
    """The record without what changes from run to run (checked separately)."""
    assert list(record) == FIELDS
    assert TIME.fullmatch(record["time"]), record["time"]
    assert isinstance(record["duration_ms"], float)
    assert 0 <= record["duration_ms"] < 5000
    return {k: v for k, v in record.items() if k not in ("time", "duration_ms")}


def expected(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "ciba_fail",
        "request_id": None,
        "via": "http",
        "route": "v3",
        "service": SERVICE,
        "principal_kind": None,
        "principal_id": None,
        "reason": None,
        "action": None,
        "ticket_hash": None,
        "deleted": None,
        "outcome": "no_ticket",
        "client_addr": "127.0.0.1",
        "status": 200,
        "result_code": "A185001",
        "auth_failure": None,
        "store_error": False,
    }
    base.update(fields)
    return base


# -- over gunicorn, to a file and to stdout -------------------------------------------


@pytest.mark.parametrize("target", [pytest.param("file", id="file"), pytest.param("stdout", id="stdout")])
def test_one_json_line_per_call_over_gunicorn(
    live_server: Callable[..., LiveServer], tmp_path: Path, target: str
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    env = ciba_env(tmp_path, CIBA_AUDIT_LOG=str(audit_file) if target == "file" else "stdout", **AT_ONCE)
    server = live_server(env=env)
    store = store_from_url(env["CIBA_STORE_URL"])
    ticket, other = store.issue(SERVICE), store.issue(SERVICE)

    def post(path: str, headers: dict[str, str], body: dict[str, str], request_id: str) -> int:
        headers = {**headers, "X-Request-Id": request_id}
        return requests.post(server.url + path, headers=headers, json=body, timeout=10).status_code

    statuses = [
        post(V3, bearer(SERVICE_TOKEN), {"ticket": ticket, "reason": "ACCESS_DENIED"}, "req-1"),
        post(V3, bearer(ORG_TOKEN), {"ticket": ticket, "reason": "UNKNOWN_USER_ID", "errorDescription": "no"}, "req-2"),
        post(V2, basic(SERVICE, API_SECRET), {"ticket": other}, "req-3"),
        post(V3, bearer(OTHER_TOKEN), {"ticket": other}, "req-4"),
        post("/api/attacker-chosen/backchannel/authentication/fail", bearer("guess"), {}, "req-5"),
        post(V3, bearer(SERVICE_TOKEN), {"reason": "nope"}, "bad id with spaces"),
    ]
    assert statuses == [200, 200, 200, 403, 401, 400]

    if target == "file":
        lines = audit_file.read_text().splitlines()
        assert not [line for line in server.log().splitlines() if line.startswith("{")]
    else:
        lines = [line for line in server.log().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    generated = records[5]["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert [stable(r) for r in records] == [
        expected(
            request_id="req-1",
            principal_kind="service",
            principal_id=SERVICE,
            reason="ACCESS_DENIED",
            action="FORBIDDEN",
            ticket_hash=ticket_hash(ticket),
            deleted=True,
            outcome="deleted",
        ),
        expected(
            request_id="req-2",
            principal_kind="organization",
            principal_id="acme",
            reason="UNKNOWN_USER_ID",
            action="BAD_REQUEST",
            ticket_hash=ticket_hash(ticket),
            deleted=False,
            outcome="not_found",
        ),
        expected(
            request_id="req-3",
            route="v2",
            principal_kind="api_key",
            principal_id=SERVICE,
            reason="SERVER_ERROR",
            action="INTERNAL_SERVER_ERROR",
            ticket_hash=ticket_hash(other),
            deleted=True,
            outcome="deleted",
        ),
        expected(
            request_id="req-4",
            principal_kind="service",
            principal_id=OTHER_SERVICE,
            outcome="rejected",
            status=403,
            result_code="A185212",
            auth_failure="not_covered",
        ),
        expected(
            request_id="req-5",
            service=None,
            outcome="rejected",
            status=401,
            result_code="A185211",
            auth_failure="invalid",
        ),
        expected(
            request_id=generated,
            principal_kind="service",
            principal_id=SERVICE,
            action="INTERNAL_SERVER_ERROR",
            outcome="rejected",
            status=400,
            result_code=records[5]["result_code"],
        ),
    ]
    assert records[5]["result_code"].startswith("A1852")
    for line in lines:
        assert line.isascii()
        for secret in (ticket, other, SERVICE_TOKEN, ORG_TOKEN, API_SECRET):
            assert secret not in line


# -- never a secret -------------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_no_record_holds_a_token_secret_or_ticket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = Settings.from_mapping(ciba_env(tmp_path)).build_middleware(not_found_app)
    client = webtest.TestApp(app)
    tickets = [app.store.issue(SERVICE) for _ in range(4)]
    unknown = new_ticket()
    secrets = [SERVICE_TOKEN, ORG_TOKEN, OTHER_TOKEN, API_SECRET, "api-secret-42", unknown, *tickets]
    requests_made = [
        (V3, bearer(SERVICE_TOKEN), json.dumps({"ticket": tickets[0], "reason": "ACCESS_DENIED"})),
        (V3, {**bearer(ORG_TOKEN), **FORM}, urlencode({"ticket": tickets[1], "reason": "INVALID_TARGET"})),
        (V2, basic(SERVICE, API_SECRET), json.dumps({"ticket": tickets[2]})),
        (V2, basic(SERVICE, "api-secret-42"), json.dumps({"ticket": tickets[3]})),
        (V3, bearer(OTHER_TOKEN), json.dumps({"ticket": unknown})),
        (V3, bearer(SERVICE_TOKEN + "-wrong"), json.dumps({"ticket": tickets[3]})),
        (V3, bearer(SERVICE_TOKEN), json.dumps({"ticket": unknown, "reason": SERVICE_TOKEN})),
        (V3, bearer(SERVICE_TOKEN), json.dumps({"ticket": unknown, "errorDescription": "\n" + API_SECRET})),
        (V3, {"Authorization": SERVICE_TOKEN}, "{}"),
        (f"/api/{ORG_TOKEN}/backchannel/authentication/fail", bearer(ORG_TOKEN), "{}"),
    ]
    with caplog.at_level(logging.DEBUG):
        for path, headers, body in requests_made:
            client.post(path, body, headers={"Content-Type": "application/json", **headers}, expect_errors=True)
        app.fail(SERVICE, tickets[3], Reason.ACCESS_DENIED)
        app.fail(SERVICE, unknown)

    audit = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert len(audit) == len(requests_made) + 2
    assert [json.loads(r.getMessage())["outcome"] for r in audit[-2:]] == ["deleted", "not_found"]
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        for secret in secrets:
            assert secret not in text, (record.name, secret)
    for record in audit:
        assert record.audit == json.loads(record.getMessage())  # type: ignore[attr-defined]
        assert record.levelno == logging.INFO


def test_in_process_record(caplog: pytest.LogCaptureFixture) -> None:
    store = store_from_url("memory://")
    app = BackchannelFailMiddleware(
        not_found_app, store=store, verifier=StaticTokenVerifier(GRANTS), observers=[AuditLog()]
    )
    ticket = store.issue("7")
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        app.fail("7", ticket, "EXPIRED_LOGIN_HINT_TOKEN")
    (record,) = caplog.records
    assert stable(json.loads(record.getMessage())) == expected(
        via="in_process",
        route=None,
        service="7",
        reason="EXPIRED_LOGIN_HINT_TOKEN",
        action="BAD_REQUEST",
        ticket_hash=ticket_hash(ticket),
        deleted=True,
        outcome="deleted",
        client_addr=None,
    )


def test_store_error_record(caplog: pytest.LogCaptureFixture) -> None:
    # A Redis store on a port nobody listens on: a real, failing backend.
    app = BackchannelFailMiddleware(
        not_found_app,
        store=store_from_url(f"redis://127.0.0.1:{free_port()}/0"),
        verifier=StaticTokenVerifier(GRANTS),
        observers=[AuditLog()],
    )
    ticket = new_ticket()
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        app.fail(SERVICE, ticket)
    (record,) = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert stable(json.loads(record.getMessage())) == expected(
        via="in_process",
        route=None,
        reason="SERVER_ERROR",
        action="INTERNAL_SERVER_ERROR",
        ticket_hash=ticket_hash(ticket),
        outcome="store_error",
        client_addr=None,
        status=500,
        result_code="A185101",
        store_error=True,
    )


# -- routing and configuration --------------------------------------------------------


def test_on_emits_to_logging_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture, audit_logger: Any) -> None:
    audit_logger.setLevel(logging.NOTSET)
    app = Settings.from_mapping(ciba_env(tmp_path)).build_middleware(not_found_app)
    assert audit_logger.level == logging.INFO
    assert audit_logger.propagate is True
    app.fail(SERVICE)
    assert [(r.name, r.levelname) for r in caplog.records] == [(AUDIT_LOGGER, "INFO")]


def test_an_explicit_level_is_respected(tmp_path: Path, caplog: pytest.LogCaptureFixture, audit_logger: Any) -> None:
    audit_logger.setLevel(logging.WARNING)
    app = Settings.from_mapping(ciba_env(tmp_path)).build_middleware(not_found_app)
    app.fail(SERVICE)
    assert audit_logger.level == logging.WARNING
    assert caplog.records == []


def test_off_has_no_observer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = Settings.from_mapping(ciba_env(tmp_path, CIBA_AUDIT_LOG="OFF")).build_middleware(not_found_app)
    assert app.observers == ()
    with caplog.at_level(logging.DEBUG):
        app.fail(SERVICE)
    assert caplog.records == []


def test_one_handler_per_target_however_many_middlewares(tmp_path: Path, audit_logger: Any) -> None:
    path = str(tmp_path / "audit.jsonl")
    for _ in range(3):
        route(path)
        route("stderr")
    assert sorted(h.target for h in audit_logger.handlers) == [path, "stderr"]
    assert audit_logger.propagate is False
    AuditLog()(_event())
    for handler in audit_logger.handlers:
        handler.flush()
    assert len(Path(path).read_text().splitlines()) == 1


def _event() -> Any:
    from ciba_middleware.events import FailEvent

    return FailEvent(via="in_process", route=None, service_id="1", principal=None, status=200, result_code="A185001")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "yes",
            "CIBA_AUDIT_LOG must be on, off, stdout, stderr or an absolute file path, not 'yes'",
            id="unknown-word",
        ),
        pytest.param(
            "audit.log",
            "CIBA_AUDIT_LOG must be on, off, stdout, stderr or an absolute file path, not 'audit.log'",
            id="relative-path",
        ),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping(ciba_env(tmp_path, CIBA_AUDIT_LOG=value))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("-1", "CIBA_AUDIT_FLUSH must be a number of seconds from 0 to 1, not '-1'", id="negative"),
        pytest.param("2", "CIBA_AUDIT_FLUSH must be a number of seconds from 0 to 1, not '2'", id="too-long"),
        pytest.param("soon", "CIBA_AUDIT_FLUSH must be a number of seconds from 0 to 1, not 'soon'", id="a-word"),
        pytest.param("nan", "CIBA_AUDIT_FLUSH must be a number of seconds from 0 to 1, not 'nan'", id="nan"),
    ],
)
def test_bad_flush_delays_name_the_variable(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping(ciba_env(tmp_path, CIBA_AUDIT_FLUSH=value))
    assert str(info.value) == message


@pytest.mark.parametrize("target", ["file", "on"])
def test_the_flush_delay_reaches_the_writer_of_the_lines(tmp_path: Path, audit_logger: Any, target: str) -> None:
    path = str(tmp_path / "audit.jsonl")
    settings = Settings.from_mapping(
        ciba_env(tmp_path, CIBA_AUDIT_LOG=path if target == "file" else "on", CIBA_AUDIT_FLUSH="0.5")
    )
    assert settings.audit_flush == 0.5
    audit_log = next(o for o in settings.build_api().api.observers if isinstance(o, AuditLog))
    writer = audit_logger.handlers[0] if target == "file" else audit_log.fallback
    assert (writer.target, writer.delay) == (path if target == "file" else "stderr", 0.5)
    assert Settings.from_mapping(ciba_env(tmp_path)).audit_flush == 0.02


def test_unwritable_file_fails_at_start_up(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "audit.jsonl"
    settings = Settings.from_mapping(ciba_env(tmp_path, CIBA_AUDIT_LOG=str(target)))
    with pytest.raises(ConfigurationError) as info:
        settings.build_middleware(not_found_app)
    assert str(info.value) == (f"CIBA_AUDIT_LOG: cannot open {str(target)!r} for appending: No such file or directory")


# -- the line is the record -----------------------------------------------------------

_text = st.one_of(st.none(), st.text(max_size=40))


@settings(max_examples=300, deadline=None)
@given(
    via=st.sampled_from(["http", "in_process"]),
    route_=st.sampled_from([None, "v3", "v2"]),
    service=_text,
    principal=st.one_of(
        st.none(),
        st.builds(
            Principal, st.sampled_from(list(PrincipalKind)), st.text(max_size=20), st.frozensets(st.text(max_size=5))
        ),
    ),
    status=st.sampled_from([200, 400, 401, 403, 405, 413, 415, 500]),
    reason=st.one_of(st.none(), st.sampled_from(list(Reason))),
    action=st.one_of(st.none(), st.sampled_from(list(Action))),
    deleted=st.sampled_from([None, True, False]),
    store_error=st.booleans(),
    strings=st.tuples(_text, _text, _text, _text),
    duration=st.floats(min_value=0, max_value=100, allow_nan=False),
    trace=st.one_of(st.none(), st.tuples(st.text(max_size=32), st.text(max_size=16))),
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    configured=st.one_of(st.none(), st.frozensets(st.text(max_size=5))),
    family=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["backchannel/authentication", "auth/token", "auth/introspection"]),
            st.one_of(st.none(), st.sampled_from(list(ApiAction))),
        ),
    ),
)
def test_the_line_is_the_record_as_compact_json(
    via: Any,
    route_: Any,
    service: str | None,
    principal: Principal | None,
    status: int,
    reason: Reason | None,
    action: Action | None,
    deleted: bool | None,
    store_error: bool,
    strings: tuple[str | None, str | None, str | None, str | None],
    duration: float,
    trace: tuple[str, str] | None,
    now: float,
    configured: frozenset[str] | None,
    family: tuple[str, Any] | None,
) -> None:
    """Of a fail call, and of a call of the CIBA family (``endpoint`` set, its route's action)."""
    ticket, auth_failure, client_addr, request_id = strings
    event = FailEvent(
        via=via,
        route=route_,
        service_id=service,
        principal=principal,
        status=status,
        result_code="A185001",
        reason=reason,
        action=action,
        ticket_hash=ticket,
        deleted=deleted,
        auth_failure=auth_failure,
        store_error=store_error,
        client_addr=client_addr,
        request_id=request_id,
        duration=duration,
        trace_id=trace[0] if trace else None,
        span_id=trace[1] if trace else None,
    )
    if family is not None:
        event = event._replace(endpoint=family[0], action=family[1], reason=None)
    line = audit_line(event, now, configured)
    record = audit_record(event, now, configured)
    # The second line of the same call is made from the remembered members: the same bytes.
    assert audit_line(event, now, configured) == line
    parsed = json.loads(line)
    assert parsed == record
    assert list(parsed) == list(record)
    # Compact, and the duration with exactly three decimals.
    compact = json.dumps({**record, "duration_ms": "D"}, separators=(",", ":"))
    assert line == compact.replace('"duration_ms":"D"', f'"duration_ms":{duration * 1000:.3f}')
    assert line.isascii()
    assert "\n" not in line


def test_recurring_strings_are_remembered_within_a_bound() -> None:
    """Service IDs, principals and client addresses repeat from call to call, so their JSON
    text is remembered; a caller varying them (its address, a made-up service) cannot grow
    the table without end, and the lines stay right past the bound."""
    from ciba_middleware import audit

    for number in range(audit._RECURRING + 500):
        address = f'10.0.{number}."\u00e9'
        line = audit_line(_event()._replace(client_addr=address), 0.0)
        assert json.loads(line)["client_addr"] == address
    assert len(audit._KNOWN) == audit._RECURRING


def test_remembered_members_follow_what_they_are_made_of() -> None:
    """The members between the call's own values are remembered, keyed by everything they
    depend on: a call differing in any of them, or in the configured services, gets its own."""
    from ciba_middleware import audit

    refused = _event()._replace(via="http", route="v3", status=401, result_code="A001", auth_failure="missing")
    first = json.loads(audit_line(refused, 0.0))
    assert first["service"] is None
    # The same call where its service is a configured one: the claimed service is written.
    assert json.loads(audit_line(refused, 0.0, frozenset({"1"})))["service"] == "1"
    assert json.loads(audit_line(refused, 0.0))["service"] is None
    # Only the call's own values change from line to line; each line has its own.
    again = refused._replace(request_id="r-2", ticket_hash="abc", duration=0.25)
    line = json.loads(audit_line(again, 1.5))
    assert (line["request_id"], line["ticket_hash"], line["duration_ms"]) == ("r-2", "abc", 250.0)
    assert line["time"] == "1970-01-01T00:00:01.500Z"
    assert line == audit_record(again, 1.5)
    # Services given as a list (unhashable): the same line, made without the table.
    assert audit_line(refused, 0.0, ["1"]) == audit_line(refused, 0.0, frozenset({"1"}))
    assert json.loads(audit_line(refused, 0.0, [])) == audit_record(refused, 0.0, [])
    # A principal covering the service, then one that does not.
    covering = refused._replace(status=200, principal=Principal(PrincipalKind.SERVICE, "1", frozenset({"1"})))
    assert json.loads(audit_line(covering, 0.0))["service"] == "1"
    other = covering._replace(principal=Principal(PrincipalKind.SERVICE, "1", frozenset({"2"})))
    assert json.loads(audit_line(other, 0.0))["service"] is None
    # A caller varying its address, or the service it claims, adds nothing to the table.
    audit_line(refused, 0.0)
    size = len(audit._PARTS)
    for number in range(100):
        varied = refused._replace(client_addr=f"10.1.{number}", service_id=f"s{number}")
        assert json.loads(audit_line(varied, 0.0)) == audit_record(varied, 0.0)
    assert len(audit._PARTS) == size
    # What the key is made of is bounded by the code and the configuration; the table is
    # bounded anyway: past its bound it starts anew.
    for number in range(audit._PARTS_MAX + 10):
        coded = refused._replace(result_code=f"A{number:06d}")
        assert json.loads(audit_line(coded, 0.0))["result_code"] == f"A{number:06d}"
        assert len(audit._PARTS) <= audit._PARTS_MAX


def test_trace_ids_come_last_and_only_with_a_span() -> None:
    event = _event()
    assert "trace_id" not in audit_record(event, 0.0)
    traced = audit_record(event._replace(trace_id="a" * 32, span_id="b" * 16), 0.0)
    assert list(traced)[-2:] == ["trace_id", "span_id"]
    assert (traced["trace_id"], traced["span_id"]) == ("a" * 32, "b" * 16)


# -- where "on" writes ----------------------------------------------------------------


def test_nothing_is_built_when_no_handler_takes_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("ciba_test.audit.quiet")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    built: list[FailEvent] = []
    monkeypatch.setattr("ciba_middleware.audit.audit_line", lambda event, *a: built.append(event) or "{}")
    try:
        AuditLog(logger)(_event())
        assert built == []
        handler.setLevel(logging.INFO)
        AuditLog(logger)(_event())
        assert len(built) == 1
    finally:
        logger.removeHandler(handler)


def test_a_handler_added_at_runtime_is_followed_from_the_next_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where lines go is looked up once per second of the clock: a handler added while the
    server runs takes the lines from the next second on (and at once if the clock goes back)."""
    from ciba_middleware import audit

    logger = logging.getLogger("ciba_test.audit.runtime")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    fallback = LineHandler(str(tmp_path / "fallback.log"), delay=0)
    taken: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = taken.append  # type: ignore[method-assign]
    clock = [1000.2]
    monkeypatch.setattr(audit.time, "time", lambda: clock[0])
    log = AuditLog(logger, fallback=fallback)
    try:
        log(_event())  # no handler: the fallback
        logger.addHandler(handler)
        clock[0] = 1000.9
        log(_event())  # the same second: still the fallback
        assert len((tmp_path / "fallback.log").read_text().splitlines()) == 2
        assert taken == []
        clock[0] = 1001.0
        log(_event())  # the next second: through logging
        assert len(taken) == 1
        assert json.loads(taken[0].getMessage())["time"] == "1970-01-01T00:16:41.000Z"
        logger.removeHandler(handler)
        clock[0] = 1000.5  # the clock set back: looked up again
        log(_event())
        assert len(taken) == 1
        assert len((tmp_path / "fallback.log").read_text().splitlines()) == 3
        assert log.where() == str(tmp_path / "fallback.log")
    finally:
        logger.removeHandler(handler)
        fallback.close()


def test_with_no_handler_at_all_on_writes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("ciba_test.audit.unconfigured")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    AuditLog(logger)(_event())
    AuditLog(logger, fallback=None)(_event())
    out, err = capfd.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert json.loads(line)["service"] == "1"


def test_the_time_text_follows_the_clock_to_the_millisecond() -> None:
    from ciba_middleware.audit import _time

    assert _time(0.0) == "1970-01-01T00:00:00.000Z"
    assert _time(1764640000.1234) == "2025-12-02T01:46:40.123Z"
    assert _time(1764640000.1236) == "2025-12-02T01:46:40.123Z"  # the same millisecond
    assert _time(1764640000.9995) == "2025-12-02T01:46:40.999Z"
    assert _time(1764640001.0) == "2025-12-02T01:46:41.000Z"
    assert _time(1764640000.5) == "2025-12-02T01:46:40.500Z"  # back in time: a clock step


def test_code_reading_events_by_position_is_checked_against_their_fields() -> None:
    from ciba_middleware.events import by_position

    by_position(FailEvent._fields, "here")
    moved = (FailEvent._fields[1], FailEvent._fields[0], *FailEvent._fields[2:])
    with pytest.raises(ImportError, match=r"^here lists FailEvent's fields as"):
        by_position(moved, "here")


@settings(max_examples=200, deadline=None)
@given(ticket=st.text(max_size=80))
def test_the_ticket_hash_is_the_start_of_its_sha256(ticket: str) -> None:
    """Any text, lone surrogates included (hashed as sent): the first 12 hex digits of SHA-256."""
    import hashlib

    data = ticket.encode("utf-8", "surrogatepass")
    assert ticket_hash(ticket) == hashlib.sha256(data).hexdigest()[:12]


def test_the_ticket_hash_falls_back_to_hashlib_without_cpythons_own_sha256() -> None:
    """An interpreter without ``_sha2`` or ``_sha256`` hashes with hashlib, to the same text."""
    import subprocess
    import sys

    code = (
        "import sys, hashlib\n"
        "sys.modules['_sha2'] = None; sys.modules['_sha256'] = None\n"
        "from ciba_middleware.stores import base\n"
        "assert base._sha256 is hashlib.sha256, base._sha256\n"
        "print(base.ticket_hash('abc'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ba7816bf8f01"
