"""Deliveries: signed, retried, dead-lettered, filtered, claimed once — against a real receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import pytest

from modelport.errors import InvalidInput, NotFound
from modelport.events.dispatch import Dispatcher, sign
from modelport.events.store import Delivery, WebhookStore
from modelport.registry.service import Registry
from tests.conftest import until
from tests.events.conftest import Receiver


def _change(registry: Registry, action: str = "alias.set", target: str = "credit@production") -> None:
    registry.store.append_audit("local:test", action, target, after={"version": 2})


def _verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


T = TypeVar("T")


def _drive(dispatcher: Dispatcher, check: Callable[[], T]) -> T:
    def step() -> T:
        dispatcher.tick()
        return check()

    result: T = until(step, interval=0.02)
    return result


def test_a_change_is_delivered_signed(events_registry: Registry, receiver: Receiver) -> None:
    store = WebhookStore(events_registry.store)
    subscription, secret = store.create(url=receiver.url, actor="local:test")
    _change(events_registry)
    dispatcher = Dispatcher(events_registry)
    _drive(dispatcher, receiver.events)
    got = receiver.events()[0]
    assert got.headers["x-modelport-event"] == "alias.set"
    assert got.headers["x-modelport-delivery"].startswith("dlv_")
    assert _verify(secret, got.headers["x-modelport-signature"], got.body)
    assert not _verify("whsec_wrong", got.headers["x-modelport-signature"], got.body)
    event = json.loads(got.body)
    assert event["action"] == "alias.set" and event["target"] == "credit@production"
    assert event["after"] == {"version": 2} and len(event["hash"]) == 64 and event["actor"] == "local:test"
    (delivery,) = store.deliveries(subscription.id)
    assert delivery.status == "delivered" and delivery.history[0].status_code == 200
    assert (
        sign(secret, 1, b"{}") == "t=1,v1=" + hmac.new(secret.encode(), b"1.{}", hashlib.sha256).hexdigest()
    )


def test_a_failing_receiver_is_retried_until_it_answers(
    events_registry: Registry, receiver: Receiver
) -> None:
    store = WebhookStore(events_registry.store)
    subscription, _ = store.create(url=receiver.url, actor="local:test")
    receiver.statuses[:] = [500, 503]
    _change(events_registry)
    dispatcher = Dispatcher(events_registry)
    _drive(dispatcher, lambda: store.deliveries(subscription.id)[0].status == "delivered")
    (delivery,) = store.deliveries(subscription.id)
    assert [a.status_code for a in delivery.history] == [500, 503, 200]
    assert [a.error for a in delivery.history] == ["HTTP 500", "HTTP 503", None]
    assert all(a.seconds >= 0 for a in delivery.history)
    ids = {r.headers["x-modelport-delivery"] for r in receiver.events()}
    assert ids == {delivery.id}  # one delivery id across its attempts: receivers deduplicate on it


def test_after_max_attempts_a_delivery_is_dead_and_can_be_retried(
    events_registry: Registry, receiver: Receiver
) -> None:
    store = WebhookStore(events_registry.store)
    subscription, _ = store.create(url=receiver.url, actor="local:test")
    receiver.statuses[:] = [500] * 3  # webhook_max_attempts = 3
    _change(events_registry)
    dispatcher = Dispatcher(events_registry)
    _drive(dispatcher, lambda: store.deliveries(subscription.id)[0].status == "dead")
    dead = store.deliveries(subscription.id, status="dead")[0]
    assert dead.attempts == 3 and len(receiver.events()) == 3
    for _ in range(3):
        dispatcher.tick()
    assert len(receiver.events()) == 3  # a dead letter waits
    with pytest.raises(NotFound):
        store.retry(subscription.id, "dlv_0000000000000000", actor="local:test")
    store.retry(subscription.id, dead.id, actor="local:test")

    # (the retry is audited, so this catch-all subscription also gets a webhook.retry event)
    def retried() -> list[Delivery]:
        return [d for d in store.deliveries(subscription.id, status="delivered") if d.id == dead.id]

    (again,) = _drive(dispatcher, retried)
    assert len(again.history) == 4
    with pytest.raises(InvalidInput, match="only dead letters"):
        store.retry(subscription.id, dead.id, actor="local:test")


def test_filters_pick_actions_and_models(events_registry: Registry, receiver: Receiver) -> None:
    store = WebhookStore(events_registry.store)
    aliases, _ = store.create(url=receiver.url, actions=["alias.*"], models=["credit*"], actor="local:test")
    everything, _ = store.create(url=receiver.url, actor="local:test")
    _change(events_registry, "alias.set", "credit@production")
    _change(events_registry, "alias.set", "fraud@production")
    _change(events_registry, "release.start", "credit@production")
    _change(events_registry, "key.create", "key:abcdefghijkl")
    dispatcher = Dispatcher(events_registry)
    _drive(dispatcher, lambda: len(receiver.events()) == 5)
    picked = [(d.action, d.audit_seq) for d in store.deliveries(aliases.id)]
    assert [a for a, _ in picked] == ["alias.set"]
    actions = sorted(d.action for d in store.deliveries(everything.id))
    # the second subscription's own creation record is after its cursor: it starts with what follows
    assert actions == ["alias.set", "alias.set", "key.create", "release.start"]


def test_redirects_are_not_followed(events_registry: Registry, receiver: Receiver) -> None:
    store = WebhookStore(events_registry.store)
    subscription, _ = store.create(url=receiver.url, actor="local:test")
    receiver.statuses[:] = [302, 302, 302]
    receiver.location = receiver.url.replace("/hook", "/elsewhere")
    _change(events_registry)
    _drive(Dispatcher(events_registry), lambda: store.deliveries(subscription.id)[0].status == "dead")
    assert {r.path for r in receiver.events()} == {"/hook"}
    assert store.deliveries(subscription.id)[0].history[0].error == "redirect refused"


def test_the_secret_is_never_listed_or_audited(events_registry: Registry, receiver: Receiver) -> None:
    store = WebhookStore(events_registry.store)
    subscription, secret = store.create(url=receiver.url, actor="local:test")
    store.remove(subscription.id, actor="local:test")
    store.create(url=receiver.url, actor="local:test")
    assert secret not in json.dumps([s.to_dict() for s in store.subscriptions()])
    assert secret not in repr(store.subscriptions())
    records = events_registry.store.audit_records()
    assert {"webhook.create", "webhook.remove"} <= {r.action for r in records}
    assert secret not in json.dumps([r.to_dict() for r in records], default=str)
    assert events_registry.store.verify_audit().ok


def test_two_dispatchers_never_send_one_delivery_twice(events_registry: Registry, receiver: Receiver) -> None:
    store = WebhookStore(events_registry.store)
    subscription, _ = store.create(url=receiver.url, actor="local:test")
    for i in range(30):
        _change(events_registry, "alias.set", f"credit@a{i}")
    dispatchers = [Dispatcher(events_registry), Dispatcher(events_registry)]
    done = threading.Event()
    errors: list[BaseException] = []

    def run(dispatcher: Dispatcher) -> None:
        try:
            while not done.is_set():
                dispatcher.tick()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    try:
        until(lambda: sum(d.status == "delivered" for d in store.deliveries(subscription.id)) == 30)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors
    sent = Counter(r.headers["x-modelport-delivery"] for r in receiver.events())
    assert len(sent) == 30 and set(sent.values()) == {1}


def test_a_paused_subscription_hears_nothing_and_resumes_from_now(
    events_registry: Registry, receiver: Receiver
) -> None:
    store = WebhookStore(events_registry.store)
    subscription, _ = store.create(url=receiver.url, actions=["alias.*"], actor="local:test")
    dispatcher = Dispatcher(events_registry)
    before = len(receiver.events())
    paused = store.set_enabled(subscription.id, False, actor="local:test")
    assert paused.enabled is False
    _change(events_registry)  # while paused
    dispatcher.tick()
    assert store.deliveries(subscription.id) == [] and len(receiver.events()) == before
    store.set_enabled(subscription.id, True, actor="local:test")
    dispatcher.tick()
    assert store.deliveries(subscription.id) == []  # the paused time's change is not sent later
    _change(events_registry)
    _drive(dispatcher, lambda: [d for d in store.deliveries(subscription.id) if d.status == "delivered"])
    actions = [r.action for r in events_registry.store.audit_records(target=f"webhook:{subscription.id}")]
    assert {"webhook.disable", "webhook.enable"} <= set(actions)
    with pytest.raises(NotFound):
        store.set_enabled("wh_0000000000000000", True, actor="local:test")
