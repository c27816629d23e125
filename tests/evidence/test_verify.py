"""tools/verify_evidence.py: a bundle verifies with the standard library alone; one changed byte —
anywhere in the zip, or in a file re-zipped by someone who fixed what they could — fails it."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from modelport.evidence.build import build_evidence
from modelport.evidence.bundle import Bundle, zip_files
from modelport.registry.service import Registry
from tests.evidence.conftest import History

TOOL = Path(__file__).parents[2] / "tools" / "verify_evidence.py"
PYTHON = shutil.which("python3") or sys.executable
# -I: isolated (no environment, no script folder, no user site); -S: no site-packages either, so not
# even a virtual environment's modelport can be imported — the standard library alone
ISOLATED = [PYTHON, "-I", "-S"]


@pytest.fixture(scope="module")
def verifier() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_evidence", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bundle(registry: Registry, history: History) -> Bundle:
    return build_evidence(registry, "credit", history.t2, now=datetime(2100, 1, 1, tzinfo=UTC))


def _run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ISOLATED, str(TOOL), str(path), *args], capture_output=True, text=True, cwd=path.parent, timeout=60
    )


def test_verified_by_the_standard_library_alone(bundle: Bundle, tmp_path: Path) -> None:
    proof = subprocess.run([*ISOLATED, "-c", "import modelport"], capture_output=True, text=True)
    assert proof.returncode != 0 and "No module named 'modelport'" in proof.stderr
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle.to_zip())
    done = _run(path, "--manifest-sha256", bundle.manifest_sha256)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("verified:") and bundle.manifest["audit"]["head"] in done.stdout
    wrong = _run(path, "--manifest-sha256", "0" * 64)
    assert wrong.returncode == 1 and "the manifest's SHA-256" in wrong.stdout
    source = TOOL.read_text()
    assert len(source.splitlines()) <= 150
    imported = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported <= {"__future__", "argparse", "hashlib", "io", "json", "sys", "typing", "zipfile"}


def test_one_flipped_byte_anywhere_fails(bundle: Bundle, verifier: ModuleType) -> None:
    data = bundle.to_zip()
    assert verifier.verify(data, bundle.manifest_sha256).startswith("verified")
    step = max(1, len(data) // 1500)  # ~1,500 positions spread over every header and file
    for position in [*range(0, len(data), step), len(data) - 1]:
        changed = bytearray(data)
        changed[position] ^= 0x01
        with pytest.raises(verifier.Failure):
            verifier.verify(bytes(changed), bundle.manifest_sha256)


def _edit(files: dict[str, bytes], name: str, old: bytes, new: bytes) -> dict[str, bytes]:
    assert old in files[name], name
    return {**files, name: files[name].replace(old, new, 1)}


def _fix_manifest(files: dict[str, bytes], name: str) -> dict[str, bytes]:
    """What a careful tamperer does next: the manifest's digest and size of the changed file."""
    manifest = json.loads(files["manifest.json"])
    manifest["files"][name] = {"sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}
    return {**files, "manifest.json": json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n"}


def test_rezipped_changes_fail(bundle: Bundle, tmp_path: Path) -> None:
    files = dict(bundle.files)
    path = tmp_path / "changed.zip"

    def outcome(changed: dict[str, bytes], *args: str) -> str:
        path.write_bytes(zip_files(changed))
        done = _run(path, *args)
        assert done.returncode == 1, done.stdout
        return done.stdout

    # a file's content: its digest no longer matches
    assert "summary.md does not match its SHA-256" in outcome(_edit(files, "summary.md", b"v2", b"v1"))
    # the audit trail, digest fixed up: the chain does not recompute
    lines = files["audit.jsonl"].decode().splitlines()
    moved = next(line for line in lines if '"alias.set"' in line and '"version":2' in line)
    edited = _fix_manifest(
        _edit(files, "audit.jsonl", moved.encode(), moved.replace('"version":2', '"version":3').encode()),
        "audit.jsonl",
    )
    assert "was changed: its hash does not recompute" in outcome(edited)
    # a record dropped: the next one does not follow
    dropped = _fix_manifest(_edit(files, "audit.jsonl", moved.encode() + b"\n", b""), "audit.jsonl")
    assert "where record" in outcome(dropped)
    # the manifest itself: the recorded digest catches what nothing inside can
    manifest = _edit(files, "manifest.json", b'"at": "', b'"at": "1')
    assert "not the recorded" in outcome(manifest, "--manifest-sha256", bundle.manifest_sha256)
    head = bundle.manifest["audit"]["head"]
    assert "the manifest says" in outcome(
        _edit(
            files,
            "manifest.json",
            head.encode(),
            (head[:-1] + "0").encode() if head[-1] != "0" else (head[:-1] + "1").encode(),
        )
    )
    # a file added, a file taken away
    assert "not in the manifest" in outcome({**files, "extra.txt": b"hello"})
    assert "not in the zip" in outcome({k: v for k, v in files.items() if k != "cards/2.md"})


def test_the_zip_is_canonical(bundle: Bundle) -> None:
    archive = zipfile.ZipFile(io.BytesIO(bundle.to_zip()))
    names = [info.filename for info in archive.infolist()]
    assert names == sorted(names) and "manifest.json" in names
    assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
