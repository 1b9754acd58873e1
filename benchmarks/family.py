"""Section 6: the CIBA family (issue 25): the token poll and the token exchange.

- Under gunicorn (the defaults: SQLite store, audit log on, the workers of every gunicorn
  row): ``auth/token`` answering ``authorization_pending`` against the raw floor of the same
  rounds, and beside it the fail API on a server that serves the family too, and on one that
  does not (the fail API's rows must not drop). ``CIBA_POLLING_INTERVAL=0``, so that polls
  back to back get ``authorization_pending``, not ``slow_down``; the pending auth_req_ids
  are made through the API (``/backchannel/authentication``, ``/issue``) before the load.
- In process, one thread: a poll's time (``FailApi.call("auth/token", ...)``, the default
  interval of 5 s, so each poll reads the request's state and swaps in when it was polled)
  with 1,000 pending requests and with 1,000,000 (10,000 in the quick profile), on SQLite,
  Redis and PostgreSQL: p50 over p50. 1,000 requests are made through the API; the rest are
  added in bulk (benchmarks/records.py's ways), each the record ``issue`` writes, built by
  ``ciba_middleware.ciba.records``. Everything is removed afterwards.
- In process, one thread: the token exchange that succeeds (the state swapped to used, an
  access token stored, an ID token signed), in calls per CPU second (per core), SQLite and
  memory, beside Keycloak's published sizing for client credentials grants.

``python -m benchmarks --sections 6 [--quick]`` runs this section alone; so does
``python -m benchmarks.family [--quick] [--rows gunicorn,polls,exchange]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from ciba_middleware import sha256_hex
from ciba_middleware.ciba.family import GRANT_TYPE, RETAIN_EXPIRED
from ciba_middleware.ciba.records import digest_key, encode_state, pending_state
from ciba_middleware.config import Settings
from ciba_middleware.middleware import BackchannelFailMiddleware
from ciba_middleware.response import not_found_app
from ciba_middleware.stores.base import RecordStore

from . import loadgen
from . import records as record_rows
from .apps import FAIL_PATH, SERVICE, TOKEN, defaults_env
from .endtoend import MEMORY, _rounds
from .loadgen import Target
from .profiles import PROFILES, Profile
from .servers import servers
from .stats import Row, median, ratios, spread
from .workload import StoreSpec, bodies, cleanup, issue, new_run_id, store_specs, write_bodies

SECTION = "6 CIBA family"
#: A bench-only client and secret, never real ones.
CLIENT_ID = "bench-poller"
CLIENT_SECRET = "bench-client-secret-3Kq9"
ISSUER = "https://op.bench.example"
CLIENTS = [{"client_id": CLIENT_ID, "service": SERVICE, "client_secret_sha256": sha256_hex(CLIENT_SECRET)}]
TOKEN_PATH = f"/api/{SERVICE}/auth/token"
#: Pending auth_req_ids polled in turn under gunicorn.
PENDING = 8
#: The token poll against the raw floor, and the fail API with the family against without.
POLL_TARGET = 0.80
FAIL_TARGET = 0.75  # section 3's SQLite target
FAIL_KEPT = 0.95
#: Keycloak's sizing guide ("Concepts for sizing CPU and memory resources"): about 120
#: client credentials grants per second per vCPU. The aim: ten times that.
KEYCLOAK_PER_VCPU = 120.0
EXCHANGE_TARGET = 10.0
SMALL = record_rows.SMALL


def key_file(work_dir: Path) -> Path:
    """An EC P-256 private JWK (ES256, the key the family generates when none is set) in
    ``work_dir``, so that every worker signs with the same key, as in production."""
    path = work_dir / "family-signing.jwk"
    if not path.exists():
        from joserfc.jwk import ECKey

        path.write_text(json.dumps(ECKey.generate_key("P-256").as_dict(private=True)))
    return path


def family_env(store_url: str, work_dir: Path, **more: str) -> dict[str, str]:
    """``defaults_env`` plus the family: one poll client, an issuer, a signing key."""
    family = {
        "CIBA_CLIENTS": json.dumps(CLIENTS),
        "CIBA_ISSUER": ISSUER,
        "CIBA_SIGNING_KEY_FILE": str(key_file(work_dir)),
        **more,
    }
    return defaults_env(store_url, **family)


def token_fields(auth_req_id: str) -> dict[str, str]:
    """A token request as the authorization server passes it on (client_secret_post)."""
    return {
        "parameters": urlencode({"grant_type": GRANT_TYPE, "auth_req_id": auth_req_id}),
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
    }


def _authentication_fields(hint: str) -> dict[str, str]:
    return {
        "parameters": urlencode({"scope": "openid", "login_hint": hint}),
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
    }


def _error(body: Mapping[str, Any]) -> str:
    content = body.get("responseContent")
    return str(json.loads(content).get("error")) if isinstance(content, str) else str(body.get("action"))


# -- under gunicorn -----------------------------------------------------------------------


def _post(url: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        payload = json.dumps(body)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        connection.request("POST", path, payload, headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {answer.get('resultMessage')}")
        assert isinstance(answer, dict)
        return answer
    finally:
        connection.close()


def _pending_over_http(url: str, count: int) -> list[str]:
    """auth_req_ids of requests made through the API: authentication, then issue."""
    base = f"/api/{SERVICE}/backchannel/authentication"
    made = []
    for index in range(count):
        started = _post(url, base, _authentication_fields(f"user{index}"))
        if started.get("action") != "USER_IDENTIFICATION":
            raise RuntimeError(f"backchannel/authentication answered {started.get('action')}")
        issued = _post(url, base + "/issue", {"ticket": started["ticket"]})
        if issued.get("action") != "OK":
            raise RuntimeError(f"backchannel/authentication/issue answered {issued.get('action')}")
        made.append(issued["authReqId"])
    return made


def _poll_answer(url: str, auth_req_id: str) -> str:
    return _error(_post(url, TOKEN_PATH, token_fields(auth_req_id)))


def token_poll_end_to_end(profile: Profile, log_dir: Path) -> list[Row]:
    """The token poll under gunicorn, the defaults, against the raw floor of the same rounds."""
    family_store = StoreSpec("sqlite", f"sqlite:///{log_dir / 'family.sqlite3'}", True)
    plain_store = StoreSpec("sqlite", f"sqlite:///{log_dir / 'family-off.sqlite3'}", True)
    family = family_env(family_store.url, log_dir, CIBA_POLLING_INTERVAL="0")
    specs: dict[str, tuple[str, dict[str, str]]] = {
        "floor": ("floor", {}),
        "token": ("defaults", family),
        "fail_family": ("defaults", family),
        "fail": ("defaults", defaults_env(plain_store.url)),
    }
    files = {
        "floor": write_bodies(log_dir / "family-bodies-floor.txt", bodies(issue(MEMORY, profile.tickets))),
        "fail_family": write_bodies(log_dir / "family-bodies-fail.txt", bodies(issue(family_store, profile.tickets))),
        "fail": write_bodies(log_dir / "family-bodies-fail-off.txt", bodies(issue(plain_store, profile.tickets))),
    }
    with servers(specs, workers=profile.server_workers, log_dir=log_dir) as running:
        token_url = running["token"].url
        pending = _pending_over_http(token_url, PENDING)
        files["token"] = write_bodies(
            log_dir / "family-bodies-token.txt",
            [json.dumps(token_fields(auth_req_id)).encode() for auth_req_id in pending],
        )
        targets = {
            name: Target(server.url, TOKEN_PATH if name == "token" else FAIL_PATH, files[name], TOKEN)
            for name, server in running.items()
        }
        for target in targets.values():
            loadgen.check_answers(target)
            loadgen.warm(target)
        before = {_poll_answer(token_url, auth_req_id) for auth_req_id in pending}
        runs = _rounds(targets, profile, profile.rounds, profile.seconds)
        after = {_poll_answer(token_url, auth_req_id) for auth_req_id in pending}
    if before | after != {"authorization_pending"}:
        raise RuntimeError(f"the token polls answered {sorted(before | after)}, not authorization_pending alone")

    def through(name: str) -> list[float]:
        return [r.requests_per_s for r in runs[name]]

    def p50(name: str) -> str:
        return f"wrk p50 {median([r.p50_ms for r in runs[name]]):.2f} ms"

    floor = through("floor")

    def versus(name: str, baseline: list[float], label: str, target: float | None, detail: str) -> Row:
        per_round = ratios(through(name), baseline)
        return Row(
            SECTION,
            label,
            median(per_round),
            "%",
            baseline=f"{median(through(name)):,.0f} req/s",
            target=target,
            spread=spread(per_round),
            detail=detail,
        )

    return [
        Row(
            SECTION,
            "gunicorn: raw floor (the family's baseline)",
            median(floor),
            "req/s",
            detail=f"the same floor as section 3, in this section's rounds; {p50('floor')}",
        ),
        versus(
            "token",
            floor,
            "gunicorn: auth/token authorization_pending, defaults (sqlite) / raw floor",
            POLL_TARGET,
            f"CIBA_POLLING_INTERVAL=0, so back-to-back polls get authorization_pending, not slow_down; "
            f"{PENDING} pending auth_req_ids made through the API, polled in turn; {p50('token')}",
        ),
        versus(
            "fail_family",
            floor,
            "gunicorn: fail API, defaults (sqlite), family served too / raw floor",
            FAIL_TARGET,
            f"the same server setup as the token row (CIBA_CLIENTS, CIBA_ISSUER); {p50('fail_family')}",
        ),
        versus(
            "fail_family",
            through("fail"),
            "gunicorn: fail API, family served too / not (sqlite)",
            FAIL_KEPT,
            "the fail API's rows must not drop when the family is configured",
        ),
    ]


# -- in process: the token poll with 1,000 and 1,000,000 pending requests --------------------


def _family_at(url: str, work_dir: Path, **more: str) -> BackchannelFailMiddleware:
    env = family_env(url, work_dir, **{"CIBA_AUDIT_LOG": "off", "CIBA_AUTH_REQ_ID_LIFETIME": "3600", **more})
    return Settings.from_mapping(env).build_middleware(not_found_app, announce=False)


def _made_through_api(middleware: BackchannelFailMiddleware, count: int) -> list[str]:
    api = middleware.api
    made = []
    for index in range(count):
        _, started = api.call("backchannel/authentication", SERVICE, _authentication_fields(f"user{index}"))
        _, issued = api.call("backchannel/authentication/issue", SERVICE, {"ticket": started["ticket"]})
        if issued.get("action") != "OK":
            raise RuntimeError(f"issue answered {issued.get('action')}")
        made.append(issued["authReqId"])
    return made


def _bulk(spec: StoreSpec, middleware: BackchannelFailMiddleware, auth_req_ids: list[str]) -> None:
    """Add pending requests' states as ``issue`` writes them, by the backend's bulk path."""
    family = middleware.api.family
    assert family is not None
    lifetime = family.options.auth_req_id_lifetime
    request = {"scopes": ["openid"], "acrs": None, "resources": None, "notification_token": None}
    state = pending_state(
        request, client=CLIENT_ID, mode="poll", now=time.time(), lifetime=lifetime, interval=family.options.interval
    )
    keys = [digest_key("arid", auth_req_id) for auth_req_id in auth_req_ids]
    record_rows._bulk_add(spec, middleware.store, keys, encode_state(state), lifetime + RETAIN_EXPIRED)


def _time_polls(
    middleware: BackchannelFailMiddleware, auth_req_ids: Sequence[str], polls: int, rng: random.Random
) -> tuple[list[float], dict[str, int]]:
    """Microseconds of each of ``polls`` token polls of auth_req_ids drawn at random, and the answers."""
    call = middleware.api.call
    perf = time.perf_counter_ns
    times = []
    answers: dict[str, int] = {}
    for _ in range(polls):
        fields = token_fields(rng.choice(auth_req_ids))
        started = perf()
        _, body = call("auth/token", SERVICE, fields)
        times.append((perf() - started) / 1000)
        error = _error(body)
        answers[error] = answers.get(error, 0) + 1
    unexpected = set(answers) - {"authorization_pending", "slow_down"}
    if unexpected:
        raise RuntimeError(f"token polls of pending requests answered {sorted(unexpected)}")
    return times, answers


def poll_flatness(spec: StoreSpec, large: int, polls: int, work_dir: Path) -> Row:
    """p50 of a token poll with ``large`` pending requests over the p50 with 1,000 (as
    benchmarks/records.py pairs its stores: two side by side, or Redis before/after)."""
    name = f"{spec.name}: auth/token poll p50, {large:,} / {SMALL:,} pending requests"
    if not spec.available:
        return Row(SECTION, name, float("nan"), "x", detail=f"not measured: {spec.why}")
    opened: list[tuple[str, BackchannelFailMiddleware]] = []

    def open_family(part: str) -> BackchannelFailMiddleware:
        url = record_rows._own_url(spec, part)
        middleware = _family_at(url, work_dir)
        opened.append((url, middleware))
        return middleware

    answers: dict[str, int] = {}
    how_written = ""

    def timed(middleware: BackchannelFailMiddleware, ids: Sequence[str], count: int, into: list[float]) -> None:
        times, seen = _time_polls(middleware, ids, count, rng)
        into += times
        for key, value in seen.items():
            answers[key] = answers.get(key, 0) + value

    try:
        small = open_family("famsmall")
        if not isinstance(small.store, RecordStore):
            return Row(SECTION, name, float("nan"), "x", detail=f"not measured: {spec.name} keeps no records")
        rng = random.Random(25)
        small_ids = _made_through_api(small, SMALL)
        bulk_ids = [f"bench-pending-{index:012d}" for index in range(SMALL, large)]
        small_times: list[float] = []
        large_times: list[float] = []
        if spec.name == "redis":
            _time_polls(small, small_ids, min(200, polls), rng)  # warm-up
            timed(small, small_ids, polls // 2, small_times)
            started = time.monotonic()
            _bulk(spec, small, bulk_ids)
            loaded = time.monotonic() - started
            timed(small, small_ids + bulk_ids, polls, large_times)
            record_rows._unlink_bulk(small.store, [digest_key("arid", auth_req_id) for auth_req_id in bulk_ids])
            timed(small, small_ids, polls - polls // 2, small_times)
        else:
            big = open_family("famlarge")
            big_ids = _made_through_api(big, SMALL) + bulk_ids
            started = time.monotonic()
            _bulk(spec, big, bulk_ids)
            loaded = time.monotonic() - started
            if spec.name == "postgresql":
                record_rows._analyze(small.store)
                record_rows._analyze(big.store)
            for middleware, ids in ((small, small_ids), (big, big_ids)):
                _time_polls(middleware, ids, min(200, polls), rng)  # warm-up
            # Poll by poll, alternately: a burst of load from elsewhere (seconds, on a shared
            # machine) falls on both sizes alike, which rounds of hundreds of polls did not ensure.
            order = [(small, small_ids, small_times), (big, big_ids, large_times)]
            for index in range(polls):
                for middleware, ids, into in order[:: 1 if index % 2 == 0 else -1]:
                    timed(middleware, ids, 1, into)
            if spec.name == "postgresql":
                how_written = _hot_updates(small.store, big.store)
        low, high = median(small_times), median(large_times)
    finally:
        for url, middleware in opened:
            record_rows._remove(spec, url, middleware.store)
    how = "before and after the bulk, one store" if spec.name == "redis" else "alternating poll by poll, two stores"
    if spec.name == "postgresql":
        how += f"; {how_written}"
    mix = ", ".join(f"{count:,} {answer}" for answer, count in sorted(answers.items()))
    return Row(
        SECTION,
        name,
        high / low,
        "x",
        target=1.2,
        bound="max",
        detail=f"p50 {high:,.0f} us with {large:,}, {low:,.0f} us with {SMALL:,}; FailApi.call, one thread, "
        f"audit off, interval 5 s (each poll a get + swap: {mix}); {how}; "
        f"{len(bulk_ids):,} states added in bulk in {loaded:.0f} s",
    )


def _hot_updates(small: Any, large: Any) -> str:
    """PostgreSQL: the share of each table's updates that were HOT (heap-only: no index
    entry written, the new version on the same page), from ``pg_stat_user_tables``."""
    import psycopg

    shares = []
    with psycopg.connect(small.conninfo, autocommit=True) as conn:
        for store in (small, large):
            row = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass",
                (store._records_qualified,),
            ).fetchone()
            updated, hot = row if row else (0, 0)
            shares.append(f"{hot / updated:.0%}" if updated else "n/a")
    return f"HOT updates: {shares[1]} of the large table's, {shares[0]} of the small one's"


# -- in process: the token exchange that succeeds -------------------------------------------


def _authorized(middleware: BackchannelFailMiddleware, count: int) -> list[str]:
    """auth_req_ids of requests the user authorized (authentication, issue, complete)."""
    api = middleware.api
    made = []
    for index in range(count):
        _, started = api.call("backchannel/authentication", SERVICE, _authentication_fields(f"user{index}"))
        ticket = started["ticket"]
        _, issued = api.call("backchannel/authentication/issue", SERVICE, {"ticket": ticket})
        _, done = api.call(
            "backchannel/authentication/complete",
            SERVICE,
            {"ticket": ticket, "result": "AUTHORIZED", "subject": f"user{index}"},
        )
        if done.get("action") != "NO_ACTION":
            raise RuntimeError(f"complete answered {done.get('action')}")
        made.append(issued["authReqId"])
    return made


def token_exchange(profile: Profile, work_dir: Path) -> list[Row]:
    """Successful token exchanges per CPU second, one thread, SQLite (the default) and memory,
    alternating rounds; the audit log on, its lines written to a file."""
    calls = max(20, profile.fail_calls // 50)
    rounds = max(1, profile.rounds // 2)
    # One audit file for both: one handler in the process, as a server has (two targets
    # would send each line through logging to both).
    audit = str(work_dir / "family-exchange-audit.log")
    variants = {
        "sqlite": _family_at(f"sqlite:///{work_dir / 'family-exchange.sqlite3'}", work_dir, CIBA_AUDIT_LOG=audit),
        "memory": _family_at("memory://", work_dir, CIBA_AUDIT_LOG=audit),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for middleware in variants.values():  # warm-up: imports, the key, the first writes
            for auth_req_id in _authorized(middleware, 20):
                middleware.api.call("auth/token", SERVICE, token_fields(auth_req_id))
        for index in range(rounds):
            names = list(variants)[:: 1 if index % 2 == 0 else -1]
            for name in names:
                middleware = variants[name]
                ready = [token_fields(auth_req_id) for auth_req_id in _authorized(middleware, calls)]
                call = middleware.api.call
                cpu, wall = time.process_time(), time.perf_counter()
                answers = [call("auth/token", SERVICE, fields)[1] for fields in ready]
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                failed = [answer.get("action") for answer in answers if answer.get("action") != "OK"]
                if failed:
                    raise RuntimeError(f"token exchanges answered {failed[:3]}")
                rates[name].append(calls / cpu)
                walls[name].append(calls / wall)
    finally:
        for middleware in variants.values():
            middleware.store.close()
    family = variants["sqlite"].api.family
    alg = family.key.alg if family is not None else "?"
    return [
        Row(
            SECTION,
            f"in process: auth/token exchange that succeeds, {name} / Keycloak's 120 grants/s per vCPU",
            median(rates[name]) / KEYCLOAK_PER_VCPU,
            "x",
            baseline=f"{median(rates[name]):,.0f} calls per CPU second ({median(walls[name]):,.0f}/s wall)",
            target=EXCHANGE_TARGET,
            spread=spread([rate / KEYCLOAK_PER_VCPU for rate in rates[name]]),
            detail=f"one thread, {rounds} rounds of {calls} calls; the state swapped to used, an access token "
            f"stored, an ID token signed ({alg}), the audit line written to a file; "
            "Keycloak's figure is for client credentials grants",
        )
        for name in variants
    ]


# -- the section ----------------------------------------------------------------------------

ROWS = ("gunicorn", "polls", "exchange")


def all_rows(profile: Profile, stores: Sequence[StoreSpec], work_dir: Path, wanted: Sequence[str] = ROWS) -> list[Row]:
    rows: list[Row] = []
    if "gunicorn" in wanted:
        rows += token_poll_end_to_end(profile, work_dir)
    if "polls" in wanted:
        by_name = {spec.name: spec for spec in stores}
        for name in record_rows.STORES:
            spec = by_name.get(name) or StoreSpec(name, "", False, "not configured")
            rows.append(poll_flatness(spec, profile.records_large, profile.record_polls, work_dir))
    if "exchange" in wanted:
        rows += token_exchange(profile, work_dir)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.family", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke profile's sizes")
    parser.add_argument("--rows", default=",".join(ROWS), help="which rows (default: gunicorn,polls,exchange)")
    parser.add_argument("--stores", default=",".join(record_rows.STORES), help="the stores of the poll rows")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    run_id = new_run_id()
    work_dir = Path(tempfile.mkdtemp(prefix="ciba-bench-"))
    specs = store_specs(work_dir, run_id)
    wanted_stores = {name.strip() for name in args.stores.split(",")}
    try:
        rows = all_rows(
            profile,
            [spec for spec in specs if spec.name in wanted_stores],
            work_dir,
            [name.strip() for name in args.rows.split(",")],
        )
    finally:
        for spec in specs:
            cleanup(spec, run_id)
        shutil.rmtree(work_dir, ignore_errors=True)
    from .stats import table

    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
