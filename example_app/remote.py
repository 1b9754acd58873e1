"""Failing requests over HTTP with the ``authlete`` client, as an app built on Authlete's service does.

With ``CIBA_DEMO_FAIL_VIA=http`` the demo's endpoints fail tickets with :meth:`RemoteFail.fail`
instead of in process (:class:`~ciba_middleware.ciba.endpoints.CibaEndpoints`' ``fail``): it calls the
fail API through authlete-python's ``AuthleteApiImpl`` (API v3, a Service Access Token) at
``CIBA_DEMO_API_BASE_URL``: this same server, whose middleware answers the call. Pointing
that URL at Authlete's own service instead is the only change an Authlete user makes.
"""

from __future__ import annotations

import logging
from typing import Any

from ciba_middleware import ConfigurationError, Reason
from ciba_middleware.stores import ticket_hash

__all__ = ["RemoteFail"]

log = logging.getLogger(__name__)

_SERVER_ERROR = {"action": "INTERNAL_SERVER_ERROR", "responseContent": '{"error":"server_error"}'}


class RemoteFail:
    """Fails tickets by calling the fail API over HTTP.

    :param base_url: where the fail API is served, prefix included
        (``http://127.0.0.1:8080`` or ``http://127.0.0.1:8080/authlete``).
    :param service_id: the service (``serviceApiKey``); the v3 URL is ``/api/{service_id}/...``.
    :param access_token: a Service Access Token of that service.
    :param timeout: seconds to wait for the answer. authlete-python waits forever by default,
        which would hold the client's request open if the API hung.
    """

    def __init__(self, base_url: str, service_id: str, access_token: str, *, timeout: float = 10.0) -> None:
        try:
            from authlete.api.authlete_api_impl import AuthleteApiImpl
            from authlete.conf.authlete_configuration import AuthleteConfiguration
        except ImportError:
            raise ConfigurationError(
                "CIBA_DEMO_FAIL_VIA=http needs the authlete client: pip install 'ciba-middleware[demo]'"
            ) from None
        configuration = AuthleteConfiguration(
            {
                "apiVersion": "V3",
                "baseUrl": base_url,
                "serviceApiKey": service_id,
                "serviceAccessToken": access_token,
            }
        )
        self.api: Any = AuthleteApiImpl(configuration)
        settings = self.api.getSettings()
        settings.connectionTimeout = min(timeout, 5.0)
        settings.readTimeout = timeout

    def fail(self, ticket: str, reason: Reason, description: str | None) -> object:
        """Fail ``ticket`` over HTTP: the API's answer (authlete-python's response), or a
        server_error answer when the call fails. For :class:`CibaEndpoints`'s ``fail``."""
        from authlete.api.authlete_api_exception import AuthleteApiException
        from authlete.dto.backchannel_authentication_fail_reason import BackchannelAuthenticationFailReason
        from authlete.dto.backchannel_authentication_fail_request import BackchannelAuthenticationFailRequest

        request = BackchannelAuthenticationFailRequest(
            {
                "ticket": ticket,
                "reason": BackchannelAuthenticationFailReason[reason.name],
                "errorDescription": description,
            }
        )
        try:
            answer: object = self.api.backchannelAuthenticationFail(request)
        except AuthleteApiException as exc:
            # The message is the API's resultMessage or the transport error: no token in it.
            log.error("fail API call over HTTP failed (ticket %s): %s", ticket_hash(ticket), exc.message)
            return _SERVER_ERROR
        except Exception:
            # authlete-python raises a bare KeyError on an unknown action, for instance.
            log.exception("unexpected answer from the fail API (ticket %s)", ticket_hash(ticket))
            return _SERVER_ERROR
        return answer
