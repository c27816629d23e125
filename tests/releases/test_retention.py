"""Retention: `gc` never archives a version an alias points to, or pointed to within D days — a property
tested with hypothesis against a brute-force oracle, then on a real registry (blobs freed, records kept,
archived versions refused everywhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.app import open_registry
from modelport.errors import InvalidInput, VersionArchived
from modelport.releases.retention import AliasState, RetentionPolicy, archivable
from modelport.settings import Settings
from tests.conftest import invoke_cli as cli
from tests.releases.conftest import INFER
from tests.serving.conftest import serve_in_process

DAY = 86_400.0
NOW = 1_000 * DAY


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[AliasState], set[int], RetentionPolicy]:
    count = draw(st.integers(1, 12))
    versions = list(range(1, count + 1))
    history: list[AliasState] = []
    for alias in draw(
        st.lists(st.sampled_from(["production", "staging", "canary-test"]), max_size=3, unique=True)
    ):
        times = sorted(draw(st.lists(st.floats(NOW - 400 * DAY, NOW), min_size=1, max_size=8)))
        for at in times:
            pointed = draw(st.frozensets(st.sampled_from(versions), max_size=3))
            history.append(AliasState(alias, at, pointed))
    pinned = draw(st.sets(st.sampled_from(versions), max_size=3))
    policy = RetentionPolicy(
        keep_last=draw(st.integers(1, 5)),
        keep_days=draw(st.floats(0, 365)),
        legal_hold=draw(st.booleans()),
    )
    return versions, history, pinned, policy


def pointed_within(version: int, history: list[AliasState], horizon: float) -> bool:
    """Brute force: sample every moment that matters in [horizon, now] — each row's start, the horizon
    itself and now — and ask which row of each alias was in force then."""
    moments = {horizon, NOW} | {row.at for row in history if row.at >= horizon}
    for moment in moments:
        for alias in {row.alias for row in history}:
            # rows in the order they were written; of two at the same instant, the later one holds
            in_force = sorted((r for r in history if r.alias == alias and r.at <= moment), key=lambda r: r.at)
            if in_force and version in in_force[-1].versions:
                return True
    return False


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_gc_never_archives_what_an_alias_points_to_or_pointed_to_within_the_window(
    scenario: tuple[list[int], list[AliasState], set[int], RetentionPolicy],
) -> None:
    versions, history, pinned, policy = scenario
    chosen = archivable(versions, history, pinned, policy, NOW)
    horizon = NOW - policy.keep_days * DAY
    newest = set(sorted(versions)[-policy.keep_last :])
    for version in chosen:
        assert not policy.legal_hold
        assert version not in pinned and version not in newest
        assert not pointed_within(version, history, horizon), (version, history)
    # …and it archives everything else: nothing is kept without a reason.
    for version in set(versions) - set(chosen):
        assert (
            policy.legal_hold
            or version in pinned
            or version in newest
            or pointed_within(version, history, horizon)
        ), (version, policy, pinned, history)


def test_a_pointer_set_long_ago_and_moved_away_yesterday_counts() -> None:
    history = [
        AliasState("production", NOW - 300 * DAY, frozenset({1})),
        AliasState("production", NOW - DAY, frozenset({2})),
    ]
    assert archivable([1, 2, 3, 4], history, {2}, RetentionPolicy(keep_last=1, keep_days=30), NOW) == [3]
    assert archivable([1, 2, 3, 4], history, {2}, RetentionPolicy(keep_last=1, keep_days=0.5), NOW) == [1, 3]


@pytest.mark.parametrize(
    "kwargs",
    [{"keep_last": 0}, {"keep_last": -1}, {"keep_days": -1.0}, {"keep_days": math.nan}, {"keep_days": 1e9}],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def test_gc_on_a_real_registry(home: Path) -> None:
    # v1 production, v2 and v3 plain. keep_last 1 keeps v3, production keeps v1; v2 was never aliased.
    assert cli(home, "gc", "--dry-run").stdout.startswith("no model has a retention policy")
    assert cli(home, "retention", "credit", "--keep-last", "1", "--keep-days", "30").returncode == 0
    dry = cli(home, "gc", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["models"][0]["archive"] == [2]
    registry = open_registry(Settings(home=home))
    try:
        assert registry.get("credit@2").archived_at is None  # a dry run changes nothing
        blob = registry.get("credit@2").artifacts[0].digest
        assert registry.artifacts.exists(blob)
    finally:
        registry.close()

    done = cli(home, "gc", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["models"][0]["archive"] == [2] and result["freed_bytes"] > 0
    registry = open_registry(Settings(home=home))
    try:
        record = registry.get("credit@2")
        assert record.archived_at is not None and record.artifacts  # metadata kept
        assert not registry.artifacts.exists(blob)  # the artifact freed
        assert registry.artifacts.exists(registry.get("credit@1").artifacts[0].digest)
        with pytest.raises(VersionArchived):
            registry.load("credit@2")
        with pytest.raises(VersionArchived):
            registry.set_alias("credit", "staging", 2)
        assert [r.action for r in registry.store.audit_records() if r.target == "credit@2"][
            -1
        ] == "version.archive"
    finally:
        registry.close()
    moved = cli(home, "alias", "set", "credit@2", "staging")
    assert moved.returncode == 3 and "archived" in moved.stderr
    canary = cli(home, "release", "start", "credit@production", "--canary", "2", "--weight", "5")
    assert canary.returncode == 3 and "archived" in canary.stderr

    with serve_in_process(home) as app, app.client() as http:
        answer = http.post("/v2/models/credit/versions/2/infer", json=INFER)
        assert answer.status_code == 410 and "archived" in answer.json()["error"]
        assert http.post("/v2/models/credit/versions/1/infer", json=INFER).status_code == 200

    # Legal hold: nothing more is archived, whatever the other numbers say.
    assert cli(home, "alias", "set", "credit@3", "production").returncode == 0
    assert cli(home, "retention", "credit", "--legal-hold").returncode == 0
    held = json.loads(cli(home, "gc", "--json").stdout)
    assert held["models"][0]["archive"] == []


def test_gc_bad_input(home: Path) -> None:
    assert cli(home, "retention", "credit", "--keep-last", "0").returncode == 2
    assert cli(home, "retention", "credit", "--keep-days", "-3").returncode == 2
    assert cli(home, "retention", "nosuch", "--keep-last", "2").returncode == 3
    assert cli(home, "gc", "--model", "nosuch").returncode == 3
    assert cli(home, "gc", "--model", "../etc").returncode == 2
