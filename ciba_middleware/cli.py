"""The ``ciba-middleware`` command: serve, token, ticket and check.

For operators, and for trying the middleware without writing code. Every command reads the
same ``CIBA_*`` environment as :func:`ciba_middleware.from_env`, through
:class:`ciba_middleware.Settings`, so what ``check`` accepts is exactly what ``serve`` (and
an application calling ``from_env``) will run with::

    ciba-middleware token new --service 715948317      # a secret and its CIBA_TOKENS grant
    ciba-middleware check                              # configuration and store, one line
    ciba-middleware serve --port 8080                  # the fail API under gunicorn
    ciba-middleware ticket issue --service 715948317   # a ticket to fail, for trying it out

Errors go to stderr as one line, never as a traceback. Exit codes (``docs/cli.md``):

====  ==============================================================
0     done; ``ticket show``/``delete``: the ticket existed
1     ``ticket show``/``delete``: no such ticket
2     bad arguments or bad configuration
3     the ticket store failed or could not be reached
4     an unexpected error (a bug: please report it)
130   interrupted (Ctrl-C) outside a running server
====  ==============================================================
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from . import __version__, runner
from .auth import StaticTokenVerifier, TokenVerifier, sha256_hex
from .config import Settings, degraded
from .errors import ConfigurationError, StoreError
from .grants import ReloadingVerifier
from .middleware import BackchannelFailMiddleware
from .redact import mask_url, scrub
from .response import not_found_app
from .stores import TicketStore, ticket_hash, well_formed

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["EXIT_CONFIG", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_STORE", "EXIT_UNEXPECTED", "main", "mask_url"]

log = logging.getLogger(__name__)

PROG = "ciba-middleware"
#: pyproject.toml's Documentation URL (tests/test_packaging.py keeps them equal). Until the
#: site is published, the manual is the source distribution's docs/ (or a clone's).
DOCS_URL = "https://ciba-middleware.github.io/ciba-middleware/"

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_CONFIG = 2
EXIT_STORE = 3
EXIT_UNEXPECTED = 4

_LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_LOG_DATEFMT = "%Y-%m-%d %H:%M:%S %z"


class CommandError(Exception):
    """A failure the command reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other error here.

    Descriptions are filled to 88 columns; epilogs are kept as written (tables, examples).
    """

    def __init__(self, *, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(description=description and textwrap.fill(description, 88), **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _OneLine(logging.Formatter):
    """``ciba-middleware: warning: message``, like the command's own error lines."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {' '.join(record.getMessage().splitlines())}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    parser = _build_parser()
    args = parser.parse_args(_tickets_as_positionals(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except CommandError as exc:
        _fail(str(exc))
        return exc.exit_code
    except ConfigurationError as exc:
        _fail(str(exc))
        return EXIT_CONFIG
    except StoreError as exc:
        _fail(f"the ticket store failed: {exc}")
        return EXIT_STORE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)")
        return EXIT_UNEXPECTED


def _setup_logging(args: argparse.Namespace) -> None:
    """Logs to stderr: a server's log for ``serve``; for one-shot commands, only this
    package's warnings, one line each, so a failure reads as a line or two, not as a
    backend library's retries."""
    if args.command is _cmd_serve:
        logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT, datefmt=_LOG_DATEFMT, stream=sys.stderr)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.addFilter(logging.Filter("ciba_middleware"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


# -- commands ---------------------------------------------------------------------------


def _cmd_token_new(args: argparse.Namespace) -> int:
    if args.organization is not None:
        if args.v2:
            raise CommandError("--v2 needs --service: an API v2 key belongs to one service", EXIT_CONFIG)
        if args.services is None:
            raise CommandError("--organization needs --services ID,ID", EXIT_CONFIG)
    elif args.services is not None:
        raise CommandError("--services goes with --organization; for one service use --service ID", EXIT_CONFIG)

    secret = secrets.token_urlsafe(32)
    grant: dict[str, Any]
    if args.organization is not None:
        grant = {"organization": args.organization, "services": args.services, "token_sha256": sha256_hex(secret)}
    elif args.v2:
        grant = {"service": args.service, "api_secret_sha256": sha256_hex(secret)}
    else:
        grant = {"service": args.service, "token_sha256": sha256_hex(secret)}
    # The verifier is what will read the grant: make sure it accepts it before printing.
    StaticTokenVerifier([grant])

    if args.json:
        shown: dict[str, Any] = {"api_key": args.service, "api_secret": secret} if args.v2 else {"token": secret}
        print(json.dumps({**shown, "grant": grant}))
        return EXIT_OK
    if args.v2:
        print(f"api_key:    {args.service}")
        print(f"api_secret: {secret}")
    else:
        print(f"token: {secret}")
    print(f"grant: {json.dumps(grant)}")
    print(
        f"{PROG}: the secret above is shown once and stored nowhere; give it to the caller now, "
        "and add the grant to the CIBA_TOKENS list.",
        file=sys.stderr,
    )
    return EXIT_OK


def _cmd_ticket_issue(args: argparse.Namespace) -> int:
    with _ticket_store() as store:
        ticket = store.issue(args.service, args.ttl)
    log.info("issued ticket %s for service %s", ticket_hash(ticket), args.service)
    print(ticket)
    return EXIT_OK


def _cmd_ticket_show(args: argparse.Namespace) -> int:
    return _on_ticket(
        args,
        "exists",
        "ticket {} exists for service {}",
        "no such ticket for service {} (unknown, expired, used, or of another service)",
    )


def _cmd_ticket_delete(args: argparse.Namespace) -> int:
    return _on_ticket(
        args, "delete", "deleted ticket {} of service {}", "no such ticket for service {}: nothing deleted"
    )


def _on_ticket(args: argparse.Namespace, method: str, found: str, missing: str) -> int:
    """Call the store's ``exists`` or ``delete`` on the ticket; say what happened."""
    with _ticket_store() as store:
        done = well_formed(args.ticket) and getattr(store, method)(args.service, args.ticket)
    if done:
        print(found.format(ticket_hash(args.ticket), args.service))
        return EXIT_OK
    print(missing.format(args.service))
    return EXIT_NOT_FOUND


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_mapping(os.environ)
    except ConfigurationError as exc:
        if str(exc).startswith("CIBA_TOKENS_FILE") and os.environ.get("CIBA_TOKENS_FILE"):
            raise ConfigurationError(
                f"{exc} (a running server refuses this file, logs it at ERROR and keeps its last good grants)"
            ) from None
        raise
    middleware = _scrubbed(settings, lambda: settings.build_middleware(not_found_app, announce=False))
    try:
        _ping(settings, middleware.store)
    finally:
        middleware.store.close()
    services: frozenset[str] = getattr(middleware.verifier, "services", frozenset())
    print(
        f"ok: store {mask_url(settings.store_url)} reachable, {_plural(len(settings.grants), 'grant')} "
        f"covering {_plural(len(services), 'service')} from {_grants_source(settings, middleware.verifier)}, "
        f"prefix {settings.prefix!r}, max body {settings.max_body_bytes} bytes, "
        f"ticket TTL {settings.ticket_ttl:g} s, audit log {settings.audit_log}, "
        f"metrics {settings.metrics_path or 'off'}{_family_summary(settings, middleware)}"
    )
    return EXIT_OK


def _family_summary(settings: Settings, middleware: Any) -> str:
    """``check``'s words on the CIBA family, when it is configured."""
    family = middleware.api.family
    if settings.family is None or family is None:
        return ""
    key = f"{family.key.alg} key {family.key.kid}"
    key += f" from {settings.family.signing_key_file}" if settings.family.signing_key_file else " made for this run"
    return (
        f"; CIBA family: {_plural(len(family.clients), 'client')} from {settings.family.clients_source}, "
        f"issuer {settings.family.issuer}, {key}, auth_req_id lifetime {settings.family.auth_req_id_lifetime} s, "
        f"interval {settings.family.polling_interval} s, access tokens {settings.family.access_token_lifetime} s"
    )


def _grants_source(settings: Settings, verifier: TokenVerifier) -> str:
    """Where the grants come from and, for a file, which version and how it is reloaded."""
    if not isinstance(verifier, ReloadingVerifier) or verifier.snapshot is None:
        return settings.grants_source
    interval = settings.tokens_reload_interval
    looks = f"every {interval:g} s and on SIGHUP" if interval else "on SIGHUP only"
    return f"CIBA_TOKENS_FILE {verifier.path!r} (version {verifier.snapshot.version}, looked at {looks})"


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import gunicorn  # noqa: F401 (imported by runner.run; checked before any work)
    except ImportError:
        raise CommandError("serve needs gunicorn: pip install 'ciba-middleware[server]'", EXIT_CONFIG) from None

    app = _import_app(args.app) if args.app else not_found_app
    if args.app:
        _refuse_wrapped_twice(args.app, app)
    settings = _serve_settings()
    if args.workers > 1 and urlsplit(settings.store_url).scheme.lower() == "memory":
        raise CommandError(
            "CIBA_STORE_URL is memory://, whose tickets live in one process: "
            "use --workers 1, or a store the workers share (sqlite://, redis://, postgresql://)",
            EXIT_CONFIG,
        )
    # Build everything once here, in the master, so a bad configuration or an unreachable
    # store stops the command with one line before any worker starts (the first start);
    # each worker then builds its own middleware (its own store connections) around the
    # master's grants, which every fork brings up to date with CIBA_TOKENS_FILE.
    verifier = _scrubbed(settings, settings.build_verifier)
    middleware = _scrubbed(settings, lambda: settings.build_middleware(app, verifier=verifier, announce=False))
    try:
        _ping(settings, middleware.store)
    finally:
        middleware.store.close()

    bind = runner.bind_address(args.host, args.port)
    try:
        runner.check_listen(args.host, args.port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {bind}: {exc.strerror or exc}", EXIT_CONFIG) from None
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": args.workers,
        "loglevel": args.log_level,
        "graceful_timeout": args.graceful_timeout,
    }
    if settings.metrics_path:
        from .metrics import child_exit

        options["child_exit"] = child_exit

    log.info(
        "fail API at %s%s/api/{serviceId}/backchannel/authentication/fail (store %s, %s)",
        f"http://{bind}",
        settings.prefix,
        mask_url(settings.store_url),
        f"around {args.app}" if args.app else "other paths answer 404",
    )
    runner.run(lambda: _worker_app(settings, app, verifier), options, prog=PROG)
    return EXIT_OK


def _worker_app(settings: Settings, app: WSGIApplication, verifier: TokenVerifier) -> WSGIApplication:
    """A worker's middleware. Past the first start, a failure here must not stop the
    server (gunicorn stops when a worker fails to boot): the worker serves ``app`` with
    the fail API answering 500, and says why in the log."""
    try:
        return settings.build_middleware(app, verifier=verifier)
    except (ConfigurationError, StoreError) as exc:
        return degraded(app, scrub(str(exc), settings.store_url))


def _refuse_wrapped_twice(spec: str, app: object) -> None:
    """Refuse an app that already serves the fail API (``CibaMiddleware``, ``from_env()``):
    wrapped again, the outer middleware would answer every call with its own store and
    never reach the app's, so its tickets would never be deleted."""
    found = _carried_middleware(app)
    if found is not None:
        raise CommandError(
            f"--app {spec} already serves the fail API (it carries a {type(found).__name__}, e.g. from "
            "CibaMiddleware or from_env()): serve would answer in front of it with another store; "
            f"run it without serve, e.g. gunicorn '{spec}'",
            EXIT_CONFIG,
        )


def _carried_middleware(app: object, limit: int = 64) -> BackchannelFailMiddleware | None:
    """The :class:`BackchannelFailMiddleware` inside ``app``, found through the attributes
    WSGI wrappers keep the wrapped app in (``wsgi_app``, ``app``, ``application``)."""
    todo, seen = [app], set[int]()
    while todo and len(seen) < limit:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BackchannelFailMiddleware):
            return current
        for name in ("wsgi_app", "app", "application", "__self__"):
            inner = getattr(current, name, None)
            if inner is not None and callable(inner):
                todo.append(inner)
    return None


def _serve_settings() -> Settings:
    """The settings ``serve`` runs with: the audit log's ``on`` means bare JSON lines on
    stderr, since the logging configured here is the command's own (its lines carry a
    prefix), not an app's."""
    settings = Settings.from_mapping(os.environ)
    if settings.audit_log == "on":
        settings = dataclasses.replace(settings, audit_log="stderr")
    return settings


# -- helpers ----------------------------------------------------------------------------


@contextlib.contextmanager
def _ticket_store() -> Iterator[TicketStore]:
    """The store named by ``CIBA_STORE_URL``, closed on exit; refuses ``memory://``."""
    settings = Settings.for_store(os.environ)
    if urlsplit(settings.store_url).scheme.lower() == "memory":
        raise CommandError(
            "CIBA_STORE_URL is memory://: its tickets live inside one server process, "
            "out of this command's reach; use sqlite://, redis:// or postgresql://",
            EXIT_CONFIG,
        )
    store: TicketStore = _scrubbed(settings, settings.build_store)
    try:
        yield store
    except StoreError as exc:
        raise StoreError(scrub(str(exc), settings.store_url)) from None
    finally:
        store.close()


def _scrubbed(settings: Settings, build: Callable[[], Any]) -> Any:
    """Call ``build``, keeping the store URL's password out of any error it raises."""
    try:
        return build()
    except ConfigurationError as exc:
        raise ConfigurationError(scrub(str(exc), settings.store_url)) from None
    except StoreError as exc:
        raise StoreError(scrub(str(exc), settings.store_url)) from None


def _ping(settings: Settings, store: TicketStore) -> None:
    try:
        store.ping()
    except StoreError as exc:
        raise CommandError(
            f"store {mask_url(settings.store_url)} unreachable: {scrub(str(exc), settings.store_url)}", EXIT_STORE
        ) from None


def _tickets_as_positionals(argv: list[str]) -> list[str]:
    """``ticket show|delete`` with a ticket that starts with ``-`` (one in 64 does): put it
    after ``--``, where argparse reads it as the TICKET it is rather than as an option.

    No option of this command is 32 characters of the ticket alphabet, so nothing else is
    moved; a command line that already has ``--`` is left as it is.
    """
    if argv[:1] != ["ticket"] or argv[1:2] not in (["show"], ["delete"]) or "--" in argv:
        return argv
    dashed = [arg for arg in argv[2:] if arg.startswith("-") and well_formed(arg)]
    if not dashed:
        return argv
    return [arg for arg in argv if arg not in dashed] + ["--", *dashed]


def _import_app(spec: str) -> WSGIApplication:
    """Import ``module:callable`` the way gunicorn does, from the working directory."""
    from gunicorn.util import import_app

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        app: WSGIApplication = import_app(spec)
    except Exception as exc:
        raise CommandError(f"--app {spec}: cannot load it: {type(exc).__name__}: {exc}", EXIT_CONFIG) from None
    return app


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.splitlines())}", file=sys.stderr)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _identifier(value: str) -> str:
    """A service ID or organization name, as the grants accept them."""
    if not value or value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise argparse.ArgumentTypeError(
            f"must be non-empty, without surrounding spaces or control characters: {value!r}"
        )
    return value


