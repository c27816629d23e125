"""Property-based run over the OpenAPI document (schemathesis): whatever a generated request holds, the
server answers without a 5xx and without any key's secret or digest; the document lists every route
and only routes that exist (API9, inventory). The keyed app in this process answers: the requests are
the bytes `requests` would put on a socket, handed to the app without one."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import requests.adapters
import schemathesis
import urllib3
from hypothesis import HealthCheck, settings

from modelport.security.keys import hash_secret
from modelport.serving.openapi import document
from modelport.serving.rest import RestApp
from tests.security.conftest import Keys
from tests.serving.conftest import InProcess

DOCUMENT = document(RestApp.ROUTES)
schema = schemathesis.openapi.from_dict(DOCUMENT)
EXAMPLE = {
    "name": "credit",
    "version": "1",
    "ref": "credit",
    "key": "abcdefghijkl",
    "alias": "staging",
    "change": "1",
    "job": "job-0123456789ab",
    "webhook": "wh_0123456789abcdef",
    "delivery": "dlv_0123456789abcdef",
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


def test_the_served_document_is_the_same(keyed_app: InProcess, keys: Keys) -> None:
    with keyed_app.client(keys.consumer) as client:
        assert client.get("/openapi.json").json() == DOCUMENT
    with keyed_app.client() as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401


@pytest.fixture(scope="module")
def probe(keyed_app: InProcess) -> Iterator[httpx.Client]:
    """One client for the readiness check after every generated case."""
    with keyed_app.client() as client:
        yield client


class InProcessAdapter(requests.adapters.HTTPAdapter):
    """A `requests` transport adapter that hands each request, as `requests` prepared it (method, URL,
    headers and body bytes), to the app in this process, and builds the `requests` response from the
    app's answer as it does from a socket's."""

    def __init__(self, app: InProcess) -> None:
        super().__init__()
        self._transport = app.transport

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        assert request.method is not None and request.url is not None
        body = request.body.encode() if isinstance(request.body, str) else request.body or b""
        assert isinstance(body, bytes), "a generated body is always whole, never a stream"
        headers = [
            (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
            for name, value in request.headers.items()
        ]
        timeout = kwargs.get("timeout") or 30
        read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
        answer = self._transport.handle_request(
            httpx.Request(
                request.method,
                request.url,
                headers=headers,
                content=body,
                extensions={"timeout": {"read": read_timeout}},
            )
        )
        answered = urllib3.HTTPHeaderDict()
        for name, value in answer.headers.multi_items():
            answered.add(name, value)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.content),  # the app compresses nothing: as sent
            headers=answered,
            status=answer.status_code,
            version=11,
            reason=answer.reason_phrase,
            preload_content=False,
        )
        return self.build_response(request, raw)


@pytest.fixture(scope="module")
def session(keyed_app: InProcess) -> Iterator[requests.Session]:
    """One session for every generated request, answered by the app in this process; it ignores proxy
    variables (read from the environment on every request otherwise)."""
    with requests.Session() as shared:
        shared.trust_env = False
        shared.mount("http://", InProcessAdapter(keyed_app))
        shared.mount("https://", InProcessAdapter(keyed_app))
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
    keyed_app: InProcess,
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
        response = case.call(base_url=keyed_app.url, session=session, headers=headers, timeout=30)
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
