"""``python -m example_app [--host H] [--port P]``: run the demo on Waitress.

Waitress is a pure-Python WSGI server: it reads each request whole before a thread of its
pool runs the app, so slow or silent clients hold no thread (``wsgi.multithread`` is true).

Prints the URLs to try and, when none was configured, the development token generated for
this run. Threads matter: with ``CIBA_DEMO_FAIL_VIA=http`` the server calls itself.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from ciba_middleware import ConfigurationError
from ciba_middleware.cli import mask_url
from ciba_middleware.flask import CibaMiddleware

try:
    import joserfc  # noqa: F401 (the CIBA family signs ID tokens with it)

    from .app import EXTENSION_KEY, DemoState, create_app
except ModuleNotFoundError as missing:  # the [flask] extra alone has no joserfc
    if missing.name != "joserfc":
        raise
    sys.exit("example_app: joserfc is missing (it signs the ID tokens): pip install 'ciba-middleware[demo]'")

#: Threads running the app; Waitress's own thread reads and writes the connections.
THREADS = 8


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
        server = make_server(app, args.host, args.port)
    except OSError as exc:
        print(f"example_app: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(banner(app, url), flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        notifier = app.extensions[EXTENSION_KEY].endpoints.notifier
        if notifier is not None:
            notifier.close(5.0)  # deliver what is queued
    return 0


def make_server(app: Any, host: str, port: int, *, threads: int = THREADS) -> Any:
    """A Waitress server for ``app`` bound to ``host``:``port`` (0: any free port); raises
    :class:`OSError` when it cannot listen. ``run()`` serves, ``close()`` stops."""
    from waitress.server import create_server  # type: ignore[import-untyped]

    return create_server(
        app, host=host, port=port, threads=threads, ident="example_app", clear_untrusted_proxy_headers=True
    )


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
        f"  token endpoint (poll, ping, push) POST {url}/token",
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
