"""An endpoint of :class:`~ciba_middleware.ciba.endpoints.CibaEndpoints` as a framework's view.

One small function per framework, each importing its framework only when called: it reads
the ``Authorization`` and ``Content-Type`` headers and the body into an
:class:`~ciba_middleware.ciba.endpoints.EndpointRequest` and writes the
:class:`~ciba_middleware.ciba.endpoints.ClientResponse` back. Route them for ``POST``::

    # Flask
    app.add_url_rule("/token", view_func=flask_view(endpoints.token), methods=["POST"])
    # Django (urls.py)
    path("token", django_view(endpoints.token))
    # Starlette / FastAPI
    app.add_route("/token", starlette_endpoint(endpoints.token), methods=["POST"])
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .endpoints import ClientResponse, EndpointRequest

__all__ = ["Endpoint", "django_view", "flask_view", "starlette_endpoint"]

Endpoint = Callable[[EndpointRequest], ClientResponse]


def flask_view(endpoint: Endpoint, name: str | None = None) -> Callable[[], Any]:
    """A Flask view function answering with ``endpoint`` (named ``name``, default the endpoint's)."""
    from flask import Response, request

    def view() -> Response:
        answer = endpoint(
            EndpointRequest(
                request.headers.get("Authorization", ""),
                request.headers.get("Content-Type", ""),
                request.get_data(cache=False),
            )
        )
        return Response(answer.body, status=answer.status, headers=answer.headers)

    view.__name__ = name or f"ciba_{getattr(endpoint, '__name__', 'endpoint')}"
    return view


def django_view(endpoint: Endpoint) -> Callable[[Any], Any]:
    """A Django view answering ``POST`` with ``endpoint`` (405 otherwise), exempt from CSRF:
    clients authenticate themselves, they hold no session."""
    from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        answer = endpoint(
            EndpointRequest(
                request.headers.get("Authorization", ""),
                request.headers.get("Content-Type", ""),
                request.body,
            )
        )
        response = HttpResponse(answer.body, status=answer.status)
        for name, value in answer.headers:
            response[name] = value
        return response

    return view


def starlette_endpoint(endpoint: Endpoint) -> Callable[[Any], Awaitable[Any]]:
    """A Starlette (and FastAPI) endpoint answering with ``endpoint``, run in the thread pool:
    the family's calls reach the store, which blocks."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response

    async def view(request: Request) -> Response:
        body = await request.body()
        answer = await run_in_threadpool(
            endpoint,
            EndpointRequest(request.headers.get("authorization", ""), request.headers.get("content-type", ""), body),
        )
        return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))

    return view
