"""Views of the test project: pass-through targets, and views that fail requests."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from ciba_middleware import BackchannelFail
from ciba_middleware.django import afail, aissue_ticket, fail, issue_ticket


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello from the app", status=201, headers={"X-App": "yes"}, content_type="text/plain")


@csrf_exempt
def near_miss(request: HttpRequest) -> HttpResponse:
    return HttpResponse("the app's own route", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[str]:
        for i in range(5):
            yield f"chunk {i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


@csrf_exempt
def issue(request: HttpRequest) -> HttpResponse:
    return HttpResponse(issue_ticket(), content_type="text/plain")


@csrf_exempt
def reject(request: HttpRequest) -> HttpResponse:
    """Raises BackchannelFail with the form's fields; the middleware answers the client."""
    raise BackchannelFail(
        request.POST["reason"],
        ticket=request.POST.get("ticket") or None,
        description=request.POST.get("description") or None,
    )


@csrf_exempt
async def areject(request: HttpRequest) -> HttpResponse:
    """An async view raising BackchannelFail."""
    raise BackchannelFail(request.POST["reason"], ticket=request.POST.get("ticket") or None)


@csrf_exempt
async def aissue(request: HttpRequest) -> HttpResponse:
    return HttpResponse(await aissue_ticket(), content_type="text/plain")


@csrf_exempt
async def afail_json(request: HttpRequest) -> JsonResponse:
    answer = await afail(request.POST["reason"], ticket=request.POST.get("ticket") or None)
    return JsonResponse(answer.to_dict())


@csrf_exempt
def fail_json(request: HttpRequest) -> JsonResponse:
    """fail() for a view that builds its own response."""
    answer = fail(request.POST["reason"], ticket=request.POST.get("ticket") or None)
    return JsonResponse(answer.to_dict())


@csrf_exempt
def echo(request: HttpRequest) -> HttpResponse:
    """What the app received: method, path, body, and a header, for pass-through checks."""
    content = {
        "method": request.method,
        "path": request.path,
        "body": request.body.decode("latin-1"),
        "authorization": request.headers.get("Authorization"),
    }
    return HttpResponse(json.dumps(content), content_type="application/json")