def _identifier_list(value: str) -> list[str]:
    found: list[str] = []
    for item in value.split(","):
        name = _identifier(item.strip())
        if name not in found:
            found.append(name)
    return found


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return number


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {value!r}")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value!r}")
    return int(value)


_ENV_HELP = """\
configuration comes from the environment, as for from_env():
  CIBA_STORE_URL       ticket store (default sqlite:///ciba-tickets.sqlite3)
  CIBA_TOKENS          JSON list of grants (or CIBA_TOKENS_FILE: a file holding it,
                       reloaded when it changes, every CIBA_TOKENS_RELOAD_INTERVAL s)
  CIBA_PATH_PREFIX     path in front of /api (default empty)
  CIBA_MAX_BODY_BYTES  largest request body (default 16384)
  CIBA_TICKET_TTL      seconds a new ticket lives (default 600)
  CIBA_AUDIT_LOG       on, off, stdout, stderr or an absolute file path (default on)
  CIBA_METRICS_PATH    serve Prometheus metrics there (with CIBA_METRICS_TOKEN_SHA256)
"""

_EXIT_HELP = """\
exit codes: 0 done, 2 bad arguments or configuration, 3 ticket store failed or unreachable,
  4 unexpected error
"""


def _build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Authlete's CIBA /backchannel/authentication/fail API as WSGI middleware: "
        "serve it, make tokens and tickets, check the configuration.",
        epilog=_ENV_HELP
        + "\nexit codes: 0 done, 1 no such ticket (ticket show/delete), 2 bad arguments or configuration,\n"
        + "  3 ticket store failed or unreachable, 4 unexpected error\n"
        + f"\nsee '{PROG} COMMAND --help'. The manual is docs/cli.md in the source distribution\n"
        + f"(or a clone of the repository), and once published {DOCS_URL}cli/",
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the fail API under gunicorn",
        description="Run the middleware under gunicorn, around --app or around an app that answers "
        "every other path with a JSON 404. The configuration is checked and the store reached "
        "before any worker starts. Logs go to stderr; Ctrl-C or SIGTERM stops it (exit 0).",
        epilog=_ENV_HELP + "\n" + _EXIT_HELP,
        formatter_class=raw,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (default: %(default)s)")
    serve.add_argument("--workers", type=_positive, default=1, help="worker processes (default: %(default)s)")
    serve.add_argument(
        "--app",
        metavar="MODULE:CALLABLE",
        help="the WSGI app to wrap, as gunicorn names it (imported from the working directory)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="(default: %(default)s)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_positive,
        default=30,
        metavar="SECONDS",
        help="time given to requests in flight on SIGTERM (default: %(default)s)",
    )
    serve.set_defaults(command=_cmd_serve)

    token = commands.add_parser(
        "token",
        help="make caller credentials",
        description="Make credentials for callers of the fail API.",
    )
    token_commands = token.add_subparsers(title="commands", metavar="COMMAND", required=True)
    new = token_commands.add_parser(
        "new",
        help="a fresh secret and its CIBA_TOKENS grant",
        description="Print a fresh random secret (shown once, stored nowhere) and the grant to add to "
        "CIBA_TOKENS, which holds only the secret's SHA-256. Reads no configuration.",
        epilog="examples:\n"
        "  ciba-middleware token new --service 715948317               Service Access Token (API v3)\n"
        "  ciba-middleware token new --organization acme --services 715948317,42\n"
        "                                                              Organization Token (API v3)\n"
        "  ciba-middleware token new --v2 --service 715948317          API secret (API v2, key = service)",
        formatter_class=raw,
    )
    who = new.add_mutually_exclusive_group(required=True)
    who.add_argument("--service", type=_identifier, metavar="ID", help="a token for this one service")
    who.add_argument("--organization", type=_identifier, metavar="NAME", help="an organization token")
    new.add_argument(
        "--services", type=_identifier_list, metavar="ID,ID", help="the organization's services, comma-separated"
    )
    new.add_argument("--v2", action="store_true", help="an API v2 secret for Basic auth (API key = the service ID)")
    new.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    new.set_defaults(command=_cmd_token_new)

    ticket = commands.add_parser(
        "ticket",
        help="issue, show and delete tickets in the store",
        description="Work on the ticket store named by CIBA_STORE_URL (CIBA_TOKENS is not needed).",
    )
    ticket_commands = ticket.add_subparsers(title="commands", metavar="COMMAND", required=True)
    store_help = "configuration: CIBA_STORE_URL and CIBA_TICKET_TTL, as for from_env()\n"
    issue = ticket_commands.add_parser(
        "issue",
        help="print a new ticket",
        description="Issue a ticket for a service and print it, as an authorization server would before "
        "calling the fail API.",
        epilog=store_help + "\n" + _EXIT_HELP,
        formatter_class=raw,
    )
    issue.add_argument("--service", type=_identifier, required=True, metavar="ID", help="the ticket's service")
    issue.add_argument(
        "--ttl", type=_seconds, metavar="SECONDS", help="seconds the ticket lives (default: CIBA_TICKET_TTL or 600)"
    )
    issue.set_defaults(command=_cmd_ticket_issue)
    lookup_exit = (
        "exit codes: 0 the ticket existed, 1 no such ticket, 2 bad arguments or configuration,\n"
        "  3 ticket store failed or unreachable, 4 unexpected error\n"
    )
    for name, verb, handler in (
        ("show", "whether a ticket exists", _cmd_ticket_show),
        ("delete", "delete a ticket", _cmd_ticket_delete),
    ):
        sub = ticket_commands.add_parser(
            name,
            help=verb,
            description=f"{verb[0].upper()}{verb[1:]} (unexpired, of this service).",
            epilog=store_help + "\n" + lookup_exit,
            formatter_class=raw,
        )
        sub.add_argument("--service", type=_identifier, required=True, metavar="ID", help="the ticket's service")
        sub.add_argument(
            "ticket", metavar="TICKET", help="as ticket issue printed it (one starting with - is taken as well)"
        )
        sub.set_defaults(command=handler)

    check = commands.add_parser(
        "check",
        help="validate the configuration and reach the store",
        description="Build everything serve would from the environment and ping the store; print one "
        "line (secrets and store passwords masked).",
        epilog=_ENV_HELP + "\n" + _EXIT_HELP,
        formatter_class=raw,
    )
    check.set_defaults(command=_cmd_check)
    return parser
