"""schemathesis against docs/openapi.yaml, over real HTTP against gunicorn.

Requests are generated from the published description (valid and, with negative data,
invalid ones) and every answer is checked against it: documented status, content type,
headers and body schema, and no 5xx for what the description allows. The credentials are
the right ones for the route, so generated requests get past authentication; the service
ID in the path is generated too, which exercises the 403.

``CIBA_FUZZ_EXAMPLES`` (shared with test_fuzz.py) sets the examples per operation; the
CI profile is 40 (plus schemathesis's own coverage and example phases).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import schemathesis
import yaml
from conftest import GRANTS, ROOT, SERVICE, LiveServer
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from ._support import BASIC_OWN, BEARER_OWN, Answer, check_contract, report

EXAMPLES = min(int(os.environ.get("CIBA_FUZZ_EXAMPLES", "40")), 2000)

schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
_DESCRIPTION = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
FORM_SCHEMA = jsonschema.Draft7Validator(_DESCRIPTION["components"]["schemas"]["FailRequestForm"])

_counts: Counter[str] = Counter()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "CIBA_STORE_URL": f"sqlite:///{tmp_path_factory.mktemp('st') / 't.sqlite3'}",
        "CIBA_TOKENS": json.dumps(GRANTS),
    }
    live = LiveServer("ciba_middleware.wsgi:application", env, workers=2)
    yield live
    live.stop()
    report("schemathesis", examples_per_operation=EXAMPLES, **_counts)


def _description_gap(case: schemathesis.Case, response: Any) -> str | None:
    """Why "valid data is accepted" does not apply to this 400, if it does not.

    - A form outside FailRequestForm is not valid data, whatever schemathesis labels it.
    - FailRequestForm allows additional properties of any type, so an array or object is
      sent as repeated form fields, which the middleware rejects ("a field given twice is a
      400").
    - errorUri's pattern allows any RFC 6749 character, but the contract also requires a
      URI-reference (RFC 3986 4.1).
    """
    if response.status_code != 400 or case.method != "POST" or not isinstance(case.body, dict):
        return None
    if case.media_type == "application/x-www-form-urlencoded" and not FORM_SCHEMA.is_valid(case.body):
        # Negative data, or a form schemathesis's coverage phase labels as valid although it
        # breaks the description (an errorUri outside its pattern): a 400 is right.
        return "form outside the description"
    message = response.json()["resultMessage"]
    if (
        case.media_type == "application/x-www-form-urlencoded"
        and any(isinstance(value, list | dict) for value in case.body.values())
        and message.startswith("[A185201] /backchannel/authentication/fail, the form has the field '")
        and message.endswith("' more than once.")
    ):
        return "repeated form field"
    if (
        isinstance(case.body.get("errorUri"), str)
        and message.startswith("[A185202] /backchannel/authentication/fail, 'errorUri' is ")
        and message.endswith(", which is not a URI-reference (RFC 3986 4.1).")
    ):
        return "errorUri not a URI-reference"
    return None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_the_api_keeps_its_published_description(case: schemathesis.Case, server: LiveServer) -> None:
    authorization = BASIC_OWN if "serviceId" not in case.operation.path else BEARER_OWN
    if case.path_parameters and sum(map(ord, str(case.path_parameters.get("serviceId", "")))) % 2 == 0:
        case.path_parameters["serviceId"] = SERVICE  # half the v3 calls for the token's own service
    response = case.call(base_url=server.url, headers={"Authorization": authorization})
    # The description lists GET, PUT and DELETE only to document their 405: "valid data
    # should be accepted" does not apply to them, and `Allow: POST` is right to leave them out.
    excluded = [allow_header_conformance] + ([positive_data_acceptance] if case.method != "POST" else [])
    gap = _description_gap(case, response)
    if gap is not None:
        # Not valid data, or what the description allows but the contract rejects
        # (docs/reliability.md lists both gaps): the answer is exactly the contract's 400.
        excluded.append(positive_data_acceptance)
        _counts[f"positive-data check not applicable: {gap}"] += 1
    case.validate_response(response, excluded_checks=excluded)
    # And the contract's own checks, beyond what the description can say.
    headers = [(name, value) for name, values in response.headers.items() for value in values]
    answer = Answer(response.status_code, headers, response.content)
    check_contract(answer, case.method)
    _counts[f"{case.method} {response.status_code}"] += 1
