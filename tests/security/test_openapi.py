"""Property-based run over the OpenAPI document (schemathesis): whatever a generated request holds, the
server answers without a 5xx and without any key's secret or digest; the document lists every route
and only routes that exist (API9, inventory)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from modelport.security.keys import hash_secret
from modelport.serving.openapi import document
from modelport.serving.rest import RestApp
from tests.security.conftest import Keyed, Keys

DOCUMENT = document(RestApp.ROUTES)
schema = schemathesis.openapi.from_dict(DOCUMENT)
EXAMPLE = {
    "name": "credit",
    "version": "1",
    "ref": "credit",
    "key": "abcdefghijkl",
    "alias": "staging",
    "change": "1",
}


def test_the_document_lists_exactly_the_routes() -> None:
    documented = {
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: EXAMPLE[m.group(1)], path))
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
    }
    app = RestApp.__new__(RestApp)
    matched = set()
    for method, path in documented:
        found = app.match(method, path)
        assert found is not None, (method, path)
        matched.add(found[0])
    assert matched == {route[2] for route in RestApp.ROUTES}


def test_the_served_document_is_the_same(keyed: Keyed, keys: Keys) -> None:
    with keyed.client(keys.consumer) as client:
        assert client.get("/openapi.json").json() == DOCUMENT
    with keyed.client() as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401


@pytest.fixture(scope="module")
def probe(keyed: Keyed) -> Iterator[httpx.Client]:
    """One client for the readiness check after every generated case (a client per check would cost
    each case ~20 ms of building an SSL context)."""
    with keyed.client() as client:
        yield client


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One session for every generated request; it ignores proxy variables (read from the environment
    on every request otherwise)."""
    with requests.Session() as shared:
        shared.trust_env = False
        yield shared


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_no_secret_in_any_answer(
    case: schemathesis.Case,  # type: ignore[type-arg]
    keyed: Keyed,
    keys: Keys,
    probe: httpx.Client,
    session: requests.Session,
) -> None:
    tokens = (keys.admin, keys.publisher, keys.consumer, keys.other)
    forbidden = [token.split("_", 2)[2] for token in tokens] + [
        hash_secret(t.split("_", 2)[2]) for t in tokens
    ]
    for token in (keys.admin, keys.consumer, None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = case.call(base_url=keyed.server.url, session=session, headers=headers, timeout=30)
        assert response.status_code < 500, (
            case.method,
            case.formatted_path,
            response.status_code,
            response.text,
        )
        text = response.text
        for secret in forbidden:
            assert secret not in text, (case.method, case.formatted_path)
        assert "Traceback" not in text
        if response.status_code >= 400 and text:
            body = response.json()
            assert isinstance(body, dict) and ("error" in body or "message" in body), text
    assert probe.get("/v2/health/ready").status_code == 200
