"""System checks: ``manage.py check`` (and ``runserver``, ``migrate``) report a bad configuration.

Everything the fail API will be built from is checked, naming the key at fault, except
reaching the store: ``manage.py ciba check`` does that too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register

from ..adapter import view_service
from ..config import Settings
from ..errors import ConfigurationError
from ..stores import SCHEMES
from . import KEYS, SETTING, configuration, named

__all__ = ["check_configuration"]


@register()
def check_configuration(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``ciba_middleware.E001``: the fail API cannot be built from the configuration (the message names
    the key); E002: ``CIBA_MIDDLEWARE`` has keys that are not settings; W002: nothing is configured."""
    messages: list[CheckMessage] = []
    given = getattr(django_settings, SETTING, None) or {}
    if isinstance(given, Mapping):
        unknown = sorted(str(key) for key in given if key not in KEYS)
        if unknown:
            return [
                Error(
                    f"{SETTING} has keys that are not settings: {', '.join(unknown)}",
                    hint=f"known keys (the CIBA_* variables without their prefix): {', '.join(KEYS)}",
                    id="ciba_middleware.E002",
                )
            ]
    try:
        values, from_env = configuration()
    except ConfigurationError as exc:
        return [Error(str(exc), id="ciba_middleware.E001")]
    if not values:
        # A project (or a build step: collectstatic, migrate) that does not serve the fail
        # API here: not an error, but the API would answer 500.
        messages.append(
            Warning(
                f"the fail API is not configured: neither {SETTING} nor CIBA_* variables are set, "
                "so it answers 500 and views cannot fail requests",
                hint=f'set {SETTING} = {{"TOKENS": [...], ...}} or CIBA_TOKENS',
                id="ciba_middleware.W002",
            )
        )
        return messages
    try:
        settings = Settings.from_mapping(values)
        scheme = urlsplit(settings.store_url).scheme.lower()
        if scheme not in SCHEMES:
            shown = f"{scheme}://" if scheme else repr(settings.store_url)
            raise ConfigurationError(f"CIBA_STORE_URL: unknown ticket store URL scheme {shown}")
        verifier = settings.build_verifier()
        view_service(settings.service_id or None, verifier)
    except ConfigurationError as exc:
        hint = f"a key left out of {SETTING} is read from the environment as CIBA_<KEY>"
        messages.append(Error(named(str(exc), from_env), hint=hint, id="ciba_middleware.E001"))
    return messages
