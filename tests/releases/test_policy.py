"""How a request picks its arm (releases/policy.py), as the pure function it is: the canary takes its
weight of many requests, a sticky release sends each key to one arm for good, keyless requests go to
the primary. The same split on a real two-worker server, with fewer requests: tests/releases/test_traffic.py."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from modelport.releases.policy import CANARY, PRIMARY, UNKEYED, Release, Sticky

REQUESTS = 200_000


def _binomial_bound(weight: float, n: int) -> float:
    """Five standard deviations of the share of ``n`` draws with probability ``weight`` % (a false
    alarm once in about 1.7 million runs)."""
    p = weight / 100
    return 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("weight", [0.25, 2.5, 10.0, 50.0, 99.75])
def test_the_canary_takes_its_weight_of_requests(weight: float) -> None:
    release = Release("r1", 1, canary=2, weight=weight)
    arms = Counter(release.arm("credit", "production", None) for _ in range(REQUESTS))
    assert set(arms) <= {PRIMARY, CANARY} and arms[CANARY] > 0 and arms[PRIMARY] > 0
    share = arms[CANARY] / REQUESTS
    assert abs(share - weight / 100) <= _binomial_bound(weight, REQUESTS), share
    assert release.version_of(CANARY) == 2 and release.version_of(PRIMARY) == 1


@pytest.mark.parametrize("weight", [1.0, 10.0, 50.0, 90.0])
def test_a_sticky_release_sends_each_key_to_one_arm_for_good(weight: float) -> None:
    release = Release("r1", 1, canary=2, weight=weight, sticky=Sticky("header", "x-customer"))
    keys = [f"customer-{i}" for i in range(50_000)]
    first = {key: release.arm("credit", "production", key) for key in keys}
    # the same key, asked again (any worker, any time, a new Release object read from the store)
    again = Release("r1", 1, canary=2, weight=weight, sticky=Sticky("header", "x-customer"))
    assert all(again.arm("credit", "production", key) == arm for key, arm in first.items())
    assert all(release.arm("credit", "production", key) == arm for key, arm in first.items())
    share = sum(arm == CANARY for arm in first.values()) / len(keys)
    assert abs(share - weight / 100) <= _binomial_bound(weight, len(keys)), share


def test_a_restart_keeps_every_key_on_its_arm_and_a_new_canary_reshuffles() -> None:
    sticky = Sticky("field", "f0")
    keys = [str(float(i)) for i in range(20_000)]
    release = Release("r1", 1, canary=2, weight=50.0, sticky=sticky)
    restarted = Release("r2", 1, canary=2, weight=50.0, sticky=sticky)
    assert [release.arm("credit", "production", k) for k in keys] == [
        restarted.arm("credit", "production", k) for k in keys
    ]
    # another canary, alias or model draws afresh: about half the keys change arm
    for other in (
        [Release("r3", 1, canary=3, weight=50.0, sticky=sticky).arm("credit", "production", k) for k in keys],
        [release.arm("credit", "staging", k) for k in keys],
        [release.arm("fraud", "production", k) for k in keys],
    ):
        moved = sum(
            a != b for a, b in zip(other, (release.arm("credit", "production", k) for k in keys), strict=True)
        )
        assert 0.45 <= moved / len(keys) <= 0.55, moved


def test_a_growing_weight_only_moves_keys_to_the_canary() -> None:
    sticky = Sticky("header", "x-customer")
    keys = [f"c{i}" for i in range(20_000)]
    small = Release("r1", 1, canary=2, weight=10.0, sticky=sticky)
    large = Release("r2", 1, canary=2, weight=30.0, sticky=sticky)
    for key in keys:
        if small.arm("credit", "production", key) == CANARY:
            assert large.arm("credit", "production", key) == CANARY, key


def test_keyless_and_canaryless_requests_go_to_the_primary() -> None:
    sticky = Release("r1", 1, canary=2, weight=99.0, sticky=Sticky("header", "x-customer"))
    assert {sticky.arm("credit", "production", None) for _ in range(1_000)} == {UNKEYED}
    assert sticky.version_of(UNKEYED) == 1
    shadow_only = Release("r1", 1, shadow=3)
    assert {shadow_only.arm("credit", "production", k) for k in (None, "a", "b")} == {PRIMARY}
    assert shadow_only.version_of(CANARY) == 1  # no canary: every arm is the primary's version
