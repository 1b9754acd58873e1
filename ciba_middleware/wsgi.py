"""``ciba_middleware.wsgi:application``: the fail API alone, configured from ``CIBA_*``.

    gunicorn ciba_middleware.wsgi:application

Every other path gets a JSON 404. Configuration errors stop the server at start-up.
"""

from __future__ import annotations

from .config import from_env

application = from_env()
