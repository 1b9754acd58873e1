"""The soak: the fail API under gunicorn with the Redis store, at half its measured capacity.

    python -m benchmarks.hardening.soak [--duration 300] [--fraction 0.5] [--json out.json]

1. Start gunicorn (``--workers`` sync workers, 2 by default: one per core) serving
   ``ciba_middleware.wsgi:application`` on ``--store-url`` (Redis DB 15 of 127.0.0.1 by
   default) under a key prefix of its own, removed at the end.
2. Capacity: wrk, no pause between requests, ``--capacity-connections`` connections for
   ``--capacity-seconds``; every request carries a random well-formed ticket, so every
   request costs a Redis round trip.
3. Issue the tickets the soak will fail (one request in four carries a real one).
4. Soak: wrk for ``--duration`` seconds at ``--fraction`` of that capacity (each connection
   pauses between requests; the pause is calibrated in two 5-second trials). Every answer must
   be exactly the expected 200 body. The RSS of each worker is read from /proc every
   ``--sample-every`` seconds.
5. Check: no error of any kind (socket errors, non-200, a body that differs), every real
   ticket sent is gone from Redis and every one not sent is still there, no traceback or
   worker timeout in gunicorn's log, and flat memory: after the first fifth of the run, no
   worker's RSS grew by more than ``--max-growth-mib``.

Exit status 0 when every check holds. ``tests/hardening/test_soak.py`` runs a 10-second
version in CI with a Python load generator (:func:`python_load`), at a fixed low rate.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import servers

LUA = Path(__file__).with_name("soak.lua")

SERVICE = "715948317"
# A token for the soak only: the server is given its SHA-256, as in production.
TOKEN = "soak-token-" + uuid.uuid4().hex
EXPECTED = (
    '{"resultCode":"A185001","resultMessage":"[A185001] Successfully generated an error response for the '
    'backchannel authentication request.","action":"FORBIDDEN","responseContent":"{\\"error\\":\\"access_denied\\"}"}'
)
PATH = f"/api/{SERVICE}/backchannel/authentication/fail"


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Server:
    """gunicorn serving the fail API from CIBA_* variables (:class:`benchmarks.servers.Server`),
    its log kept in a directory of its own."""

    def __init__(self, store_url: str, workers: int = 2) -> None:
        self.store_url = store_url
        self.workers = workers
        grant = {"service": SERVICE, "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}
        env = {"CIBA_STORE_URL": store_url, "CIBA_TOKENS": json.dumps([grant])}
        self._gunicorn = servers.Server(
            "soak",
            workers=workers,
            env=env,
            log_dir=Path(tempfile.mkdtemp(prefix="soak-gunicorn-")),
            wsgi="ciba_middleware.wsgi:application",
        )
        self.url = self._gunicorn.url
        self.log_path = self._gunicorn.log_path
        try:
            self._gunicorn.wait()
            # The memory samples need every worker.
            deadline = time.monotonic() + 30
            while len(self.worker_pids()) < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn started {len(self.worker_pids())} of {workers} workers")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def worker_pids(self) -> list[int]:
        return self._gunicorn.worker_pids()

    def log(self) -> str:
        return self._gunicorn.log(tail=None)

    def stop(self) -> None:
        self._gunicorn.stop()


class MemorySampler:
    """Samples every worker's RSS (KiB) every ``every`` seconds in a thread."""

    def __init__(self, server: Server, every: float) -> None:
        self.server = server
        self.every = every
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss = {pid: kib for pid in self.server.worker_pids() if (kib := _rss_kib(pid)) is not None}
        self.samples.append((time.monotonic() - self.started, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def summary(self, warmup_fraction: float = 0.2) -> dict[str, Any]:
        end = self.samples[-1][0]
        steady = [(t, rss) for t, rss in self.samples if t >= end * warmup_fraction]
        pids = sorted(set(steady[0][1]) & set(steady[-1][1]))
        workers = {}
        for pid in pids:
            points = [(t, rss[pid]) for t, rss in steady if pid in rss]
            ts, values = [p[0] for p in points], [p[1] for p in points]
            slope = statistics.linear_regression(ts, values).slope * 60 if len(set(ts)) > 1 else 0.0
            workers[str(pid)] = {
                "rss_start_mib": round(self.samples[0][1].get(pid, values[0]) / 1024, 1),
                "rss_after_warmup_mib": round(values[0] / 1024, 1),
                "rss_end_mib": round(values[-1] / 1024, 1),
                "rss_max_mib": round(max(values) / 1024, 1),
                "growth_after_warmup_mib": round((values[-1] - values[0]) / 1024, 2),
                "slope_kib_per_min": round(slope, 1),
            }
        same_workers = set(self.samples[0][1]) == set(self.samples[-1][1])
        return {"samples": len(self.samples), "same_workers_throughout": same_workers, "workers": workers}


def _wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    delay_ms: float,
    tickets_file: str = "",
    real_every: int = 4,
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    env = {
        **os.environ,
        "SOAK_THREADS": str(threads),
        "SOAK_REAL_EVERY": str(real_every),
        "SOAK_DELAY_MS": f"{delay_ms:.3f}",
        "SOAK_EXPECTED": EXPECTED,
        "SOAK_PATH": PATH,
        "SOAK_TOKEN": TOKEN,
        "SOAK_TICKETS": tickets_file,
    }
    completed = subprocess.run(
        [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds:.0f}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA),
            url + PATH,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"^SOAK_RESULT (\{.*\})$", completed.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["rate"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    result["errors"] = sum(result[k] for k in result if k.startswith("errors_")) + result["bad"]
    return result


def python_load(
    url: str, *, seconds: float, rate: float, tickets: list[str], real_every: int = 4, threads: int = 4
) -> dict[str, Any]:
    """A slow but portable load generator with the same checks as soak.lua (for CI)."""
    import requests

    lock = threading.Lock()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    counts = {"ok": 0, "bad": 0, "real_tickets_sent": 0, "errors_socket": 0}
    queue = list(reversed(tickets))
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def worker(index: int) -> None:
        session = requests.Session()
        n = 0
        while True:
            due = started + (n * threads + index) / rate
            if due - started >= seconds:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            n += 1
            ticket = None
            if n % real_every == 0:
                with lock:
                    ticket = queue.pop() if queue else None
                    counts["real_tickets_sent"] += ticket is not None
            body = json.dumps(
                {"ticket": ticket or uuid.uuid4().hex + uuid.uuid4().hex[:11], "reason": "ACCESS_DENIED"},
                separators=(",", ":"),
            )
            sent = time.monotonic()
            try:
                response = session.post(url + PATH, data=body, headers=headers, timeout=5)
            except requests.RequestException:
                with lock:
                    counts["errors_socket"] += 1
                continue
            with lock:
                latencies.append(time.monotonic() - sent)
                statuses[str(response.status_code)] += 1
                counts["ok" if response.status_code == 200 and response.text == EXPECTED else "bad"] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    requests_done = sum(statuses.values()) + counts["errors_socket"]
    return {
        "requests": requests_done,
        "rate": round(requests_done / elapsed, 1),
        **counts,
        "errors": counts["bad"] + counts["errors_socket"],
        "statuses": dict(statuses),
        "latency_p50_us": round(latencies[len(latencies) // 2] * 1e6) if latencies else None,
        "latency_p99_us": round(latencies[int(len(latencies) * 0.99)] * 1e6) if latencies else None,
        "latency_max_us": round(latencies[-1] * 1e6) if latencies else None,
    }


@contextlib.contextmanager
def redis_store(base_url: str) -> Iterator[tuple[str, Any]]:
    """(store URL under a fresh key prefix, the store); the prefix's keys are removed after."""
    from ciba_middleware.stores.redis import RedisTicketStore

    prefix = f"ciba:soak:{uuid.uuid4().hex[:10]}:"
    url = f"{base_url}{'&' if '?' in base_url else '?'}key_prefix={prefix}"
    store = RedisTicketStore.from_url(url)
    try:
        yield url, store
    finally:
        client = store.client
        for batch in _batches(client.scan_iter(match=f"{prefix}*", count=1000), 1000):
            client.delete(*batch)
        store.close()


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def count_keys(store: Any) -> int:
    return sum(1 for _ in store.client.scan_iter(match=f"{store.key_prefix}*", count=1000))


def verdict(result: dict[str, Any], memory: dict[str, Any], log: str, max_growth_mib: float) -> list[str]:
    """Every check of the soak that failed, in words (empty: all passed)."""
    problems = []
    if result["errors"]:
        problems.append(f"{result['errors']} errors: {result}")
    if result["statuses"] != {"200": result["ok"]}:
        problems.append(f"statuses other than 200: {result['statuses']}")
    if result["tickets_left_expected"] != result["tickets_left"]:
        problems.append(f"{result['tickets_left']} tickets left in Redis, expected {result['tickets_left_expected']}")
    for pid, worker in memory["workers"].items():
        if worker["growth_after_warmup_mib"] > max_growth_mib:
            problems.append(f"worker {pid} grew {worker['growth_after_warmup_mib']} MiB after warm-up")
    if not memory["same_workers_throughout"]:
        problems.append("a worker was replaced during the soak")
    for needle in ("Traceback", "WORKER TIMEOUT", "ticket store failed"):
        if needle in log:
            problems.append(f"gunicorn's log has {needle!r}")
    return problems


def soak(
    *,
    duration: float,
    fraction: float | None,
    rate: float | None,
    store_url: str,
    workers: int,
    capacity_seconds: float,
    capacity_connections: int,
    connections: int,
    sample_every: float,
    loadgen: str,
    max_growth_mib: float,
) -> dict[str, Any]:
    """Run the whole soak; returns the figures and ``problems`` (empty when it passed)."""
    report: dict[str, Any] = {"duration_s": duration, "workers": workers, "cpus": os.cpu_count(), "loadgen": loadgen}
    with redis_store(store_url) as (url, store):
        server = Server(url, workers=workers)
        try:
            if rate is None:
                assert fraction is not None
                cap = _wrk(
                    server.url,
                    seconds=capacity_seconds,
                    connections=capacity_connections,
                    threads=2,
                    delay_ms=0,
                    real_every=10**9,
                )
                report["capacity"] = {
                    k: cap[k] for k in ("rate", "requests", "errors", "latency_p50_us", "latency_p99_us")
                }
                rate = cap["rate"] * fraction
                report["fraction"] = fraction
            report["target_rate"] = round(rate, 1)
            real_every = 4
            issued = [store.issue(SERVICE) for _ in range(math.ceil(rate * duration * 1.2 / real_every) + 100)]
            report["tickets_issued"] = len(issued)
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as tickets_file:
                tickets_file.write("\n".join(issued) + "\n")
            try:
                if loadgen == "wrk":
                    # Each connection sends, waits for the answer, then pauses: rate = C / (pause +
                    # latency). Two 5-second trials estimate the latency at about that rate.
                    delay = connections * 1000 / rate
                    for _ in range(2):
                        trial = _wrk(
                            server.url, seconds=5, connections=connections, threads=2, delay_ms=delay, real_every=10**9
                        )
                        latency_ms = max(0.0, connections * 1000 / trial["rate"] - delay)
                        delay = max(0.0, connections * 1000 / rate - latency_ms)
                    report["pause_ms_per_connection"] = round(delay, 2)
                    with MemorySampler(server, sample_every) as sampler:
                        result = _wrk(
                            server.url,
                            seconds=duration,
                            connections=connections,
                            threads=2,
                            delay_ms=delay,
                            tickets_file=tickets_file.name,
                            real_every=real_every,
                        )
                else:
                    with MemorySampler(server, sample_every) as sampler:
                        result = python_load(
                            server.url, seconds=duration, rate=rate, tickets=issued, real_every=real_every
                        )
            finally:
                os.unlink(tickets_file.name)
            result["tickets_left"] = count_keys(store)
            result["tickets_left_expected"] = len(issued) - result["real_tickets_sent"]
            memory = sampler.summary()
            log = server.log()
        finally:
            server.stop()
    report["result"] = result
    report["memory"] = memory
    report["problems"] = verdict(result, memory, log, max_growth_mib)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of soak (default 300)")
    parser.add_argument("--fraction", type=float, default=0.5, help="of the measured capacity (default 0.5)")
    parser.add_argument("--rate", type=float, help="requests per second instead of a fraction of the capacity")
    parser.add_argument("--store-url", default=os.environ.get("CIBA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity-seconds", type=float, default=15)
    parser.add_argument("--capacity-connections", type=int, default=16)
    parser.add_argument("--connections", type=int, default=8, help="wrk connections during the soak")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--loadgen", choices=["wrk", "python"], default="wrk")
    parser.add_argument("--max-growth-mib", type=float, default=4.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    report = soak(
        duration=args.duration,
        fraction=None if args.rate else args.fraction,
        rate=args.rate,
        store_url=args.store_url,
        workers=args.workers,
        capacity_seconds=args.capacity_seconds,
        capacity_connections=args.capacity_connections,
        connections=args.connections,
        sample_every=args.sample_every,
        loadgen=args.loadgen,
        max_growth_mib=args.max_growth_mib,
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
