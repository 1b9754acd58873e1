"""``python -m ciba_middleware``: the ``ciba-middleware`` command (:mod:`ciba_middleware.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
