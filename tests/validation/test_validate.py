"""`modelport validate` and the promotion gate, end to end: real registry, real private servers, real
Locust; a version with tampered ground truth fails and is named; protected aliases need a passing report."""

from __future__ import annotations

import json
from pathlib import Path
from subprocess import CompletedProcess

import pandas as pd
import pytest
from sqlalchemy import update

from modelport.app import open_registry
from modelport.errors import PromotionRefused
from modelport.registry.schema import model_versions
from modelport.settings import Settings
from modelport.validation.runner import Report, validate
from tests.conftest import invoke_cli as cli
from tests.serving.conftest import registered_home


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object) -> Path:
    """``credit`` v1 (production), v2 and v3 (the session's registry of releases, copied), v3's ground
    truth tampered."""
    home = registered_home(
        "releases", tmp_path_factory.mktemp("validation") / "home", tmp_path_factory, data, sklearn_model
    )
    registry = open_registry(Settings(home=home))
    try:
        db = registry.store.db
        broken = registry.get("credit@3")
        golden = dict(broken.golden)
        outputs = dict(golden["outputs"])
        probabilities = [list(row) for row in outputs["probabilities"]]
        probabilities[2] = list(reversed(probabilities[2]))
        outputs["probabilities"] = probabilities
        golden["outputs"] = outputs
        with db.engine.begin() as conn:
            conn.execute(
                update(model_versions).where(model_versions.c.uuid == broken.uuid).values(golden=golden)
            )
    finally:
        registry.close()
    return home


