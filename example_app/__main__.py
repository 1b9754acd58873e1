"""``python -m example_app [--host H] [--port P]``: run the demo on Werkzeug, with a pool of threads.

It answers in HTTP/1.1, and ``wsgi.multithread`` is true.

Prints the URLs to try and, when none was configured, the development token generated for
this run. Threads matter: with ``CIBA_DEMO_FAIL_VIA=http`` the server calls itself.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

from ciba_middleware import ConfigurationError
from ciba_middleware.cli import mask_url
from ciba_middleware.flask import CibaMiddleware

try:
    from .app import EXTENSION_KEY, DemoState, create_app
except ModuleNotFoundError as missing:  # the [flask] extra alone has no joserfc
    if missing.name != "joserfc":
        raise
    sys.exit("example_app: joserfc is missing (it signs the ID tokens): pip install 'ciba-middleware[demo]'")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, not {args.port}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = f"http://{_url_host(args.host)}:{args.port}"
    try:
        app = create_app(own_url=url)
    except ConfigurationError as exc:
        print(f"example_app: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        server = PooledWSGIServer(args.host, args.port, app)
    except OSError as exc:
        print(f"example_app: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(banner(app, url), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


class RequestHandler(WSGIRequestHandler):
    """HTTP/1.1; a client silent for ``timeout`` seconds is disconnected.

    Werkzeug answers ``Connection: close`` to every request, so there is no keep-alive;
    the timeout keeps a client that opens a connection and sends nothing (a browser's
    preconnect, say) from holding one of the pool's threads for good.
    """

    protocol_version = "HTTP/1.1"
    timeout = 10


class PooledWSGIServer(BaseWSGIServer):
    """Werkzeug's development server, answering from a fixed pool of threads, in HTTP/1.1.

    Werkzeug's ``threaded=True`` starts a thread per request; the SQLite store keeps one
    connection per thread, so a thread per request would open a connection per request.
    A pool reuses a few threads, as gunicorn's ``--threads`` does. It serves from several
    threads, so it says so to the app (``wsgi.multithread``).
    """

    multithread = True

    def __init__(self, host: str, port: int, app: Any, *, threads: int = 8) -> None:
        super().__init__(host, port, app, handler=RequestHandler)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="example_app")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def banner(app: object, url: str) -> str:
    """The start-up text: where everything is, and the generated token when there is one."""
    from flask import Flask

    assert isinstance(app, Flask)
    demo: DemoState = app.extensions[EXTENSION_KEY]
    ciba = CibaMiddleware.state(app)
    fail_api = f"{url}{ciba.settings.prefix}/api/{ciba.service_id}/backchannel/authentication/fail"
    endpoint = f"{url}/backchannel/authentication"
    lines = [
        "example_app: a demo CIBA authorization server (ciba-middleware)",
        f"  demo clients, users, hint tokens  GET  {url}/",
        f"  discovery                         GET  {url}/.well-known/openid-configuration",
        f"  backchannel authentication        POST {endpoint}",
        f"  token endpoint (poll mode)        POST {url}/token",
        f"  authentication device (browser)   GET  {url}/device/alice",
        f"  fail API (Authlete API v3)        POST {fail_api}",
        f"  ticket store                      {mask_url(ciba.settings.store_url)}",
        f"  requests are failed               {demo.fail_via.replace('_', ' ')}",
    ]
    if demo.generated_token is not None:
        lines += [
            "",
            f"Development token for service {ciba.service_id}, generated for this run",
            "(set CIBA_TOKENS to use your own):",
            f"  {demo.generated_token}",
        ]
    token = demo.generated_token or "$TOKEN"
    lines += [
        "",
        "A full flow: ask alice, approve (or deny) on her device, poll the token endpoint:",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=alice"
        f" -d {shlex.quote('binding_message=Pay 20 EUR')} {endpoint}",
        f"  open {url}/device/alice in a browser and approve",
        f"  curl -s -u demo-client:demo-secret -d grant_type=urn:openid:params:grant-type:ciba"
        f" -d auth_req_id=AUTH_REQ_ID {url}/token",
        "",
        "Rejections, failed through the fail API:",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=nobody {endpoint}",
        f"  curl -s -u demo-client:demo-secret -d scope=openid -d login_hint=carol {endpoint}",
        f"  curl -s -H {shlex.quote('Authorization: Bearer ' + token)} -d reason=ACCESS_DENIED {fail_api}",
        "",
    ]
    return "\n".join(lines)


def _url_host(host: str) -> str:
    """The host to put in URLs: a wildcard address becomes the loopback one."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (compared, not bound)
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(main())
