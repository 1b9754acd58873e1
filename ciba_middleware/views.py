"""The old home of :class:`BackchannelFail` and its settings, kept importable.

They live in :mod:`ciba_middleware.adapter` now, beside the base that answers them: this
module never held views.
"""

from __future__ import annotations

from .adapter import BackchannelFail, server_error_status, view_service

__all__ = ["BackchannelFail", "server_error_status", "view_service"]
