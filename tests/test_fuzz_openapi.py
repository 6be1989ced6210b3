"""Property-based fuzzing of the gateway with schemathesis, driven by the gateway's own
OpenAPI document, against a gateway of its own in front of the session's real Triton.

The document comes from the app factory at collection time (the same one the server
publishes at /openapi.json, which a test checks): schemathesis' lazy fixture loader
reads pytest internals that pytest 9 removed.

Bounded: a fixed number of examples per operation, derandomized (the same cases on
every run), no shrinking phase. Every response must be a non-5xx, with a status,
content type and body that the document declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.settings import Settings
from tests.fixtures.gateway import GatewayProcess, run_gateway, wait_ready

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzz_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_TRITON__URL": triton_server.grpc_url,
        "GATEWAY_MODEL__CHAT_MAX_NEW_TOKENS": "8",  # a valid chat request stays quick
        "GATEWAY_LOG_LEVEL": "warning",
    }
    with run_gateway(env, tmp_path_factory.mktemp("fuzz") / "gateway.log") as gateway:
        wait_ready(gateway.base_url)
        yield gateway


DOCUMENT = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_document_is_the_fuzzed_one(fuzz_gateway: GatewayProcess) -> None:
    assert httpx.get(f"{fuzz_gateway.base_url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_gateway_conforms_to_its_openapi_document(case: Any, fuzz_gateway: GatewayProcess) -> None:
    case.call_and_validate(base_url=fuzz_gateway.base_url, checks=CHECKS, timeout=60)
