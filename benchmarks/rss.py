"""``python -m benchmarks.rss STORE_URL COUNT``: RSS before and after COUNT fail calls.

Run in a process of its own by section 4, so nothing else it did counts. One call in ten
names a ticket issued just before (it is deleted), the others a well-formed unknown one:
the store is left as it was found, and any growth is the middleware's or the client's.
"""

from __future__ import annotations

import json
import sys
import time

from ciba_middleware.stores import new_ticket, store_from_url

from . import apps
from .servers import rss_kib
from .workload import Calls, bodies

_BATCH = 1000


def main(url: str, count: int) -> None:
    store = store_from_url(url)
    app = apps.fail_api(store)
    warmup = max(_BATCH, count // 10)

    def batch(size: int) -> None:
        tickets = [store.issue(apps.SERVICE, ttl=1) if i % 10 == 0 else new_ticket() for i in range(size)]
        Calls.fail(bodies(tickets)).run(app, size)

    for _ in range(0, warmup, _BATCH):
        batch(_BATCH)
    import os

    pid = os.getpid()
    before = rss_kib(pid)
    started = time.perf_counter()
    for done in range(0, count, _BATCH):
        batch(min(_BATCH, count - done))
    seconds = time.perf_counter() - started
    after = rss_kib(pid)
    store.close()
    print(json.dumps({"before_kib": before, "after_kib": after, "warmup": warmup, "seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
