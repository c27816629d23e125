"""Guard rails on releases, each with its reason (docs/releases.md): a canary or shadow whose signature
cannot take the alias's traffic is refused naming the differences (an audited override exists, and the
requests it then fails show why); one version cannot be both canary and shadow; the promotion gate is
checked when an approval is requested, not only when it is granted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import invoke_cli as cli
from tests.releases.conftest import INFER, audited, five_features_home
from tests.security.conftest import bearer, make_key
from tests.serving.conftest import serve_in_process

DIFFERENCE = "requests send f5, which it does not take"


@pytest.fixture
def rails_home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame, sklearn_model: object
) -> Path:
    return five_features_home(tmp_path / "home", tmp_path_factory, data, sklearn_model)


def _release(home: Path) -> object:
    shown = cli(home, "release", "status", "credit@production", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["release"]


def test_a_canary_or_shadow_that_cannot_take_the_traffic_is_refused_naming_the_differences(
    rails_home: Path,
) -> None:
    home = rails_home
    for arm in (["--canary", "4", "--weight", "15"], ["--shadow", "4"]):
        refused = cli(home, "release", "start", "credit@production", *arm)
        assert refused.returncode == 6, (arm, refused.stdout, refused.stderr)
        assert "version 4 cannot take the traffic of credit@production (version 1)" in refused.stderr
        assert DIFFERENCE in refused.stderr and "--allow-incompatible" in refused.stderr
        assert _release(home) is None
    assert [r["arm"] for r in audited(home, "alias.refused")] == ["canary", "shadow"]

    # The override goes ahead and is audited with what it let through …
    started = cli(
        home,
        "release",
        "start",
        "credit@production",
        "--canary",
        "4",
        "--weight",
        "50",
        "--allow-incompatible",
    )
    assert started.returncode == 0, started.stderr
    assert audited(home, "release.start")[-1]["allow_incompatible"] == {"canary": [DIFFERENCE]}

    # … and the refusal was right: the canary's share of the alias's ordinary requests fails with 400.
    with serve_in_process(home) as app, app.client() as http:
        answers = [http.post("/v2/models/credit/versions/production/infer", json=INFER) for _ in range(40)]
    failed = [a for a in answers if a.status_code != 200]
    assert failed and len(failed) < 40
    assert {a.status_code for a in failed} == {400}
    assert "send [rows, 5]" in failed[0].json()["error"]

    # Promoting it moves all the traffic: the override is needed again, and audited again.
    promote = cli(home, "release", "promote", "credit@production")
    assert promote.returncode == 6 and DIFFERENCE in promote.stderr
    promoted = cli(home, "release", "promote", "credit@production", "--allow-incompatible")
    assert promoted.returncode == 0, promoted.stderr
    assert audited(home, "release.promote")[-1] == {
        "version": 4,
        "allow_incompatible": {"alias": [DIFFERENCE]},
    }


def test_one_version_cannot_be_both_canary_and_shadow(rails_home: Path) -> None:
    home = rails_home
    both = cli(
        home, "release", "start", "credit@production", "--canary", "3", "--weight", "10", "--shadow", "3"
    )
    assert both.returncode == 2, (both.stdout, both.stderr)
    assert "version 3 cannot be both the canary and the shadow" in both.stderr
    assert "shadow it first (--shadow 3); then make it the canary (--canary 3 --weight P)" in both.stderr
    assert _release(home) is None
    # two different versions are meaningful: v2 answers a share, v3 is compared on the primary's answers
    started = cli(
        home, "release", "start", "credit@production", "--canary", "2", "--weight", "10", "--shadow", "3"
    )
    assert started.returncode == 0, started.stderr
    release = _release(home)
    assert isinstance(release, dict) and (release["canary"], release["shadow"]) == (2, 3)


def test_the_gate_is_checked_when_an_approval_is_requested(rails_home: Path) -> None:
    home = rails_home
    assert cli(home, "alias", "protect", "credit@production", "--require-approval").returncode == 0
    requester = {"MODELPORT_KEY": make_key(home, "publisher")}
    # v2 has no validation report and no override reason: no approver could ever let these through
    for change in (
        ["alias", "set", "credit@2", "production"],
        ["release", "start", "credit@production", "--canary", "2", "--weight", "10"],
    ):
        refused = cli(home, *change, env=requester)
        assert refused.returncode == 6, (change, refused.stdout, refused.stderr)
        assert "credit@production is protected: version 2 has no passing validation report" in refused.stderr
    assert json.loads(cli(home, "approvals", "list", "--json").stdout) == []
    assert len(audited(home, "alias.refused")) == 2 and audited(home, "approval.request") == []
    # a version that cannot take the traffic is refused at request time too
    refused = cli(
        home, "alias", "set", "credit@4", "production", "--override-reason", "ticket 7", env=requester
    )
    assert refused.returncode == 6 and DIFFERENCE in refused.stderr
    # what the gate lets through waits for the second key, as before
    asked = cli(
        home,
        "alias",
        "set",
        "credit@2",
        "production",
        "--override-reason",
        "validated offline",
        "--json",
        env=requester,
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["status"] == "pending"


def test_over_http_the_override_is_an_admins_and_the_refusal_a_409(rails_home: Path) -> None:
    home = rails_home
    publisher, admin = make_key(home, "publisher"), make_key(home, "admin")
    route = "/api/v1/models/credit/aliases/production"
    with serve_in_process(home, insecure_dev=False) as app, app.client() as http:
        refused = http.put(f"{route}/release", json={"shadow": 4}, headers=bearer(publisher))
        assert refused.status_code == 409 and DIFFERENCE in refused.json()["error"]
        forbidden = http.put(
            f"{route}/release", json={"shadow": 4, "allow_incompatible": True}, headers=bearer(publisher)
        )
        assert forbidden.status_code == 403
        wrong = http.put(route, json={"version": 4, "allow_incompatible": "yes"}, headers=bearer(admin))
        assert wrong.status_code == 400 and "true or false" in wrong.json()["error"]
        started = http.put(
            f"{route}/release", json={"shadow": 4, "allow_incompatible": True}, headers=bearer(admin)
        )
        assert started.status_code == 200, started.text
    assert audited(home, "release.start")[-1]["allow_incompatible"] == {"shadow": [DIFFERENCE]}
