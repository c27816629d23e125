"""Training-data lineage (registry/lineage.py): a real git + DVC repository made with the dvc CLI,
read back without the dvc package; plain files and folders outside DVC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from modelport.errors import InvalidInput
from modelport.registry import lineage
from modelport.registry.lineage import remote_url, training_data_lineage
from tests.conftest import FEATURES, invoke_cli

DVC = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
pytestmark = pytest.mark.skipif(not Path(DVC).exists(), reason="the dvc CLI is not installed (dev extra)")

_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "DVC_NO_ANALYTICS": "1",
}


def _run(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, env=_ENV, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> Path:
    """git + dvc: data.csv added with `dvc add`, prepared.csv the output of a `dvc repro` stage, a
    default remote whose URL carries credentials, one commit."""
    root = tmp_path_factory.mktemp("dvc-repo")
    _run(root, "git", "init", "-q")
    _run(root, DVC, "init", "-q")
    data.to_csv(root / "data.csv", index=False)
    _run(root, DVC, "add", "-q", "data.csv")
    _run(
        root, DVC, "remote", "add", "-d", "storage", "https://alice:s3cret@dvc.example.com:8443/store?token=x"
    )
    _run(root, DVC, "remote", "add", "backup", str(tmp_path_factory.mktemp("dvc-remote")))
    command = f"{sys.executable} -c \"import shutil; shutil.copy('data.csv', 'prepared.csv')\""
    _run(root, DVC, "stage", "add", "-q", "-n", "prepare", "-d", "data.csv", "-o", "prepared.csv", command)
    _run(root, DVC, "repro", "-q")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", "data")
    return root


def _recorded(dvc_file: Path, path: str) -> dict[str, Any]:
    document = yaml.safe_load(dvc_file.read_text())
    outs = document["outs"] if "outs" in document else document["stages"]["prepare"]["outs"]
    return next(o for o in outs if o["path"] == path)


def test_a_dvc_added_file_records_hash_remote_and_revision(repo: Path) -> None:
    recorded = training_data_lineage(repo / "data.csv")
    assert recorded is not None
    dvc = recorded["dvc"]
    assert recorded["path"] == "data.csv"
    assert dvc["tracked_by"] == "data.csv.dvc"
    assert dvc["md5"] == _recorded(repo / "data.csv.dvc", "data.csv")["md5"]
    assert dvc["hash"] == "md5" and dvc["size"] == (repo / "data.csv").stat().st_size
    assert dvc["workspace_matches"] is True
    # the default remote, without user, password or query string
    assert dvc["remote"] == {"name": "storage", "url": "https://dvc.example.com:8443/store"}
    assert "s3cret" not in json.dumps(recorded)
    assert dvc["repo_rev"] == _run(repo, "git", "rev-parse", "HEAD")
    assert len(recorded["sha256"]) == 64


def test_a_stage_output_is_found_in_dvc_lock(repo: Path) -> None:
    recorded = training_data_lineage(repo / "prepared.csv")
    assert recorded is not None
    assert recorded["dvc"]["tracked_by"] == "dvc.lock"
    assert recorded["dvc"]["md5"] == _recorded(repo / "dvc.lock", "prepared.csv")["md5"]


def test_data_not_pulled_and_changed_data_are_told_apart(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    (copy / "data.csv").unlink()  # as in a fresh clone before `dvc pull`
    absent = training_data_lineage(copy / "data.csv")
    assert absent is not None and absent["present"] is False
    assert absent["dvc"]["md5"] == _recorded(repo / "data.csv.dvc", "data.csv")["md5"]
    (copy / "data.csv").write_text("changed\n")
    changed = training_data_lineage(copy / "data.csv")
    assert changed is not None and changed["dvc"]["workspace_matches"] is False


def test_register_records_it_and_show_prints_it(
    repo: Path, tmp_path: Path, data: pd.DataFrame, sklearn_model: Any
) -> None:
    import skops.io

    home = tmp_path / "home"
    assert invoke_cli(home, "init").returncode == 0
    skops.io.dump(sklearn_model, tmp_path / "model.skops")
    data.head(200).to_csv(tmp_path / "sample.csv", index=False)
    args = ("register", "credit", str(tmp_path / "model.skops"), "--sample", str(tmp_path / "sample.csv"))
    done = invoke_cli(home, *args, "--target", "label", "--training-data", str(repo / "data.csv"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lineage"]["training_data"]["dvc"]["remote"]["name"] == "storage"
    shown = invoke_cli(home, "show", "credit@1")
    assert shown.returncode == 0, shown.stderr
    # the table wraps long cells: compare without spaces and borders
    text = "".join(shown.stdout.split()).replace("│", "").replace("|", "")
    assert "data.csvsha256:" in text and "dvcmd5:" in text and "(data.csv.dvc),remotestorage" in text


def test_outside_dvc_a_file_or_folder_is_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    pd.DataFrame({FEATURES[0]: [1.0, 2.0]}).to_csv(folder / "a.csv", index=False)
    (folder / "b.csv").write_text("x\n1\n")
    monkeypatch.chdir(tmp_path)
    one = training_data_lineage(folder / "a.csv")
    assert one is not None and one["path"] == "data/a.csv" and "dvc" not in one and len(one["sha256"]) == 64
    whole = training_data_lineage(folder)
    assert whole is not None and whole["files"] == 2
    (folder / "b.csv").write_text("x\n2\n")
    assert training_data_lineage(folder)["sha256"] != whole["sha256"]  # type: ignore[index]
    monkeypatch.setattr(lineage, "MAX_DIRECTORY_FILES", 1)
    with pytest.raises(InvalidInput, match="more than 1 files"):
        training_data_lineage(folder)
    with pytest.raises(InvalidInput, match="does not exist"):
        training_data_lineage(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://bucket/path", "s3://bucket/path"),
        ("https://user:pw@host/p?sig=abc#f", "https://host/p"),
        ("ssh://git@host:2222/data", "ssh://host:2222/data"),
        ("/mnt/remote", "/mnt/remote"),
    ],
)
def test_remote_urls_lose_credentials(url: str, shown: str) -> None:
    assert remote_url(url) == shown
