"""The Django app of the integration: ``"ciba_middleware.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class CibaMiddlewareConfig(AppConfig):
    """Registers the system checks and the ``ciba`` management command."""

    name = "ciba_middleware.django"
    label = "ciba_middleware"
    verbose_name = "CIBA fail API"

    def ready(self) -> None:
        from . import checks  # noqa: F401 (registers the checks)
