"""The authentication device, in a browser: the user approves or denies their pending requests.

- ``GET /device``: the demo users, each a link to their device;
- ``GET /device/<user>``: the user's requests waiting for a decision (client, scope, binding
  message, time left), each with Approve and Deny;
- ``POST /device/<user>/<request>`` with ``decision=approve`` or ``deny``: the decision, given
  to :meth:`CibaEndpoints.complete <ciba_middleware.ciba.endpoints.CibaEndpoints.complete>`:
  a poll client gets it at its next poll, a ping or push client is notified. Then back to the
  list (303).

Each request shows when it was made and a short identifier (its ticket's hash), so that two
identical requests can be told apart. An unknown user gets a page saying so (404).

It stands in for the user's phone: there is no login, so anyone who reaches the demo can
decide for its users. A request is named by a device id of its own, never by its
``auth_req_id``, which stays the client's.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, abort, current_app, redirect, render_template_string, request, url_for

from ciba_middleware.ciba.endpoints import CompletionRefused

from .directory import CLIENTS, USERS
from .oidc import endpoints
from .pending import PendingRequests

__all__ = ["bp"]

log = logging.getLogger(__name__)

bp = Blueprint("device", __name__)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} - example_app</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  .request { border: 1px solid #ccc; border-radius: 0.5rem; padding: 0.8rem 1rem; margin: 1rem 0; }
  .request dl { display: grid; grid-template-columns: 9rem 1fr; gap: 0.3rem; margin: 0 0 0.8rem; }
  .request dt { color: #666; }
  .request dd { margin: 0; }
  .binding { font-weight: bold; font-size: 1.1rem; }
  button { font-size: 1rem; padding: 0.4rem 1.2rem; margin-right: 0.5rem; border-radius: 0.3rem;
           border: 1px solid #888; }
  .approve { background: #1a7f37; color: white; border-color: #1a7f37; }
  .deny { background: #fff; color: #b00020; border-color: #b00020; }
  .notice { background: #eef6ee; border-left: 4px solid #1a7f37; padding: 0.5rem 0.8rem; }
  .notice.denied { background: #fbeeee; border-color: #b00020; }
  .muted { color: #666; }
</style>
</head>
<body>
{% if missing %}
<h1>No such user</h1>
<p id="unknown">There is no user <strong>{{ missing }}</strong> in this demo.</p>
<p><a href="{{ url_for('device.devices') }}">The demo users' devices</a></p>
{% elif user is none %}
<h1>Authentication devices</h1>
<p>Each demo user has one. Open yours to approve or deny the requests waiting for you.</p>
<ul>
{% for u in users %}  <li><a href="{{ url_for('device.user_device', subject=u.subject) }}">{{ u.subject }}</a>
    <span class="muted">({{ u.note }})</span></li>
{% endfor %}</ul>
{% else %}
<h1>{{ user.subject }}'s authentication device</h1>
{% if decided %}<p class="notice {{ decided }}" role="status">Request {{ decided }}.</p>{% endif %}
{% if not waiting %}<p id="empty">No request is waiting for you.</p>{% endif %}
{% for p in waiting %}
<section class="request" data-request="{{ p.device_id }}">
  <dl>
    <dt>Request</dt><dd class="request-id"><code>{{ p.short_id }}</code></dd>
    <dt>Made at</dt><dd class="made">{{ p.created_at | clock }} UTC
      <span class="muted">({{ (now - p.created_at) | round | int }} s ago)</span></dd>
    <dt>Client</dt><dd class="client">{{ p.client_id }}{% if notes[p.client_id] %}
      <span class="muted">({{ notes[p.client_id] }})</span>{% endif %}</dd>
    <dt>Scope</dt><dd class="scope">{{ p.scope }}</dd>
    <dt>Binding message</dt><dd class="binding">{% if p.binding_message %}{{ p.binding_message }}{% else %}
      <span class="muted">(none)</span>{% endif %}</dd>
    {% if p.resources %}<dt>Resources</dt><dd class="resources">{{ p.resources | join(", ") }}</dd>{% endif %}
    <dt>Expires in</dt><dd class="expires">{{ (p.expires_at - now) | round | int }} s</dd>
  </dl>
  <form method="post" action="{{ url_for('device.decide', subject=user.subject, device_id=p.device_id) }}">
    <button class="approve" name="decision" value="approve">Approve</button>
    <button class="deny" name="decision" value="deny">Deny</button>
  </form>
</section>
{% endfor %}
<p><a href="{{ url_for('device.user_device', subject=user.subject) }}">Refresh</a>
  &middot; <a href="{{ url_for('device.devices') }}">Other users</a></p>
{% endif %}
</body>
</html>
"""

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # Nothing loaded from elsewhere, and the Approve and Deny buttons post only to the demo.
    "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; form-action 'self'",
}


def _page(status: int = 200, **context: object) -> Response:
    context.setdefault("user", None)
    context.setdefault("missing", None)
    context.setdefault("title", "Authentication devices")
    body = render_template_string(_PAGE, **context)
    return Response(body, status=status, headers=_HEADERS, content_type="text/html; charset=utf-8")


@bp.get("/device")
def devices() -> Response:
    return _page(users=list(USERS.values()))


@bp.app_template_filter("clock")
def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _unknown(subject: str) -> Response:
    return _page(404, missing=subject, title="No such user")


@bp.get("/device/<subject>")
def user_device(subject: str) -> Response:
    user = USERS.get(subject)
    if user is None:
        return _unknown(subject)
    pending: PendingRequests = current_app.extensions["example_app"].pending
    decided = request.args.get("decided")
    return _page(
        user=user,
        title=f"{user.subject}'s device",
        waiting=pending.waiting_for(user.subject),
        notes={c.client_id: c.note for c in CLIENTS.values()},
        now=time.time(),
        decided=decided if decided in ("approved", "denied") else None,
    )


@bp.post("/device/<subject>/<device_id>")
def decide(subject: str, device_id: str) -> Response:
    user = USERS.get(subject)
    if user is None:
        return _unknown(subject)
    decision = request.form.get("decision")
    if decision not in ("approve", "deny"):
        abort(400, description="decision must be approve or deny")
    pending: PendingRequests = current_app.extensions["example_app"].pending
    found = pending.take(user.subject, device_id)
    if found is None:
        abort(404, description="No such request is waiting for a decision: it expired, or was decided already.")
    try:
        if decision == "approve":
            endpoints().complete(found.ticket, "AUTHORIZED", subject=user.subject)
        else:
            endpoints().complete(found.ticket, "ACCESS_DENIED", error_description="The user denied the request.")
    except CompletionRefused as exc:
        log.info("request %s could not be completed: %s", found.short_id, exc)
        abort(404, description="No such request is waiting for a decision: it expired, or was decided already.")
    status = "approved" if decision == "approve" else "denied"
    log.info("%s %s the request of %s (ticket %s)", subject, status, found.client_id, found.short_id)
    return redirect(url_for("device.user_device", subject=subject, decided=status), 303)  # type: ignore[return-value]
