"""Does checking a credential take the same time for a wrong secret and a near miss?

A measurement for docs/reliability.md, not a test. For each check (a bearer token, an API
v2 secret, and the whole middleware call for each), four kinds of guess are timed:

``right``       the configured secret
``wrong``       a random secret of the same length
``near_last``   the secret with its last character changed
``near_first``  the secret with its first character changed

Method: one *sample* is the mean time of a block of ``--block`` calls with the same guess,
timed with ``time.perf_counter_ns``; the blocks of all kinds are interleaved in a fresh
random order in each round, so drift (frequency scaling, other processes) hits every
kind alike. ``--samples`` samples per kind. For each pair (wrong, near_last) and
(wrong, near_first) we report the medians and a two-sided Mann-Whitney U test (normal
approximation, ties averaged); a p-value above 0.01 means no difference was detected.

A positive control makes sure the method can see a leak at all: a comparison that stops
at the first differing character (a Python loop over 64 characters) is timed the same
way, and must show a significant difference.

    python benchmarks/hardening/timing.py [--samples 2000] [--block 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import json
import math
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier
from ciba_middleware.stores.memory import MemoryTicketStore

SERVICE = "715948317"
TOKEN = secrets.token_urlsafe(48)  # 64 characters
API_SECRET = secrets.token_urlsafe(48)


def _guesses(secret: str) -> dict[str, str]:
    def flip(c: str) -> str:
        return "A" if c != "A" else "B"

    return {
        "right": secret,
        "wrong": secrets.token_urlsafe(48)[: len(secret)],
        "near_last": secret[:-1] + flip(secret[-1]),
        "near_first": flip(secret[0]) + secret[1:],
    }


def _leaky_equal(a: str, b: str) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y for x, y in zip(a, b, strict=True))  # stops at the first difference


def _discard(data: bytes) -> object:
    return None


def _wsgi_call(middleware: BackchannelFailMiddleware, path: str, authorization: str) -> Callable[[], object]:
    body = b'{"reason":"ACCESS_DENIED"}'

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
        return _discard

    def call() -> object:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": authorization,
            "wsgi.input": io.BytesIO(body),
        }
        return middleware(environ, start_response)

    return call


def checks() -> dict[str, dict[str, Callable[[], object]]]:
    verifier = StaticTokenVerifier(
        [
            {"service": SERVICE, "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()},
            {"service": SERVICE, "api_secret_sha256": hashlib.sha256(API_SECRET.encode()).hexdigest()},
        ]
    )
    middleware = BackchannelFailMiddleware(lambda e, s: [b""], store=MemoryTicketStore(), verifier=verifier)
    tokens, api_secrets, control = _guesses(TOKEN), _guesses(API_SECRET), _guesses(TOKEN)
    v3 = f"/api/{SERVICE}/backchannel/authentication/fail"
    v2 = "/api/backchannel/authentication/fail"

    def basic(secret: str) -> str:
        return "Basic " + base64.b64encode(f"{SERVICE}:{secret}".encode()).decode()

    return {
        "verify_bearer": {k: functools.partial(verifier.verify_bearer, g) for k, g in tokens.items()},
        "verify_api_key": {k: functools.partial(verifier.verify_api_key, SERVICE, g) for k, g in api_secrets.items()},
        "middleware_v3": {k: _wsgi_call(middleware, v3, f"Bearer {g}") for k, g in tokens.items()},
        "middleware_v2": {k: _wsgi_call(middleware, v2, basic(g)) for k, g in api_secrets.items()},
        "control_leaky_loop": {k: functools.partial(_leaky_equal, TOKEN, g) for k, g in control.items()},
    }


def measure(kinds: dict[str, Callable[[], object]], samples: int, block: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for fn in kinds.values():  # warm up
        for _ in range(block):
            fn()
    clock = time.perf_counter_ns
    for _ in range(samples):
        random.shuffle(order)
        for kind in order:
            fn = kinds[kind]
            started = clock()
            for _ in range(block):
                fn()
            results[kind].append((clock() - started) / block)
    return results


def mann_whitney(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U: (U of a, p-value), normal approximation with tie correction."""
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = rank
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u1 - n1 * n2 / 2) / sigma if sigma else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return u1, p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="samples per kind of guess (default 2000)")
    parser.add_argument("--block", type=int, default=200, help="calls per sample (default 200)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    random.seed(20261127)
    report: dict[str, Any] = {"samples": args.samples, "block": args.block, "python": sys.version.split()[0]}
    leaks = []
    for name, kinds in checks().items():
        started = time.monotonic()
        results = measure(kinds, args.samples, args.block)
        medians = {kind: round(statistics.median(values), 1) for kind, values in results.items()}
        row: dict[str, Any] = {"median_ns": medians, "seconds": round(time.monotonic() - started, 1)}
        for near in ("near_last", "near_first"):
            _, p = mann_whitney(results["wrong"], results[near])
            row[f"p_wrong_vs_{near}"] = float(f"{p:.3g}")
            row[f"diff_ns_wrong_vs_{near}"] = round(medians[near] - medians["wrong"], 1)
        report[name] = row
        print(
            f"{name:20} median ns {medians}  p(wrong~near_last)={row['p_wrong_vs_near_last']:.3g}  "
            f"p(wrong~near_first)={row['p_wrong_vs_near_first']:.3g}  ({row['seconds']} s)"
        )
        significant = row["p_wrong_vs_near_last"] < 0.01 or row["p_wrong_vs_near_first"] < 0.01
        if name.startswith("control"):
            if not significant:
                print("  the positive control showed no difference: the method is not sensitive enough here")
                leaks.append(name)
        elif significant:
            leaks.append(name)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    print(
        "leaks detected in:" if leaks else "no timing difference detected between a wrong secret and a near miss",
        ", ".join(leaks),
    )
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
