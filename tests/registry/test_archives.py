"""Hostile skops archives (registry/archives.py): a zip bomb, members that climb out of a folder, links,
encrypted members, duplicate names and too many members are refused from the central directory, before
skops inflates a byte — through registration, which leaves nothing behind. A pickle named ``.skops`` is
never unpickled."""

from __future__ import annotations

import io
import pickle
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from modelport.errors import UnknownFormat, UnsafeFormat
from modelport.registry.archives import ArchiveLimits, check_zip
from modelport.registry.service import Registry
from tests.registry.test_hostile_models import _blobs
from tests.security.test_attacks import Canary

FRAME = pd.DataFrame(np.random.default_rng(1).normal(size=(120, 3)), columns=["a", "b", "c"])


@pytest.fixture(scope="module")
def genuine() -> bytes:
    model = LogisticRegression().fit(FRAME, np.where(FRAME["a"] > 0, "hi", "lo"))
    return bytes(skops.io.dumps(model))


def _with(archive: bytes, info: zipfile.ZipInfo, data: bytes) -> bytes:
    """``archive`` with one more member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        for member in source.infolist():
            target.writestr(member, source.read(member))
        with warnings.catch_warnings():  # the duplicate-name case is the point of one test
            warnings.simplefilter("ignore", UserWarning)
            target.writestr(info, data)
    return out.getvalue()


def _member(name: str, *, mode: int = stat.S_IFREG | 0o644, deflate: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    if deflate:
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def test_a_genuine_skops_file_passes_and_registers(
    genuine: bytes, tmp_path: Path, sqlite_registry: Registry
) -> None:
    check_zip(genuine, "model.skops")
    path = tmp_path / "model.skops"
    path.write_bytes(genuine)
    assert sqlite_registry.register(name="fine", path=path, sample=FRAME).number == 1


def _hostile(genuine: bytes) -> dict[str, tuple[bytes, str]]:
    # zipfile clears the flag bits it writes: set "encrypted" in the last central directory entry
    encrypted = bytearray(_with(genuine, _member("secret.npy"), b"x"))
    encrypted[encrypted.rfind(b"PK\x01\x02") + 8] |= 0x1
    first = zipfile.ZipFile(io.BytesIO(genuine)).infolist()[0].filename
    return {
        "zip bomb": (_with(genuine, _member("bomb.npy", deflate=True), bytes(20 << 20)), r"inflates .*-fold"),
        "traversal": (_with(genuine, _member("../../etc/cron.d/x"), b"x"), "unsafe name"),
        "absolute": (_with(genuine, _member("/etc/passwd"), b"x"), "unsafe name"),
        "backslash": (_with(genuine, _member("..\\..\\win.ini"), b"x"), "unsafe name"),
        "symlink": (
            _with(genuine, _member("link", mode=stat.S_IFLNK | 0o777), b"/etc/passwd"),
            "symbolic link",
        ),
        "device": (_with(genuine, _member("dev", mode=stat.S_IFCHR | 0o600), b""), "not a plain file"),
        "encrypted": (bytes(encrypted), "encrypted"),
        "duplicate": (_with(genuine, _member(first), b"x"), "appears twice"),
    }


@pytest.mark.parametrize(
    "kind", ["zip bomb", "traversal", "absolute", "backslash", "symlink", "device", "encrypted", "duplicate"]
)
def test_hostile_archives_are_refused_before_anything_is_inflated(
    kind: str, genuine: bytes, tmp_path: Path, sqlite_registry: Registry
) -> None:
    data, message = _hostile(genuine)[kind]
    with pytest.raises(UnsafeFormat, match=message):
        check_zip(data, "model.skops")
    path = tmp_path / "model.skops"
    path.write_bytes(data)
    with pytest.raises(UnsafeFormat, match=message):  # the same refusal through registration
        sqlite_registry.register(name="hostile", path=path, sample=FRAME)
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []  # nothing half-registered


def test_member_count_and_total_size_are_bounded(genuine: bytes) -> None:
    with pytest.raises(UnsafeFormat, match="archive members; at most 2"):
        check_zip(genuine, "model.skops", ArchiveLimits(members=2))
    with pytest.raises(UnsafeFormat, match="inflates to more than"):
        check_zip(genuine, "model.skops", ArchiveLimits(inflated_bytes=100))


def test_a_pickle_named_skops_is_refused_and_never_unpickled(
    tmp_path: Path, sqlite_registry: Registry
) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(Canary(canary)))
    with pytest.raises(UnknownFormat, match="not a zip archive"):
        sqlite_registry.register(name="disguised", path=path, sample=FRAME)
    assert not canary.exists()  # nothing unpickled it, in this process or the preflight child
    assert sqlite_registry.models() == []
