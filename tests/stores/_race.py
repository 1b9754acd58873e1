"""Work for the processes the race tests start (spawned, so it must be importable)."""

from __future__ import annotations

import os
from typing import Any

from ciba_middleware.stores import store_from_url


def delete_each(url: str, service: str, tickets: list[str], barrier: Any, results: Any) -> None:
    """Open the store, then delete every ticket, all processes in step, one barrier per ticket."""
    store = store_from_url(url)
    try:
        barrier.wait(30)
        for ticket in tickets:
            barrier.wait(30)
            results.put((ticket, store.delete(service, ticket)))
    finally:
        store.close()


def open_store(url: str, barrier: Any, results: Any) -> None:
    """Open the store (creating its schema) at the same moment as the other processes."""
    barrier.wait(30)
    try:
        store = store_from_url(url)
        store.ping()
        store.close()
    except Exception as exc:
        results.put(repr(exc))
    else:
        results.put("ok")


def attempt(store: Any, operation: str, service: str, key: str, mine: bytes) -> bool:
    """One racer's try at the record ``key``, which holds ``pending`` unless ``operation``
    is ``add``: whether this call won it."""
    if operation == "add":
        return bool(store.add(service, key, mine, 60))
    if operation == "swap":
        return bool(store.swap(service, key, b"pending", mine))
    if operation == "swap-ttl":
        return bool(store.swap(service, key, b"pending", mine, ttl=60))
    if operation == "take":
        return store.take(service, key) == b"pending"
    raise AssertionError(operation)


def count_up(store: Any, service: str, key: str, times: int) -> int:
    """Add 1 to the number in the record ``times`` times by compare-and-swap, reading again
    after each lost race; how many swaps it took."""
    done = tries = 0
    while done < times:
        current = store.get(service, key)
        tries += 1
        if store.swap(service, key, current, b"%d" % (int(current) + 1)):
            done += 1
    return tries


def race_records(url: str, service: str, keys: list[str], operation: str, barrier: Any, results: Any) -> None:
    """Open the store, then try every record, all processes in step, one barrier per key;
    put the (key, won) pairs, or the error as text."""
    try:
        store = store_from_url(url)
        try:
            barrier.wait(30)
            mine = b"process-%d" % os.getpid()
            outcomes = []
            for key in keys:
                barrier.wait(30)
                outcomes.append((key, attempt(store, operation, service, key, mine)))
        finally:
            store.close()
    except BaseException as exc:
        barrier.abort()
        results.put(repr(exc))
        raise
    results.put(outcomes)


def count_up_in_process(url: str, service: str, key: str, times: int, barrier: Any, results: Any) -> None:
    """:func:`count_up` in a process of its own, started with the others."""
    try:
        store = store_from_url(url)
        try:
            barrier.wait(30)
            tries = count_up(store, service, key, times)
        finally:
            store.close()
    except BaseException as exc:
        barrier.abort()
        results.put(repr(exc))
        raise
    results.put([tries])
