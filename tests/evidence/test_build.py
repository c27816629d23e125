"""build_evidence over a real registry: what served at T1 and T2, approvals, reports, the audit file,
no secrets, deterministic bytes, and the errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from modelport.errors import InvalidInput, ModelNotFound
from modelport.evidence.build import build_evidence, parse_at
from modelport.registry.service import Registry
from tests.evidence.conftest import History

NOW = datetime(2100, 1, 1, tzinfo=UTC)  # a fixed generated_at: the same bundle twice


def _json(files: dict[str, bytes], name: str) -> dict[str, object]:
    return json.loads(files[name])  # type: ignore[no-any-return]


def test_before_the_move_production_served_v1(registry: Registry, history: History) -> None:
    bundle = build_evidence(registry, "credit", history.t1, now=NOW)
    production = bundle.summary["aliases"]["production"]
    assert production["version"] == 1 and production["release"] is None and production["approved"] is None
    assert sorted(n for n in bundle.files if n.startswith(("lineage/", "cards/"))) == [
        "cards/1.md",
        "lineage/1.json",
    ]
    assert bundle.summary["validation"]["1"]["verdict"] == "no report"
    approvals = _json(bundle.files, "approvals.json")["aliases"]["production"]  # type: ignore[index]
    # bob had approved alice's change, which was being applied (the version loaded and replayed)
    assert [(c["change"], c["status"]) for c in approvals["changes"]] == [(1, "approved")]
    assert approvals["version_approved_by"] is None


def test_at_the_canary_production_served_v2_approved_by_bob(registry: Registry, history: History) -> None:
    bundle = build_evidence(registry, "credit", history.t2, now=NOW)
    production = bundle.summary["aliases"]["production"]
    assert production["version"] == 2 and production["moved_by"] == "key:alice+key:bob"
    assert production["approved"]["requested_by"] == "key:alice"
    assert production["approved"]["approved_by"] == "key:bob"
    release = production["release"]
    assert release["canary"] == 3 and release["weight"] == 10 and release["started_by"] == "key:alice+key:bob"
    approvals = _json(bundle.files, "approvals.json")["aliases"]["production"]  # type: ignore[index]
    assert [c["status"] for c in approvals["changes"]] == [
        "applied",
        "approved",
    ]  # the canary's not yet finished
    assert approvals["release_approved_by"]["decided_by"] == "key:bob"
    for number in ("2", "3"):
        verdict = bundle.summary["validation"][number]
        assert verdict["verdict"] == "passed" and verdict["by"] == "key:ci"
    card = bundle.files["cards/2.md"].decode()
    assert "# Model card: credit@2" in card and "| passed | key:ci |" in card
    lineage = _json(bundle.files, "lineage/3.json")
    assert lineage["ref"] == "credit@3" and lineage["artifacts"]
    assert _json(bundle.files, "monitoring.json")["included"] is False
    summary = bundle.files["summary.md"].decode()
    assert "canary v3 10" in summary and "key:alice → key:bob" in summary


def test_the_audit_file_leaves_out_other_records_but_keeps_the_chain(
    registry: Registry, history: History
) -> None:
    bundle = build_evidence(registry, "credit", history.t2, now=NOW)
    lines = [json.loads(line) for line in bundle.files["audit.jsonl"].decode().splitlines()]
    full = [line for line in lines if "omitted" not in line]
    assert all(line["target"].startswith("credit@") for line in full)
    assert {"key.create"} & {line["action"] for line in full} == set()
    assert any("omitted" in line for line in lines)
    last = lines[-1]
    assert last["hash"] == bundle.manifest["audit"]["head"]
    assert last.get("action") == "release.start"  # the chain ends at T's last record
    records = registry.store.audit_records(until=history.t2)
    assert bundle.manifest["audit"]["records"] == len(records) == records[-1].seq


def test_no_secret_and_the_same_bytes_twice(registry: Registry, history: History) -> None:
    first = build_evidence(registry, "credit", history.t2, now=NOW).to_zip()
    assert build_evidence(registry, "credit", history.t2, now=NOW).to_zip() == first
    for token in (history.admin, history.consumer):
        assert token.encode() not in first
        assert token.split("_", 2)[2].encode() not in first  # not even the secret part
    assert b"credit2" not in first  # another model's record is left out


def test_errors(registry: Registry, history: History) -> None:
    with pytest.raises(ModelNotFound):
        build_evidence(registry, "nope", history.t2)
    with pytest.raises(InvalidInput, match="did not exist"):
        build_evidence(registry, "credit", history.t0)
    with pytest.raises(InvalidInput, match="future"):
        build_evidence(registry, "credit", datetime.now(UTC) + timedelta(days=1))


def test_parse_at() -> None:
    assert parse_at("2026-12-06T21:46") == datetime(2026, 12, 6, 21, 46, tzinfo=UTC)
    assert parse_at("2026-12-06T22:46+01:00") == datetime(2026, 12, 6, 21, 46, tzinfo=UTC)
    assert parse_at("2026-12-06T21:46:00Z") == datetime(2026, 12, 6, 21, 46, tzinfo=UTC)
    assert parse_at("now", now=NOW) == NOW
    with pytest.raises(InvalidInput, match="ISO 8601"):
        parse_at("yesterday")
