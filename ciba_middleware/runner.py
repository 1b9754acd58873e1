"""Running a WSGI app under gunicorn, for ``ciba-middleware serve``.

gunicorn is optional (``pip install "ciba-middleware[server]"``) and imported only by
:func:`run`. Each worker builds its own app by calling ``load``, so its store connections
are its own, and a worker that a SIGHUP starts reads the configuration again.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["bind_address", "check_listen", "run"]

log = logging.getLogger(__name__)


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gunicorn's ``--bind`` takes it (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_listen(host: str, port: int) -> None:
    """Raise OSError now if ``host:port`` cannot be listened on.

    gunicorn would log the error five times over five seconds before giving up; a port
    taken between this check and gunicorn's bind still gets gunicorn's own report.
    """
    if port == 0:
        return
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)


def run(load: Callable[[], WSGIApplication], options: dict[str, Any], *, prog: str) -> None:
    """Run gunicorn with ``options`` (its settings' names), each worker serving ``load()``.

    Raises ImportError when gunicorn is not installed.
    """
    from gunicorn.app.base import BaseApplication

    settings = {"proc_name": prog, "errorlog": "-", "worker_exit": close_worker_store, **options}

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)
            # gunicorn >= 25.1 opens a control socket at one fixed path per user, which a
            # second server on the host would take over; this command does not offer it.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> WSGIApplication:
            return load()

    Server(prog=prog).run()


def close_worker_store(server: object, worker: Any) -> None:
    """gunicorn ``worker_exit`` hook: release the worker's store connections."""
    store = getattr(getattr(worker, "wsgi", None), "store", None)
    if store is not None:
        try:
            store.close()
        except Exception:
            log.warning("closing the ticket store failed", exc_info=True)
