"""``ciba_middleware.wsgi:application``: the fail API alone, configured from ``CIBA_*``.

    gunicorn ciba_middleware.wsgi:application

Every other path gets a JSON 404. A configuration error stops the server at start-up with
one line naming the variable, not a traceback.
"""

from __future__ import annotations

import sys

from .config import from_env
from .errors import ConfigurationError

# gunicorn's exit status for "a worker failed to boot": the master then stops instead of
# respawning workers that would fail the same way.
_BOOT_ERROR = 3

try:
    application = from_env()
except ConfigurationError as exc:
    print(f"ciba-middleware: configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(_BOOT_ERROR) from None
