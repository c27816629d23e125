"""The client's own retry policy (client/_retry.py) and error mapping (client/_wire.py), through
httpx.MockTransport: what is sent again, how often, after how long — and what never is."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

import modelport
from modelport import errors
from modelport.client import Retries
from modelport.client._retry import may_resend
from modelport.client._wire import error_from, retry_after_seconds

FAST = Retries(attempts=4, backoff=0.01, max_backoff=0.05, max_wait=5)
MODELS = {
    "models": [
        {
            "name": "m",
            "description": "",
            "created_at": "2026-01-01T00:00:00+00:00",
            "latest_version": 1,
            "aliases": {},
            "on_violation": "flag",
        }
    ]
}


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering each request with the next of ``answers`` (an exception is raised)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


def client(transport: httpx.MockTransport, retries: Retries = FAST) -> modelport.Client:
    return modelport.Client("http://server", key="secret-key", transport=transport, retries=retries)


def test_503_and_429_are_retried_until_an_answer() -> None:
    transport, seen = scripted(
        httpx.Response(503, json={"error": "unavailable"}),
        httpx.Response(429, json={"error": "over the rate"}, headers={"Retry-After": "0"}),
        httpx.Response(200, json=MODELS),
    )
    with client(transport) as api:
        assert [m.name for m in api.models()] == ["m"]
    assert len(seen) == 3


def test_a_change_is_retried_on_429_which_the_server_answers_before_changing_anything() -> None:
    transport, seen = scripted(httpx.Response(429, json={"error": "slow down"}), httpx.Response(200, json={}))
    with client(transport) as api:
        api.set_alias("m", "production", 1)
    assert [r.method for r in seen] == ["PUT", "PUT"]


def test_attempts_run_out_and_the_servers_error_is_raised() -> None:
    transport, seen = scripted(httpx.Response(503, json={"error": "the registry is unavailable"}))
    with client(transport) as api, pytest.raises(errors.StoreNotReady, match="registry is unavailable"):
        api.models()
    assert len(seen) == FAST.attempts


def test_retry_after_is_honoured_and_the_total_wait_is_bounded() -> None:
    transport, seen = scripted(
        httpx.Response(429, json={"error": "over"}, headers={"Retry-After": "1"}),
        httpx.Response(200, json=MODELS),
    )
    started = time.monotonic()
    with client(transport) as api:
        api.models()
    assert 1.0 <= time.monotonic() - started < 2 and len(seen) == 2
    # a wait longer than the budget is not started: the error comes at once, with the server's hint
    transport, seen = scripted(httpx.Response(429, json={"error": "over"}, headers={"Retry-After": "30"}))
    started = time.monotonic()
    with client(transport, Retries(max_wait=5)) as api, pytest.raises(errors.RateLimited) as refused:
        api.models()
    assert time.monotonic() - started < 1 and len(seen) == 1 and refused.value.retry_after == 30


@pytest.mark.parametrize("status", [400, 404, 409, 500])
def test_other_errors_are_never_retried(status: int) -> None:
    transport, seen = scripted(httpx.Response(status, json={"error": "no"}))
    with client(transport) as api, pytest.raises(errors.ModelportError):
        api.models()
    assert len(seen) == 1


def test_transport_errors_resend_only_what_cannot_have_been_applied() -> None:
    request = httpx.Request("POST", "http://server")
    # nothing was sent: any method again
    refused = httpx.ConnectError("refused", request=request)
    transport, seen = scripted(refused, httpx.Response(200, json={}))
    with client(transport) as api:
        api.set_alias("m", "production", 1)
    assert len(seen) == 2
    # the request may have arrived: a GET again, a POST/PUT never
    timeout = httpx.ReadTimeout("no answer", request=request)
    transport, seen = scripted(timeout, httpx.Response(200, json=MODELS))
    with client(transport) as api:
        api.models()
    assert len(seen) == 2
    transport, seen = scripted(timeout, httpx.Response(200, json={}))
    with client(transport) as api, pytest.raises(httpx.ReadTimeout):
        api.set_alias("m", "production", 1)
    assert len(seen) == 1
    assert may_resend("DELETE", httpx.PoolTimeout("busy", request=request))
    assert not may_resend("DELETE", httpx.RemoteProtocolError("dropped", request=request))


def test_the_async_client_follows_the_same_policy() -> None:
    answers = iter([httpx.Response(503, json={"error": "x"}), httpx.Response(200, json=MODELS)])
    seen: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    async def main() -> None:
        transport = httpx.MockTransport(handle)
        async with modelport.AsyncClient("http://server", transport=transport, retries=FAST) as api:
            assert [m.name for m in await api.models()] == ["m"]

    asyncio.run(main())
    assert len(seen) == 2


def test_retry_after_in_both_forms() -> None:
    now = time.time()
    assert retry_after_seconds("7", now) == 7
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=90), usegmt=True)
    assert 88 <= (retry_after_seconds(date, now) or 0) <= 91
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": "bad"}, errors.InvalidInput),
        (401, {"error": "no key"}, errors.Unauthenticated),
        (403, {"error": "no"}, errors.Forbidden),
        (404, {"error": "no model named 'x'"}, errors.ModelNotFound),
        (404, {"error": "model 'x' has no version 9"}, errors.VersionNotFound),
        (404, {"error": "model 'x' has no alias 'y'"}, errors.AliasNotFound),
        (404, {"error": "no route: GET /x"}, errors.NotFound),
        (409, {"error": "clash"}, errors.Conflict),
        (413, {"error": "too big"}, errors.InvalidInput),
        (415, {"error": "json only"}, errors.UnsupportedMediaType),
        (503, {"error": "later"}, errors.StoreNotReady),
        (504, {"error": "slow"}, errors.ScoringTimeout),
        (409, {"error": "gate", "type": "PromotionRefused"}, errors.PromotionRefused),  # a named type wins
        (418, {"error": "teapot", "type": "NoSuchClass"}, errors.ModelportError),
        (400, {"error_code": "BAD_REQUEST", "message": "mlflow shape"}, errors.InvalidInput),
    ],
)
def test_answers_map_to_the_servers_error_classes(status: int, body: dict[str, str], kind: type) -> None:
    import orjson

    error = error_from(status, orjson.dumps(body), None)
    assert type(error) is kind
    assert str(error) == body.get("error", body.get("message"))


def test_a_rate_limit_carries_its_wait_and_no_message_holds_the_key() -> None:
    transport, _ = scripted(httpx.Response(429, text="<html>busy</html>", headers={"Retry-After": "3"}))
    api = client(transport, Retries(attempts=1))
    with api, pytest.raises(errors.RateLimited) as refused:
        api.models()
    assert refused.value.retry_after == 3 and str(refused.value) == "<html>busy</html>"
    assert "secret-key" not in repr(api) and "secret-key" not in repr(refused.value)


def test_retries_are_checked_and_waits_double_up_to_their_cap() -> None:
    with pytest.raises(ValueError):
        Retries(attempts=0)
    policy = Retries(attempts=4, backoff=1, max_backoff=2)
    waits = [policy.wait(attempt, 0) for attempt in (1, 2, 3, 4)]
    assert waits[3] is None  # four attempts in all
    for wait, step in zip(waits[:3], (1, 2, 2), strict=True):
        assert wait is not None and step / 2 <= wait <= step
