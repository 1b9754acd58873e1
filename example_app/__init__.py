"""example_app: a demo CIBA authorization server on Flask, failing requests through ciba-middleware.

    python -m example_app            # http://127.0.0.1:8080, tickets in ./ciba-tickets.sqlite3

Its ``POST /backchannel/authentication`` reaches each of the fail API's nine reasons by a
real rule (``docs/example-app.md``); ``GET /`` lists the demo clients, users and sample
hint tokens.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_SERVICE_ID", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``python -m example_app`` reaches its own start-up
    # checks (a missing joserfc is one line there, not a traceback from this import).
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