@pytest.fixture(scope="module")
def validated(home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[CompletedProcess[str], Path]:
    """`modelport validate credit@production --json --report r.md`, run once for the module (a
    validation starts private servers: seconds), and the report's path."""
    report = tmp_path_factory.mktemp("validated") / "r.md"
    return cli(home, "validate", "credit@production", "--json", "--report", str(report)), report


@pytest.fixture(scope="module")
def loaded(home: Path) -> Report:
    """Every check of credit@2 and a Locust run of it (the load test's and the promotion gate's)."""
    registry = open_registry(Settings(home=home))
    try:
        return validate(registry, "credit@2", sla_p99_ms=250, load=(80.0, 2.0))
    finally:
        registry.close()


def test_a_good_version_passes_and_the_report_is_stored(
    home: Path, validated: tuple[CompletedProcess[str], Path]
) -> None:
    out, path = validated
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["passed"] and report["version"] == 1
    names = {check["name"] for check in report["checks"]}
    assert {
        "golden cases",
        "in-range",
        "boundary",
        "out-of-range",
        "missing",
        "nan-inf",
        "wrong-type",
        "empty-batch",
        "large-batch",
        "determinism",
        "online vs batch",
        "property-based",
    } <= names
    assert all(check["passed"] for check in report["checks"]), [
        c for c in report["checks"] if not c["passed"]
    ]
    assert report["latency"]["p99_us"] > 0 and report["latency"]["hottest"]
    markdown = path.read_text()
    assert markdown.startswith("# Validation of credit@1: PASSED") and "| golden cases | pass |" in markdown
    assert "machine:" in markdown
    registry = open_registry(Settings(home=home))
    try:
        (stored,) = registry.store.validation.reports("credit", 1)
        assert stored["passed"] and stored["report"]["checks"] == report["checks"]
        assert any(r.action == "validation.record" for r in registry.store.audit_records())
    finally:
        registry.close()


def test_reports_are_listed(home: Path, validated: tuple[CompletedProcess[str], Path]) -> None:
    listed = cli(home, "reports", "credit@1", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["passed"] is True
    table = cli(home, "reports", "credit@1")
    assert "passed" in table.stdout
    assert cli(home, "reports", "credit@99").returncode == 3


def test_tampered_ground_truth_fails_and_names_the_case(home: Path, tmp_path: Path) -> None:
    out = cli(home, "validate", "credit@3", "--report", str(tmp_path / "bad.md"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "golden row 2" in out.stdout
    markdown = (tmp_path / "bad.md").read_text()
    assert (
        "**FAIL**" in markdown and "## Failing cases: golden cases" in markdown and "golden row 2" in markdown
    )


def test_load_run_agrees_with_the_servers_statistics(loaded: Report) -> None:
    report = loaded
    load = report.load
    assert load is not None and load["failures"] == 0
    assert load["requests"] >= 100  # ~80/s for 2 s
    # Locust records only answered requests; the server also answers (and counts) those in flight
    # when Locust stops its users — at most one per user, the validator's own rule.
    assert 0 <= load["server_count"] - load["requests"] <= load["users"]
    assert 0 < load["server_mean_ms"] <= load["mean_ms"]
    assert next(c for c in report.checks if c.name == "load").passed
    assert "## Load (Locust" in report.markdown()


def test_the_promotion_gate(home: Path, loaded: Report) -> None:
    registry = open_registry(Settings(home=home))
    try:
        assert registry.store.protect_alias("credit", "production", actor="local:test")
        with pytest.raises(PromotionRefused, match="no passing validation report"):
            registry.set_alias("credit", "production", 2)  # never validated
        with pytest.raises(PromotionRefused):
            registry.set_alias("credit", "production", 3)  # its validation failed
        assert registry.get("credit@production").number == 1
        # an override moves it anyway, with its reason in the audit log
        moved = registry.set_alias(
            "credit", "production", 2, override_reason="hotfix approved by risk, ticket R-17"
        )
        assert moved.number == 2
        registry.set_alias("credit", "production", 1, override_reason="back to v1")
        report = loaded  # validate(registry, "credit@2"), with a load run
        assert report.passed
        registry.store.validation.add_report(
            "credit",
            2,
            passed=True,
            environment_hash=report.environment_hash,
            report=report.to_dict(),
            actor="local:test",
        )
        assert registry.set_alias("credit", "production", 2).number == 2  # validated: no reason needed
        records = registry.store.audit_records(target="credit@production")
        actions = [(r.action, (r.after or {}).get("version")) for r in records]
        assert ("alias.refused", 2) in actions and ("alias.refused", 3) in actions
        assert ("alias.set", 2) in actions
        override = [r for r in records if r.action == "alias.set" and (r.after or {}).get("override")]
        assert override and "R-17" in override[-1].after["override"]
        registry.set_alias("credit", "production", 1, override_reason="back to v1")
        with pytest.raises(PromotionRefused):
            registry.set_alias(
                "credit", "production", 3, override_reason="   "
            )  # a blank reason is no reason
    finally:
        registry.close()


def test_gate_over_the_cli_and_bad_input(home: Path) -> None:
    refused = cli(home, "alias", "set", "credit@3", "production")
    assert refused.returncode == 6 and "protected" in refused.stderr and "Traceback" not in refused.stderr
    for args, message in (
        (["validate", "credit@9"], "no version 9"),
        (["validate", "nosuch@1"], "no model named"),
        (["validate", "credit@1", "--load", "fast"], "RPS:SECONDS"),
        (["validate", "credit@1", "--load", "0:5"], "--load needs"),
        (["validate", "credit@1", "--load", "200:1.5"], "whole number of seconds"),
        (["alias", "protect", "nosuch@production"], "no model named"),
        (["alias", "protect", "credit@latest"], "latest"),
    ):
        out = cli(home, *args)
        assert out.returncode in (2, 3), (args, out.returncode, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert cli(home, "alias", "unprotect", "credit@production").returncode == 0
    assert cli(home, "alias", "set", "credit@2", "production").returncode == 0


def test_the_gate_over_the_management_api(home: Path) -> None:
    from modelport.security.store import KeyStore
    from tests.serving.conftest import serve_in_process

    registry = open_registry(Settings(home=home))
    try:
        keys = KeyStore(registry.store)
        publisher = keys.create(name="pub", role="publisher", actor="local:test")
        admin = keys.create(name="adm", role="admin", actor="local:test")
        assert publisher is not None and admin is not None
        registry.store.protect_alias("credit", "production", actor="local:test")
        current = registry.get("credit@production").number
    finally:
        registry.close()
    target = 3 if current != 3 else 2
    try:
        with serve_in_process(home, insecure_dev=False) as app, app.client() as http:
            path = "/api/v1/models/credit/aliases/production"
            pub = {"Authorization": f"Bearer {publisher[1]}"}
            adm = {"Authorization": f"Bearer {admin[1]}"}
            refused = http.put(path, json={"version": 2}, headers=pub)
            assert refused.status_code in (200, 409)  # v2 may carry a passing report from the gate test
            unvalidated = http.put(path, json={"version": 3}, headers=pub)
            assert unvalidated.status_code == 409 and "protected" in unvalidated.json()["error"]
            assert http.put(path, json={"version": 2, "override_reason": "x"}, headers=pub).status_code == 403
            forced = http.put(path, json={"version": 2, "override_reason": "risk sign-off R-9"}, headers=adm)
            assert forced.status_code == 200, forced.text
    finally:
        registry = open_registry(Settings(home=home))
        try:
            registry.store.protect_alias("credit", "production", actor="local:test", protect=False)
        finally:
            registry.close()
    assert target in (2, 3)
