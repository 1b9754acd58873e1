"""Load generators: wrk (Debian's ``wrk``) for throughput, a Python open-loop client for
latency at a fixed offered load, and a Python closed-loop client when wrk is missing."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).with_name("wrk_requests.lua")


@dataclass
class Throughput:
    requests_per_s: float
    requests: int
    bad: int  # non-2xx answers and socket errors
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")


@dataclass
class Latency:
    offered_per_s: float
    achieved_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int


@dataclass
class Target:
    """What to send: a path, and for POST a file of bodies (one per line) and a token."""

    url: str
    path: str
    bodies_file: Path | None = None
    token: str | None = None
    offset: int = 0


def have_wrk() -> bool:
    """wrk is on the PATH, and BENCH_NO_WRK does not ask for the Python client."""
    return shutil.which("wrk") is not None and not os.environ.get("BENCH_NO_WRK")


def run_wrk(target: Target, *, seconds: float, connections: int, threads: int = 1) -> Throughput:
    env = {**os.environ, "BENCH_OFFSET": str(target.offset)}
    if target.bodies_file is not None:
        env["BENCH_BODIES"] = str(target.bodies_file)
        env["BENCH_TOKEN"] = target.token or ""
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        target.url + target.path,
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return _parse_wrk(out)


def _parse_wrk(out: str) -> Throughput:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    bad = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        bad += int(non2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        # read errors are the server closing the connection after each answer (sync workers)
        bad += int(errors.group(1)) + int(errors.group(3)) + int(errors.group(4))

    def percentile(name: str) -> float:
        match = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return Throughput(float(rate.group(1)), int(total.group(1)), bad, percentile("50"), percentile("99"))


# -- Python clients -----------------------------------------------------------------------


def _requests(target: Target) -> list[bytes]:
    host = urlsplit(target.url).netloc
    if target.bodies_file is None:
        return [f"GET {target.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()]
    out = []
    for line in target.bodies_file.read_text().splitlines():
        body = line.encode()
        head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Authorization: Bearer {target.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _send(host: str, port: int, request: bytes) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        data = await reader.read()  # the sync worker closes the connection after answering
    finally:
        writer.close()
    return data[9:10] == b"2"


def fixed_rate(target: Target, *, rate: float, seconds: float, timeout: float = 10.0) -> Latency:
    """Open loop: send at ``rate`` per second whatever the answers do, so a slow server
    shows as latency (measured from when each request was due, not when it went out)."""
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = _requests(target)
    total = max(1, int(rate * seconds))

    async def main() -> tuple[list[float], int, float]:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        bad = 0

        async def one(index: int, due: float) -> None:
            nonlocal bad
            try:
                ok = await asyncio.wait_for(
                    _send(host, port, requests[(target.offset + index) % len(requests)]), timeout
                )
            except (TimeoutError, OSError):
                ok = False
            if ok:
                latencies.append(loop.time() - due)
            else:
                bad += 1

        start = loop.time() + 0.05
        tasks = []
        for index in range(total):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
        return latencies, bad, loop.time() - start

    latencies, bad, elapsed = asyncio.run(main())
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return Latency(rate, len(latencies) / elapsed, pct(0.50), pct(0.99), total, bad)


def closed_loop(target: Target, *, seconds: float, connections: int) -> Throughput:
    """The fallback when wrk is missing: ``connections`` clients back to back. Python is
    slower than wrk, so on a small machine the client may bound the figure."""
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = _requests(target)

    async def main() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        done = bad = 0

        async def client(start: int) -> None:
            nonlocal done, bad
            index = start
            while loop.time() < end:
                try:
                    ok = await _send(host, port, requests[(target.offset + index) % len(requests)])
                except OSError:
                    ok = False
                done += ok
                bad += not ok
                index += connections

        began = loop.time()
        await asyncio.gather(*(client(i) for i in range(connections)))
        return done, bad, loop.time() - began

    done, bad, elapsed = asyncio.run(main())
    return Throughput(done / elapsed, done, bad)


def throughput(target: Target, *, seconds: float, connections: int) -> Throughput:
    if have_wrk():
        return run_wrk(target, seconds=seconds, connections=connections)
    return closed_loop(target, seconds=seconds, connections=connections)


def warm(target: Target, count: int = 50) -> None:
    """A few requests, so every worker has imported and connected before it is timed."""
    closed = closed_loop(target, seconds=0.3, connections=2)
    del closed, count


def pause(seconds: float) -> None:
    time.sleep(seconds)


def check_answers(target: Target, expected_status: Sequence[int] = (200,)) -> None:
    """Send one request and make sure it is answered as expected (no benchmarking of 401s)."""
    parts = urlsplit(target.url)

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(_requests(target)[0])
        data = await reader.read()
        writer.close()
        return data

    data = asyncio.run(main())
    status = int(data[9:12] or b"0")
    if status not in expected_status:
        raise RuntimeError(f"{target.url}{target.path} answered {status}, not {expected_status}:\n{data[:600]!r}")
