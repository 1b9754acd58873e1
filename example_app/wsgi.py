"""``example_app.wsgi:app``: the demo for gunicorn, configured from the environment.

    CIBA_TOKENS='[...]' CIBA_DEMO_HINT_KEY=... CIBA_SIGNING_KEY_FILE=key.jwk gunicorn --threads 4 example_app.wsgi:app

With several processes set ``CIBA_TOKENS``, ``CIBA_DEMO_HINT_KEY`` and
``CIBA_SIGNING_KEY_FILE``: what the demo generates when they are missing differs from one
process to the next. The devices' inbox is shared through ``CIBA_DEMO_DATABASE``.
"""

from __future__ import annotations

import logging

from .app import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

app = create_app()
