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

import jsonschema
import pytest
import schemathesis
import yaml
from conftest import GRANTS, ROOT, SERVICE, LiveServer
from hypothesis import HealthCheck, settings
from schemathesis.generation.meta import negated_parameters
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    negative_data_rejection,
    positive_data_acceptance,
)

from ._support import BASIC_OWN, BEARER_OWN, Answer, check_contract, report

EXAMPLES = min(int(os.environ.get("CIBA_FUZZ_EXAMPLES", "40")), 2000)

# The fail API's routes; the CIBA family's are fuzzed with the family on (tests/ciba/test_openapi_fuzz.py).
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml").include(path_regex=r"/fail$")
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


def _not_valid_data(case: schemathesis.Case) -> bool:
    """Whether the body breaks the description although schemathesis may label it valid.

    schemathesis's coverage phase sometimes sends as positive data a form outside
    FailRequestForm (an errorUri outside its pattern, a repeated field): a 400 is right.
    """
    return (
        case.method == "POST"
        and case.media_type == "application/x-www-form-urlencoded"
        and isinstance(case.body, dict)
        and not FORM_SCHEMA.is_valid(case.body)
    )


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
    if response.status_code == 400 and _not_valid_data(case):
        excluded.append(positive_data_acceptance)
        _counts["form outside the description, rejected"] += 1
    if any(name.lower() == "authorization" for name, _ in negated_parameters(case.meta)):
        # A negative case that removed or broke Authorization: the test sent the right
        # credentials in its place, so the request as sent is not negative.
        excluded.append(negative_data_rejection)
        _counts["negative Authorization replaced by the test's"] += 1
    case.validate_response(response, excluded_checks=excluded)
    # And the contract's own checks, beyond what the description can say.
    headers = [(name, value) for name, values in response.headers.items() for value in values]
    answer = Answer(response.status_code, headers, response.content)
    check_contract(answer, case.method)
    _counts[f"{case.method} {response.status_code}"] += 1
