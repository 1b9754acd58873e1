"""Flask integration: the :class:`CibaMiddleware` extension, and :class:`BackchannelFail` for its views.

The only module of the package that imports Flask (``pip install ciba-middleware[flask]``).

::

    from flask import Flask
    from ciba_middleware import Reason
    from ciba_middleware.flask import BackchannelFail, CibaMiddleware

    app = Flask(__name__)
    app.config.from_prefixed_env()          # FLASK_CIBA_TOKENS='[...]' -> CIBA_TOKENS
    ciba = CibaMiddleware(app)

    @app.post("/backchannel/authentication")
    def backchannel_authentication():
        ticket = ciba.issue_ticket()
        ...
        raise BackchannelFail(Reason.UNKNOWN_USER_ID, ticket=ticket)

The extension reads the ``CIBA_*`` keys of ``app.config``: the variables of
:data:`ciba_middleware.config.VARIABLES`, every one of them (a ``CIBA_*`` key that is not one
is an error at ``init_app``, never silently ignored). Two concern the views:

``CIBA_SERVICE_ID``
    The service whose tickets this app issues and fails in process. May be left out when
    the grants cover exactly one service. A number (as ``from_prefixed_env`` leaves
    ``FLASK_CIBA_SERVICE_ID=715948317``) is taken as its digits.
``CIBA_SERVER_ERROR_STATUS``
    The status the client gets for ``server_error`` (default 500; Authlete notes that many
    deployments prefer another one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from flask import Flask, Response, current_app

from .adapter import BackchannelFail
from .config import Settings, unknown_variables
from .errors import ConfigurationError
from .events import Observer
from .middleware import BackchannelFailMiddleware
from .reasons import Reason
from .response import FailResponse
from .stores.base import TicketStore

__all__ = ["EXTENSION_KEY", "BackchannelFail", "CibaMiddleware", "CibaState", "FlaskExtension"]

#: Where the extension keeps its state: ``app.extensions[EXTENSION_KEY]``.
EXTENSION_KEY = "ciba_middleware"


@dataclass(frozen=True)
class CibaState:
    """What :meth:`CibaMiddleware.init_app` keeps in ``app.extensions["ciba_middleware"]``."""

    middleware: BackchannelFailMiddleware
    settings: Settings
    service_id: str
    server_error_status: int

    @property
    def store(self) -> TicketStore:
        return self.middleware.store


class CibaMiddleware:
    """Serve the fail API in a Flask app and fail requests from its views.

    ``init_app`` reads ``CIBA_*`` from ``app.config`` (see the module docstring), wraps
    ``app.wsgi_app`` in :class:`ciba_middleware.BackchannelFailMiddleware`, and registers
    the error handler for :class:`BackchannelFail`. Configuration errors raise
    :class:`ciba_middleware.ConfigurationError` there, at start-up.

    One instance may serve several apps (the application factory pattern): its methods
    act on ``current_app``::

        ciba = CibaMiddleware()

        def create_app():
            app = Flask(__name__)
            app.config.from_prefixed_env()
            ciba.init_app(app)
            return app

    :param app: the app, or None to call :meth:`init_app` later.
    :param observers: passed to the middleware: callables given each
        :class:`ciba_middleware.FailEvent`, for metrics and audit logs.
    """

    def __init__(self, app: Flask | None = None, *, observers: Sequence[Observer] = ()) -> None:
        self.observers = tuple(observers)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("CibaMiddleware is already initialised on this app")
        unknown = unknown_variables(app.config)
        if unknown:
            raise ConfigurationError(f"app.config has CIBA_* keys that are not settings: {', '.join(unknown)}")
        settings = Settings.from_mapping(app.config)
        # The views' service is settled before the store is opened (views=True).
        middleware = settings.build_middleware(app.wsgi_app, observers=self.observers, views=True)
        try:
            app.register_error_handler(BackchannelFail, _handle_backchannel_fail)
        except BaseException:
            middleware.store.close()
            raise
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = CibaState(
            middleware=middleware,
            settings=settings,
            service_id=middleware.service_id,
            server_error_status=middleware.server_error_status,
        )

    @staticmethod
    def state(app: Flask | None = None) -> CibaState:
        """The state of ``app`` (default: ``current_app``)."""
        target = app if app is not None else current_app
        try:
            state: CibaState = target.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError("CibaMiddleware is not initialised on this app: call init_app(app)") from None
        return state

    def issue_ticket(self, ttl: float | None = None) -> str:
        """A new ticket for this app's service, living ``ttl`` seconds (``CIBA_TICKET_TTL`` by default).

        Issue it when a backchannel authentication request arrives; pass it to
        :class:`BackchannelFail` when the request is rejected. Raises
        :class:`ciba_middleware.StoreError` when the store fails.
        """
        state = self.state()
        return state.store.issue(state.service_id, ttl)

    def fail(
        self,
        reason: Reason | str | Enum,
        ticket: str | None = None,
        description: str | None = None,
        uri: str | None = None,
    ) -> FailResponse:
        """Fail in process and return the API's answer, for views that build their own response."""
        state = self.state()
        return state.middleware.fail(state.service_id, ticket, reason, description, uri)


def _handle_backchannel_fail(error: BackchannelFail) -> Response:
    answer = CibaMiddleware.state().middleware.view_failed(error)
    return Response(answer.body, status=answer.status, headers=answer.headers)


#: The Flask extension by what it is, beside the Django middleware
#: (:class:`ciba_middleware.django.CibaMiddleware`).
FlaskExtension = CibaMiddleware
