"""Sections 1 and 2 in process: the WSGI callables called directly, in alternating rounds."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciba_middleware import BackchannelFailMiddleware, from_env
from ciba_middleware import request as request_module
from ciba_middleware.audit import AuditLog, audit_line, audit_record
from ciba_middleware.auth import Principal, PrincipalKind
from ciba_middleware.events import FailEvent
from ciba_middleware.linewriter import LineHandler
from ciba_middleware.reasons import Action, Reason
from ciba_middleware.stores import store_from_url

from . import apps
from .profiles import Profile
from .stats import Row, median, ratios, spread
from .workload import Calls, bodies

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


#: Each round interleaves the variants in this many slices, so that a burst of load from
#: elsewhere on the machine falls on every variant alike.
SLICES = 20


def alternate(calls: Calls, variants: dict[str, WSGIApplication], *, count: int, rounds: int) -> dict[str, list[float]]:
    """Calls/s of each variant per round. A round runs ``count`` calls of each variant in
    slices, the variants taking turns and the order rotating every slice (A B C, B C A, ...)."""
    names = list(variants)
    for name in names:  # warm up: imports, caches, the first store connection
        calls.run(variants[name], max(100, count // 10))
    per_slice = max(1, count // SLICES)
    results: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for index in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for piece in range(SLICES):
            shift = (index + piece) % len(names)
            offset = (index * SLICES + piece) * per_slice
            for name in names[shift:] + names[:shift]:
                started = clock()
                calls.run(variants[name], per_slice, offset)
                spent[name] += clock() - started
        for name in names:
            results[name].append(per_slice * SLICES / spent[name])
    return results


def pass_through(profile: Profile) -> list[Row]:
    calls = Calls.hello()
    runs = alternate(
        calls,
        {"bare": apps.flask_hello(), "wrapped": apps.flask_wrapped()},
        count=profile.passthrough_calls,
        rounds=profile.passthrough_rounds,
    )
    per_round = ratios(runs["wrapped"], runs["bare"])
    # The middleware's own cost, without Flask's noise around it: an app that does nothing,
    # alone and wrapped.
    noop_runs = alternate(
        calls,
        {"bare": _noop, "wrapped": apps.fail_api_around(_noop)},
        count=profile.passthrough_calls * 5,
        rounds=profile.passthrough_rounds,
    )
    extra_ns = [(1 / w - 1 / b) * 1e9 for w, b in zip(noop_runs["wrapped"], noop_runs["bare"], strict=True)]
    flask_ns = 1e9 / median(runs["bare"])
    return [
        Row(
            "1 pass-through",
            "in process: Flask wrapped / bare",
            median(per_round),
            "%",
            baseline=f"bare Flask {median(runs['bare']):,.0f} calls/s, wrapped {median(runs['wrapped']):,.0f}",
            target=0.99,
            spread=spread(per_round),
        ),
        Row(
            "1 pass-through",
            "in process: time the middleware adds",
            median(extra_ns),
            "ns",
            detail=f"around an app that does nothing; {median(extra_ns) / flask_ns:.2%} of a bare Flask call "
            f"({flask_ns / 1000:,.1f} us)",
            spread=spread(extra_ns),
        ),
    ]


def _noop(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [])
    return ()


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` while the block runs: the audit lines of the
    defaults are written to a real file, as a server's stderr would take them."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _defaults(**more: str) -> BackchannelFailMiddleware:
    """What ``from_env()`` builds with only CIBA_TOKENS set (and the memory store)."""
    return from_env(environ=apps.defaults_env("memory://", **more))


def fail_in_process(profile: Profile, work_dir: Path) -> list[Row]:
    count = profile.fail_calls
    # Tickets that exist in each variant's memory store at first: later rounds find them
    # deleted, which is answered the same.
    tickets = [store_from_url("memory://").issue(apps.SERVICE) for _ in range(min(count * profile.rounds, 50_000))]
    calls = Calls.fail(bodies(tickets))
    defaults = _defaults()
    audit_off = _defaults(CIBA_AUDIT_LOG="off")
    route_store = store_from_url("memory://")
    flat_store = store_from_url("memory://")
    for store in (defaults.store, audit_off.store, route_store, flat_store):
        for ticket in tickets:
            store._tickets[(apps.SERVICE, ticket)] = time.monotonic() + 3600  # type: ignore[attr-defined]
    variants: dict[str, WSGIApplication] = {
        "floor": apps.floor,
        "fail": audit_off,
        "defaults": defaults,
        "flask": apps.flask_route(route_store),
        "flat": apps.flat_checks(flat_store),
    }
    lines = work_dir / "in-process-stderr.log"
    with _stderr_to(lines):
        _check_same_answer(calls, variants)
        # The Flask route is several times slower: give it fewer calls per round, same rounds.
        runs = alternate(calls, {k: v for k, v in variants.items() if k != "flask"}, count=count, rounds=profile.rounds)
        flask_runs = alternate(
            calls,
            {"fail": variants["fail"], "flask": variants["flask"]},
            count=max(200, count // 5),
            rounds=profile.rounds,
        )
    written = lines.read_bytes().count(b'"event":"ciba_fail"')
    lines.unlink()
    vs_floor = ratios(runs["fail"], runs["floor"])
    vs_flask = ratios(flask_runs["fail"], flask_runs["flask"])
    defaults_vs_floor = ratios(runs["defaults"], runs["floor"])
    audit_share = ratios(runs["defaults"], runs["fail"])
    rows = [
        Row(
            "2 fail in process",
            "in process: defaults (audit lines written) / raw floor",
            median(defaults_vs_floor),
            "%",
            baseline=f"defaults {median(runs['defaults']):,.0f} calls/s",
            spread=spread(defaults_vs_floor),
            detail=f"from_env with CIBA_TOKENS only, memory store; {written:,} lines to a file via stderr; "
            "a regression row, no target (docs/performance.md)",
        ),
        Row(
            "2 fail in process",
            "in process: audit log off (memory) / raw floor",
            median(vs_floor),
            "%",
            baseline=f"floor {median(runs['floor']):,.0f} calls/s, audit off {median(runs['fail']):,.0f}",
            spread=spread(vs_floor),
            detail="a regression row, no target (docs/performance.md)",
        ),
        Row(
            "2 fail in process",
            "in process: audit log on / off",
            median(audit_share),
            "%",
            spread=spread(audit_share),
            detail="the audit line's share of an in-process call (no I/O; lines written together by a thread)",
        ),
        Row(
            "2 fail in process",
            "in process: fail API (audit off) / Flask route",
            median(vs_flask),
            "x",
            baseline=f"Flask route {median(flask_runs['flask']):,.0f} calls/s, "
            f"fail API {median(flask_runs['fail']):,.0f}",
            target=5.0,
            spread=spread(vs_flask),
        ),
    ]
    vs_flat = ratios(runs["flat"], runs["floor"])
    rows.append(
        Row(
            "2 fail in process",
            "reference: same checks, one flat function / raw floor",
            median(vs_flat),
            "%",
            baseline=f"flat {median(runs['flat']):,.0f} calls/s; the ceiling of these checks in Python",
            spread=spread(vs_flat),
        )
    )
    rows.append(_duplicate_check_cost(calls, median(runs["fail"]), profile))
    return rows


def _check_same_answer(calls: Calls, variants: dict[str, WSGIApplication]) -> None:
    """The fail API and the Flask route must answer alike, or the comparison means nothing."""
    answers = {}
    for name, app in variants.items():
        if name == "floor":
            continue
        seen: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
            seen.append(status)  # noqa: B023 (called before the loop moves on)

        template, body = calls.environs[3]
        environ = template.copy()
        environ["wsgi.input"] = io.BytesIO(body)
        out = b"".join(app(environ, start_response))
        answers[name] = (seen[0], json.loads(out))
    if len({json.dumps(a, sort_keys=True) for a in answers.values()}) != 1:
        raise RuntimeError(f"the variants answer differently: {answers}")


def _duplicate_check_cost(calls: Calls, fail_rate: float, profile: Profile) -> Row:
    """What rejecting duplicate JSON members costs: the scan with its hook against the bare C scan."""
    texts = [body.decode() for _, body in calls.environs[:64]]
    with_hook: Callable[[str, int], object] = request_module._scan_json
    without: Callable[[str, int], object] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
    count = max(2000, profile.fail_calls)

    def time_scan(scan: Callable[[str, int], object]) -> float:
        started = time.perf_counter()
        for i in range(count):
            scan(texts[i & 63], 0)
        return (time.perf_counter() - started) / count

    time_scan(with_hook)  # warm up
    time_scan(without)
    hook_times: list[float] = []
    bare_times: list[float] = []
    for _ in range(profile.rounds):
        hook_times.append(time_scan(with_hook))
        bare_times.append(time_scan(without))
    extra = [h - b for h, b in zip(hook_times, bare_times, strict=True)]
    share = median(extra) * fail_rate
    return Row(
        "2 fail in process",
        "duplicate-member check: share of a call",
        share,
        "%",
        detail=f"{median(extra) * 1e9:,.0f} ns per body (scan with the hook {median(hook_times) * 1e9:,.0f} ns, "
        f"without {median(bare_times) * 1e9:,.0f} ns)",
        spread=spread([e * fail_rate for e in extra]),
    )


def all_rows(profile: Profile, sections: Sequence[str], work_dir: Path) -> list[Row]:
    rows: list[Row] = []
    if "1" in sections:
        rows += pass_through(profile)
    if "2" in sections:
        rows += fail_in_process(profile, work_dir)
        rows += audit_costs(profile, work_dir)
    return rows


def _typical_event() -> FailEvent:
    principal = Principal(PrincipalKind.SERVICE, apps.SERVICE, frozenset((apps.SERVICE,)))
    return FailEvent(
        via="http",
        route="v3",
        service_id=apps.SERVICE,
        principal=principal,
        status=200,
        result_code="A185001",
        reason=Reason.ACCESS_DENIED,
        action=Action.FORBIDDEN,
        ticket_hash="c1663999959c",
        deleted=True,
        client_addr="127.0.0.1",
        request_id="9a0163449c184676a5b49b8bc21913a7",
        duration=0.000456,
    )


def audit_costs(profile: Profile, work_dir: Path) -> list[Row]:
    """What one audit record costs, by way of writing it: the measurements behind the
    choice of mechanism (docs/observability.md). Each way writes to a file of its own."""
    event = _typical_event()
    count = max(2000, profile.fail_calls)
    to_file = logging.getLogger("ciba_bench.audit.file")
    at_once = logging.getLogger("ciba_bench.audit.at_once")
    former = logging.getLogger("ciba_bench.audit.former")
    quiet = logging.getLogger("ciba_bench.audit.quiet")
    handlers: list[logging.Handler] = [
        LineHandler(str(work_dir / "audit-line.jsonl")),
        LineHandler(str(work_dir / "audit-at-once.jsonl"), delay=0),
        logging.StreamHandler(open(work_dir / "audit-former.jsonl", "a", encoding="utf-8")),  # noqa: SIM115
        logging.NullHandler(logging.WARNING),
    ]
    for logger, handler in zip((to_file, at_once, former, quiet), handlers, strict=True):
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    handlers[2].setFormatter(logging.Formatter("%(message)s"))
    observer = AuditLog(to_file)
    written_at_once = AuditLog(at_once)
    silent = AuditLog(quiet)

    def the_former_way(e: FailEvent) -> None:
        # What AuditLog did before: a dict, json.dumps, a LogRecord, a StreamHandler.
        record = audit_record(e)
        former.log(logging.INFO, "%s", json.dumps(record, separators=(",", ":")), extra={"audit": record})

    ways: dict[str, Callable[[FailEvent], object]] = {
        "line": audit_line,
        "written": observer,
        "at_once": written_at_once,
        "former": the_former_way,
        "silent": silent,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():  # warm up
        for _ in range(200):
            way(event)
    for _ in range(profile.rounds):
        for name, way in ways.items():
            started = time.perf_counter()
            for _ in range(count):
                way(event)
            times[name].append((time.perf_counter() - started) / count * 1e9)
    for handler in handlers:
        handler.close()
    for logger in (to_file, at_once, former, quiet):
        logger.handlers[:] = []
    labels = {
        "line": "audit record: the line from its template",
        "written": "audit record: built and written to a file (the default: lines share write()s)",
        "at_once": "audit record: built and written to a file at once (CIBA_AUDIT_FLUSH=0)",
        "former": "audit record the former way (dict, json.dumps, LogRecord, StreamHandler)",
        "silent": "audit record nobody takes (handlers, none at INFO)",
    }
    return [
        Row("2 fail in process", labels[name], median(values), "ns", spread=spread(values))
        for name, values in times.items()
    ]
