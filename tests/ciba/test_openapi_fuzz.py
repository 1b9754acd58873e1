"""schemathesis against the CIBA family's routes of docs/openapi.yaml, over real HTTP against
gunicorn with the family on: every answer has a documented status, content type, headers
and body, and nothing the description allows gets a 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from conftest import ROOT, SERVICE, LiveServer
from hardening._support import BASIC_OWN, BEARER_OWN
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    negative_data_rejection,
    positive_data_acceptance,
)

from ._family import family_env, signing_key

EXAMPLES = min(int(os.environ.get("CIBA_FUZZ_EXAMPLES", "40")), 2000)

schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml").exclude(path_regex=r"/fail$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("family-fuzz")
    live = LiveServer("ciba_middleware.wsgi:application", family_env(tmp, signing_key(tmp)[0]), workers=2)
    yield live
    live.stop()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_the_family_keeps_its_published_description(case: schemathesis.Case, server: LiveServer) -> None:
    authorization = BASIC_OWN if "serviceId" not in case.operation.path else BEARER_OWN
    if case.path_parameters and sum(map(ord, str(case.path_parameters.get("serviceId", "")))) % 2 == 0:
        case.path_parameters["serviceId"] = SERVICE
    response = case.call(base_url=server.url, headers={"Authorization": authorization})
    # A request the schema allows may still be refused (an unknown ticket, a wrong client):
    # the description's request schemas say what is read, not what is accepted.
    excluded = [allow_header_conformance, positive_data_acceptance, negative_data_rejection]
    case.validate_response(response, excluded_checks=excluded)
    assert response.status_code < 500, response.text
