"""Work for the processes the race tests start (spawned, so it must be importable)."""

from __future__ import annotations

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
