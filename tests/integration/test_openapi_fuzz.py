"""Schemathesis against aimtp-server's own OpenAPI document, in process (ASGI).

Every operation of ``/docs/openapi.json`` gets schema-valid and schema-violating requests
generated from the document itself; each answer must be no 5xx, a documented status code
with the documented content type, body schema and headers, and schema-violating requests
must be refused. The budget is at least 1,000 requests per run, bounded in time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aimtp.settings import ServerSettings, load
from app import create_app
from tests.conftest import CONTROLLER_CALLBACK_TOKEN, TENANT_TOKENS

TENANT_TOKEN = next(iter(TENANT_TOKENS))
# Requests generated per operation that takes input; 7 such operations, so >= 1,050 a run.
EXAMPLES_PER_OPERATION = 150
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# The per-tenant rate limiter is off for the fuzzer, which sends far more than 200
# requests per second in process: with it on, most answers would be a (documented) 429
# and the handlers behind it would go untested. The limiter has its own tests.
APP = create_app(server=dataclasses.replace(load(ServerSettings), rate_limit_per_second=0))
# Unknown query parameters are ignored, as HTTP APIs conventionally do (the document does
# not forbid them), so the fuzzer does not count sending one as a request to refuse.
CONFIG = schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}})
SCHEMA = schemathesis.openapi.from_asgi("/docs/openapi.json", APP, config=CONFIG)
# Operations without any input: one request each says all there is to say.
NO_INPUT = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /docs/asyncapi.json"}
Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def _operations() -> list[Operation]:
    operations: list[Operation] = []
    for result in SCHEMA.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # a part of the document Schemathesis cannot read is a bug
        operations.append(result.ok())
    return operations


OPERATIONS = _operations()


@pytest.fixture(scope="module", autouse=True)
def _stop_app_lifespan() -> Iterator[None]:
    """Schemathesis starts the app's lifespan once; close its database pool at the end."""
    yield
    asgi.shutdown_lifespans()


def _headers(operation: Operation) -> dict[str, str]:
    # The status callback takes the Controller credential; everything else a tenant token.
    token = CONTROLLER_CALLBACK_TOKEN if operation.path.endswith("/status") else TENANT_TOKEN
    return {"Authorization": f"Bearer {token}"}


def test_document_lists_every_api_operation() -> None:
    assert {op.label for op in OPERATIONS} >= {
        "GET /v1/dags",
        "POST /v1/dags",
        "GET /v1/dags/{dag_id}",
        "POST /v1/dags/{dag_id}/cancel",
        "POST /v1/dags/{dag_id}/retry",
        "GET /v1/dags/{dag_id}/events",
        "POST /v1/dags/{dag_id}/status",
    } | NO_INPUT


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_every_answer_conforms_to_the_document(operation: Operation) -> None:
    calls: list[int] = []
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    examples = 1 if operation.label in NO_INPUT else EXAMPLES_PER_OPERATION

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case[Any]) -> None:
        response: Any = case.call_and_validate(headers=_headers(operation), checks=CHECKS)
        calls.append(response.status_code)

    fuzz()

    # The budget was really spent: every generated example reached the server.
    assert len(calls) >= examples
