"""``ciba_middleware.wsgi:application``: the fail API alone, configured from ``CIBA_*``.

    gunicorn ciba_middleware.wsgi:application

Every other path gets a JSON 404. A configuration error at the server's first start stops
it with one line naming the variable, not a traceback. A process started later (a gunicorn
worker replacing another, after a SIGHUP or a crash) never stops the server: it serves,
with the fail API answering 500 until the configuration is fixed
(:func:`ciba_middleware.grants.first_start`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .config import degraded, from_env
from .errors import ConfigurationError, StoreError
from .grants import first_start
from .response import not_found_app

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

# gunicorn's exit status for "a worker failed to boot": the master then stops instead of
# respawning workers that would fail the same way.
_BOOT_ERROR = 3


def _load() -> WSGIApplication:
    try:
        return from_env()
    except (ConfigurationError, StoreError) as exc:
        if not first_start():
            return degraded(not_found_app, str(exc))
        print(f"ciba-middleware: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(_BOOT_ERROR) from None


application = _load()
