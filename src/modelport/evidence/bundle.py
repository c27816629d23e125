"""The bundle's container: a deterministic zip of named files plus ``manifest.json``.

Entries are stored uncompressed, sorted by name, each with the same fixed time (1980-01-01), Unix
permissions 0644 and no extra fields, so the same files always give the same bytes.
``tools/verify_evidence.py`` writes the same layout again from the entries it read and compares the
bytes: a flipped byte in a header fails as surely as one in a file. (Compression would make that
rebuild depend on the zlib version; the audit trail is text and small beside a model.)

The manifest lists every other file with its SHA-256 and the audit chain's head at T; its own SHA-256
(:attr:`Bundle.manifest_sha256`) is what to record elsewhere — with it, no file can be changed and the
digests fixed up without the change showing.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

__all__ = ["FORMAT", "MANIFEST", "Bundle", "canonical_json", "zip_files"]

FORMAT = "modelport-evidence/1"
MANIFEST = "manifest.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def canonical_json(data: Any) -> bytes:
    """Sorted keys, two-space indent, UTF-8, a final newline: stable bytes for the same data."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def zip_files(files: dict[str, bytes]) -> bytes:
    """The deterministic zip of ``files`` (see the module text)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Bundle:
    """An evidence bundle: ``files`` (name → bytes, the manifest included) and the summary that
    ``summary.md`` tells in words (also the API's ``?format=json``)."""

    files: dict[str, bytes]
    summary: dict[str, Any]

    @property
    def manifest(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.files[MANIFEST])
        return parsed

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.files[MANIFEST]).hexdigest()

    def to_zip(self) -> bytes:
        return zip_files(self.files)

    @staticmethod
    def assemble(header: dict[str, Any], contents: dict[str, bytes], summary: dict[str, Any]) -> Bundle:
        """The manifest (``header`` plus every file's SHA-256 and size) added to ``contents``."""
        listed = {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(contents.items())
        }
        manifest = {"format": FORMAT, **header, "files": listed}
        return Bundle({**contents, MANIFEST: canonical_json(manifest)}, summary)
