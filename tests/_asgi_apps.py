"""ASGI apps that tests serve under uvicorn (importable as ``_asgi_apps`` from tests/).

``application``: a Starlette app (pass-through targets, a view raising BackchannelFail)
wrapped by ``ciba_middleware.asgi.from_env``; ``mounted``: the same middleware mounted
under ``/authlete`` in an outer Starlette app; ``fastapi_app``: FastAPI.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Form
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from ciba_middleware import BackchannelFail
from ciba_middleware.asgi import from_env


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello from the app", status_code=201, headers={"X-App": "yes"})


async def near_miss(request: Request) -> Response:
    return PlainTextResponse("the app's own route")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[str]:
        for i in range(5):
            yield f"chunk {i}\n"

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(request: Request) -> Response:
    """What the app received, for pass-through checks."""
    content = {
        "method": request.method,
        "path": request.url.path,
        "root_path": request.scope.get("root_path", ""),
        "body": (await request.body()).decode("latin-1"),
        "authorization": request.headers.get("authorization"),
    }
    return Response(json.dumps(content), media_type="application/json")


async def issue(request: Request) -> Response:
    return PlainTextResponse(await ciba.issue_ticket())


async def reject(request: Request) -> Response:
    form = await request.form()
    raise BackchannelFail(
        str(form["reason"]),
        ticket=str(form.get("ticket") or "") or None,
        description=str(form.get("description") or "") or None,
    )


async def websocket_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("ws:" + await websocket.receive_text())
    await websocket.close()


routes = [
    Route("/hello", hello),
    Route("/api/other/backchannel/authentication/fail/extra", near_miss, methods=["GET", "POST"]),
    Route("/stream", stream),
    Route("/echo", echo, methods=["GET", "POST", "PUT"]),
    Route("/api/{path:path}", echo, methods=["GET", "POST"]),
    Route("/issue", issue, methods=["POST"]),
    Route("/reject", reject, methods=["POST"]),
    WebSocketRoute("/ws", websocket_echo),
]
starlette_app = Starlette(routes=routes)
ciba = from_env(starlette_app)
starlette_app.add_exception_handler(BackchannelFail, ciba.exception_handler)  # type: ignore[arg-type]
application = ciba

# The middleware (alone, every other path a 404) mounted under /authlete of an outer app.
mounted = Starlette(routes=[Mount("/authlete", app=from_env()), Route("/echo", echo, methods=["GET", "POST"])])

# FastAPI: the same middleware and exception handler, and a view taking a form.
fastapi_inner = FastAPI()
fastapi_ciba = from_env(fastapi_inner)
fastapi_inner.add_exception_handler(BackchannelFail, fastapi_ciba.exception_handler)  # type: ignore[arg-type]


@fastapi_inner.post("/backchannel/authentication")
async def backchannel_authentication(login_hint: str = Form()) -> dict[str, str]:
    ticket = await fastapi_ciba.issue_ticket()
    if login_hint != "known":
        raise BackchannelFail("UNKNOWN_USER_ID", ticket=ticket, description="No such user")
    return {"ticket": ticket}


fastapi_app = fastapi_ciba
