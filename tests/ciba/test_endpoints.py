"""CibaEndpoints: the backchannel authentication endpoint with hooks, the CIBA grant, complete."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import SERVICE

from ciba_middleware import Reason
from ciba_middleware.ciba.delivery import Attempt, Notification, Notifier
from ciba_middleware.ciba.endpoints import (
    AuthenticationRequest,
    BindingMessagePolicy,
    CibaEndpoints,
    ClientResponse,
    CompletionRefused,
    EndpointRequest,
    Hooks,
    PendingRequest,
    Reject,
)
from ciba_middleware.config import Settings
from ciba_middleware.core import FailApi
from ciba_middleware.errors import ConfigurationError
from ciba_middleware.stores.memory import MemoryTicketStore

from ._family import CODED, GRANT, OTHER, PING, POLL, SECRET, family_env, signing_key

FORM = "application/x-www-form-urlencoded"
#: oidc-provider's default rule, as a policy.
STRICT = BindingMessagePolicy(max_length=20, pattern=r"[a-zA-Z0-9\-._+/!?#]+")
USERS = {"alice": {"subject": "alice", "code": "1234"}, "bob": {"subject": "bob", "code": None}}


class DemoHooks(Hooks):
    def __init__(self) -> None:
        self.started: list[PendingRequest] = []
        self.fail_start = False

    def find_user(self, request: AuthenticationRequest) -> Any:
        if request.hint == "boom":
            raise RuntimeError("the directory is down")
        return USERS.get(request.subject or request.hint)

    def user_code_valid(self, user: Any, request: AuthenticationRequest) -> bool:
        return user["code"] is not None and user["code"] == request.user_code

    def check(self, user: Any, request: AuthenticationRequest) -> None:
        if user["subject"] == "bob" and request.client_id == OTHER:
            raise Reject(Reason.ACCESS_DENIED, "bob blocked this client")

    def start_device(self, user: Any, pending: PendingRequest) -> None:
        self.started.append(pending)
        if self.fail_start:
            raise RuntimeError("the push service is down")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FailApi]:
    env = family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off")
    built = Settings.from_mapping(env).build_api(announce=False).api
    yield built
    built.store.close()


@pytest.fixture
def hooks() -> DemoHooks:
    return DemoHooks()


@pytest.fixture
def endpoints(api: FailApi, hooks: DemoHooks) -> CibaEndpoints:
    return CibaEndpoints(api, SERVICE, hooks)


def basic(client_id: str, secret: str = SECRET) -> str:
    return "Basic " + base64.b64encode(f"{quote(client_id)}:{quote(secret)}".encode()).decode()


def call(endpoint: Any, authorization: str = "", content_type: str = FORM, **params: str) -> ClientResponse:
    return endpoint(EndpointRequest(authorization, content_type, urlencode(params).encode()))  # type: ignore[no-any-return]


def start(endpoints: CibaEndpoints, client: str = POLL, **params: str) -> ClientResponse:
    return call(endpoints.backchannel_authentication, basic(client), **{"scope": "openid", **params})


def test_the_poll_flow(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    answer = start(endpoints, login_hint="alice", binding_message="Café 42")
    assert answer.status == 200, answer.body
    assert ("Cache-Control", "no-store") in answer.headers
    body = answer.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    (pending,) = hooks.started
    assert pending.user["subject"] == "alice"
    assert pending.request.binding_message == "Café 42"
    assert pending.request.client_id == POLL
    assert pending.request.hint_type == "login_hint"
    assert len(pending.short_id) == 12
    assert pending.expires_at > pending.created_at
    token = call(endpoints.token, basic(POLL), grant_type=GRANT, auth_req_id=body["auth_req_id"])
    assert (token.status, token.json()["error"]) == (400, "authorization_pending")
    assert endpoints.complete(pending.ticket, "AUTHORIZED", subject="alice").action == "NO_ACTION"
    granted = call(endpoints.token, basic(POLL), grant_type=GRANT, auth_req_id=body["auth_req_id"])
    assert granted.status == 200, granted.body
    assert set(granted.json()) >= {"access_token", "id_token", "token_type", "expires_in"}
    again = call(endpoints.token, basic(POLL), grant_type=GRANT, auth_req_id=body["auth_req_id"])
    assert (again.status, again.json()["error"]) == (400, "invalid_grant")


def test_client_secret_post(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    answer = call(
        endpoints.backchannel_authentication, scope="openid", login_hint="bob", client_id=POLL, client_secret=SECRET
    )
    assert answer.status == 200, answer.body
    auth_req_id = answer.json()["auth_req_id"]
    endpoints.complete(hooks.started[0].ticket, "ACCESS_DENIED")
    denied = call(endpoints.token, grant_type=GRANT, auth_req_id=auth_req_id, client_id=POLL, client_secret=SECRET)
    assert (denied.status, denied.json()["error"]) == (400, "access_denied")


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        pytest.param({"login_hint": "nobody"}, 400, "unknown_user_id", id="unknown-user"),
        pytest.param({"login_hint": "alice", "user_code": "0000"}, 400, "invalid_user_code", id="wrong-user-code"),
        pytest.param({"login_hint": "bob", "user_code": "0000"}, 400, "invalid_user_code", id="user-without-code"),
        pytest.param(
            {"login_hint": "alice", "binding_message": "x" * 65}, 400, "invalid_binding_message", id="long-message"
        ),
        pytest.param(
            {"login_hint": "alice", "binding_message": "line\nbreak"}, 400, "invalid_binding_message", id="control"
        ),
        pytest.param({"login_hint": "boom"}, 500, "server_error", id="hook-raises"),
        pytest.param({"login_hint": "alice", "scope": "profile"}, 400, "invalid_scope", id="no-openid"),
        pytest.param({"login_hint": "alice", "id_token_hint": "x"}, 400, "invalid_request", id="two-hints"),
    ],
)
def test_refusals(endpoints: CibaEndpoints, hooks: DemoHooks, params: dict[str, str], status: int, error: str) -> None:
    answer = start(endpoints, **params)
    assert (answer.status, answer.json()["error"]) == (status, error)
    assert hooks.started == []


def test_a_refusal_goes_through_the_fail_api_and_deletes_the_ticket(api: FailApi, endpoints: CibaEndpoints) -> None:
    events: list[Any] = []
    api.observers = (events.append,)
    assert start(endpoints, login_hint="nobody").status == 400
    fail = [e for e in events if e.endpoint is None]
    assert len(fail) == 1
    assert fail[0].reason is Reason.UNKNOWN_USER_ID
    assert fail[0].ticket_hash


def test_a_hook_may_reject_with_any_reason(endpoints: CibaEndpoints) -> None:
    answer = start(endpoints, OTHER, login_hint="bob")
    assert (answer.status, answer.json()) == (
        403,
        {"error": "access_denied", "error_description": "bob blocked this client"},
    )


def test_empty_parameters_are_omitted(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    assert start(endpoints, login_hint="alice", binding_message="", user_code="").status == 200
    assert (hooks.started[0].request.binding_message, hooks.started[0].request.user_code) == (None, None)


def test_the_right_user_code(endpoints: CibaEndpoints) -> None:
    assert start(endpoints, CODED, login_hint="alice", user_code="1234").status == 200
    missing = start(endpoints, CODED, login_hint="alice")
    assert (missing.status, missing.json()["error"]) == (400, "missing_user_code")


def test_an_expired_login_hint_token(endpoints: CibaEndpoints) -> None:
    def jwt(claims: dict[str, Any]) -> str:
        encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()  # noqa: E731
        return f"{encode({'alg': 'none'})}.{encode(claims)}.sig"

    class TokenHooks(DemoHooks):
        def find_user(self, request: AuthenticationRequest) -> Any:
            return USERS["alice"]

    endpoints.hooks = TokenHooks()
    expired = start(endpoints, login_hint_token=jwt({"sub": "alice", "exp": int(time.time()) - 5}))
    assert (expired.status, expired.json()["error"]) == (400, "expired_login_hint_token")
    assert start(endpoints, login_hint_token=jwt({"sub": "alice", "exp": int(time.time()) + 60})).status == 200
    assert start(endpoints, login_hint_token="opaque-token").status == 200


@pytest.mark.parametrize(
    ("authorization", "content_type", "params", "status", "error"),
    [
        pytest.param(basic(POLL, "wrong"), FORM, {}, 401, "invalid_client", id="wrong-secret"),
        pytest.param("", FORM, {}, 401, "invalid_client", id="no-credentials"),
        pytest.param("Basic !!!", FORM, {}, 401, "invalid_client", id="malformed-basic"),
        pytest.param("Basic " + base64.b64encode(b"app").decode(), FORM, {}, 401, "invalid_client", id="no-colon"),
        pytest.param("Bearer x", FORM, {}, 401, "invalid_client", id="not-basic"),
        pytest.param(basic(POLL), "application/json", {}, 400, "invalid_request", id="json-body"),
        pytest.param(basic(POLL), FORM, {"client_secret": SECRET}, 400, "invalid_request", id="two-methods"),
    ],
)
def test_client_authentication(
    endpoints: CibaEndpoints, authorization: str, content_type: str, params: dict[str, str], status: int, error: str
) -> None:
    for endpoint in (endpoints.backchannel_authentication, endpoints.token):
        extra = {"grant_type": GRANT, "auth_req_id": "x"} if endpoint == endpoints.token else {"login_hint": "alice"}
        answer = call(endpoint, authorization, content_type, scope="openid", **extra, **params)
        assert (answer.status, answer.json()["error"]) == (status, error)
        if status == 401:
            assert ("WWW-Authenticate", 'Basic realm="ciba"') in answer.headers


def test_a_body_that_is_not_utf8(endpoints: CibaEndpoints) -> None:
    answer = endpoints.token(EndpointRequest(basic(POLL), FORM, b"grant_type=\xff"))
    assert (answer.status, answer.json()["error"]) == (400, "invalid_request")


def test_another_grant_type(endpoints: CibaEndpoints) -> None:
    answer = call(endpoints.token, basic(POLL), grant_type="client_credentials")
    assert (answer.status, answer.json()["error"]) == (400, "unsupported_grant_type")


def test_a_device_that_cannot_be_reached_closes_the_request(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    hooks.fail_start = True
    answer = start(endpoints, login_hint="alice")
    assert (answer.status, answer.json()["error"]) == (500, "server_error")
    # Closed (TRANSACTION_FAILED): a decision that comes anyway is refused.
    with pytest.raises(CompletionRefused, match="already completed"):
        endpoints.complete(hooks.started[0].ticket, "AUTHORIZED", subject="alice")


def test_complete_refusals(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    assert start(endpoints, login_hint="alice").status == 200
    ticket = hooks.started[0].ticket
    with pytest.raises(ValueError, match="result must be"):
        endpoints.complete(ticket, "MAYBE")
    with pytest.raises(ValueError, match="subject"):
        endpoints.complete(ticket, "AUTHORIZED")
    endpoints.complete(ticket, "TRANSACTION_FAILED", error_description="the phone was lost")
    with pytest.raises(CompletionRefused) as refused:
        endpoints.complete(ticket, "AUTHORIZED", subject="alice")
    assert refused.value.result_code.startswith("A187")
    with pytest.raises(CompletionRefused):
        endpoints.complete("no-such-ticket", "ACCESS_DENIED")


def test_transaction_failed_gives_expired_token(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    auth_req_id = start(endpoints, login_hint="alice").json()["auth_req_id"]
    endpoints.complete(hooks.started[0].ticket, "TRANSACTION_FAILED")
    answer = call(endpoints.token, basic(POLL), grant_type=GRANT, auth_req_id=auth_req_id)
    assert (answer.status, answer.json()["error"]) == (400, "expired_token")


def test_a_ping_completion_goes_to_the_notifier(endpoints: CibaEndpoints, hooks: DemoHooks) -> None:
    ended: list[tuple[Notification, Attempt]] = []
    done = threading.Event()
    notifier = Notifier(resolve=lambda host, port: ["10.1.2.3"], retries=0)
    notifier.on_outcome = lambda n, a: (ended.append((n, a)), done.set())
    endpoints.notifier = notifier
    answer = start(endpoints, PING, login_hint="alice", client_notification_token="tok-123")
    assert answer.status == 200
    completion = endpoints.complete(hooks.started[0].ticket, "AUTHORIZED", subject="alice")
    assert (completion.action, completion.notified) == ("NOTIFICATION", True)
    assert done.wait(5)
    notifier.close()
    ((notification, attempt),) = ended
    assert json.loads(notification.body) == {"auth_req_id": answer.json()["auth_req_id"]}
    assert notification.token == "tok-123"
    assert notification.mode == "ping"
    assert attempt.outcome == "refused"  # a private address: nothing was sent
    assert "tok-123" not in repr(notification)


def test_a_ping_completion_without_a_notifier_is_logged(
    endpoints: CibaEndpoints, hooks: DemoHooks, caplog: pytest.LogCaptureFixture
) -> None:
    start(endpoints, PING, login_hint="alice", client_notification_token="tok-123")
    assert endpoints.complete(hooks.started[0].ticket, "ACCESS_DENIED").notified is False
    assert "no notifier is configured" in caplog.text


def test_the_family_is_required() -> None:
    from ciba_middleware import StaticTokenVerifier

    api = FailApi(store=MemoryTicketStore(), verifier=StaticTokenVerifier([]))
    with pytest.raises(ConfigurationError, match="CIBA_CLIENTS"):
        CibaEndpoints(api, SERVICE, DemoHooks())


def test_hooks_without_overrides_fail_the_request(endpoints: CibaEndpoints) -> None:
    endpoints.hooks = Hooks()
    answer = start(endpoints, login_hint="alice")
    assert (answer.status, answer.json()["error"]) == (500, "server_error")


@pytest.mark.parametrize(
    ("policy", "message", "allowed"),
    [
        pytest.param(BindingMessagePolicy(), "Pay 12 EUR #A7", True, id="plain"),
        pytest.param(BindingMessagePolicy(), "Überweisung 12 € an Café Zürich", True, id="non-ascii"),
        pytest.param(BindingMessagePolicy(), "x" * 64, True, id="at-limit"),
        pytest.param(BindingMessagePolicy(), "x" * 65, False, id="too-long"),
        pytest.param(BindingMessagePolicy(), "", False, id="empty"),
        pytest.param(BindingMessagePolicy(), "a\u202eb", False, id="bidi-override"),
        pytest.param(BindingMessagePolicy(), "tab\there", False, id="tab"),
        pytest.param(BindingMessagePolicy(max_length=20, pattern=r"[a-zA-Z0-9\-._+/!?#]+"), "Café", False, id="strict"),
        pytest.param(
            BindingMessagePolicy(max_length=20, pattern=r"[a-zA-Z0-9\-._+/!?#]+"), "A-7", True, id="strict-ok"
        ),
    ],
)
def test_binding_message_policy(policy: BindingMessagePolicy, message: str, allowed: bool) -> None:
    assert policy.allows(message) is allowed


def test_binding_message_policy_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_length"):
        BindingMessagePolicy(max_length=0)
    with pytest.raises(ValueError):
        BindingMessagePolicy(pattern="(")


def test_a_fail_function_of_the_apps_own(api: FailApi, hooks: DemoHooks) -> None:
    """``fail``: the app fails tickets its own way (over HTTP, say); its answer reaches the client."""
    failed: list[tuple[str, Reason, str | None]] = []

    def fail(ticket: str, reason: Reason, description: str | None) -> dict[str, str]:
        failed.append((ticket, reason, description))
        api.fail(SERVICE, ticket, reason, description)
        return {"action": "FORBIDDEN", "responseContent": '{"error":"access_denied"}'}

    endpoints = CibaEndpoints(api, SERVICE, hooks, fail=fail)
    answer = start(endpoints, login_hint="nobody")
    assert (answer.status, answer.json()) == (403, {"error": "access_denied"})
    assert [(reason, description) for _, reason, description in failed] == [
        (Reason.UNKNOWN_USER_ID, "No user matches the hint.")
    ]
