"""example_app: a demo CIBA authorization server on Flask, failing requests through ciba-middleware.

    python -m example_app            # http://127.0.0.1:8080, tickets in ./ciba-tickets.sqlite3

Its ``POST /backchannel/authentication`` reaches each of the fail API's nine reasons by a
real rule (``docs/example-app.md``); ``GET /`` lists the demo clients, users and sample
hint tokens.
"""

from __future__ import annotations

from .app import DEMO_SERVICE_ID, create_app

__all__ = ["DEMO_SERVICE_ID", "create_app"]
