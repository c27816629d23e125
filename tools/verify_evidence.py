#!/usr/bin/env python3
"""Verify a modelport evidence bundle with the Python standard library alone (docs/evidence.md).

    python3 tools/verify_evidence.py bundle.zip [--manifest-sha256 HEX]

Checks: the zip is in the bundle's canonical layout (stored, sorted, fixed times: it is rebuilt from
its entries and compared byte for byte); the files are exactly those the manifest lists, each with its
SHA-256; the audit chain in audit.jsonl recomputes from genesis — every record in full is hashed again
exactly as modelport's registry/audit.py does, every omitted run links to its neighbours — and ends at
the manifest's head; with --manifest-sha256, the manifest is the one recorded. Exit 0 "verified", or 1
and the first failure.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from typing import Any

GENESIS = "0" * 64
MANIFEST = "manifest.json"
FIELDS = ("seq", "at", "actor", "action", "target", "before", "after")


class Failure(Exception):
    pass


def canonical_zip(files: dict[str, bytes]) -> bytes:
    """The bundle's layout (modelport/evidence/bundle.py): stored, sorted, 1980-01-01, 0644."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


def record_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """registry/audit.py's rule: SHA-256 of the previous hash, a newline and the canonical JSON."""
    fields = {field: record[field] for field in FIELDS}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def read_zip(data: bytes) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = [info.filename for info in archive.infolist()]
        if len(set(names)) != len(names):
            raise Failure("the zip holds a file name twice")
        files = {name: archive.read(name) for name in names}
    except Exception as exc:  # a damaged zip fails in many ways (bad CRC, unknown method …): all fail
        raise Failure(f"the zip cannot be read: {exc}") from None
    if canonical_zip(files) != data:
        raise Failure("the zip's bytes differ from the canonical layout of its files (a header was changed)")
    return files


def check_chain(text: str, audit: dict[str, Any]) -> tuple[int, str]:
    prev_hash, expected = GENESIS, 1
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
            if "omitted" in entry:
                first, last = entry["omitted"]
                if first != expected or last < first:
                    raise Failure(f"audit.jsonl line {number}: omitted {first}-{last}, not from {expected}")
                if entry["prev_hash"] != prev_hash:
                    raise Failure(f"audit records {first}-{last} (omitted) do not follow the chain")
                prev_hash, expected = entry["hash"], last + 1
                continue
            seq = entry["seq"]
            if seq != expected:
                raise Failure(f"audit.jsonl line {number}: record {seq} where record {expected} belongs")
            if entry["prev_hash"] != prev_hash:
                raise Failure(f"audit record {seq} does not follow record {seq - 1}")
            if record_hash(prev_hash, entry) != entry["hash"]:
                raise Failure(f"audit record {seq} was changed: its hash does not recompute")
            prev_hash, expected = entry["hash"], seq + 1
        except (ValueError, KeyError, TypeError) as exc:
            raise Failure(f"audit.jsonl line {number} is not a chain entry ({exc})") from None
    if expected - 1 != audit.get("records") or prev_hash != audit.get("head"):
        raise Failure(
            f"the audit chain ends at record {expected - 1}, head {prev_hash}; the manifest says "
            f"record {audit.get('records')}, head {audit.get('head')}"
        )
    return expected - 1, prev_hash


def verify(data: bytes, manifest_sha256: str | None = None) -> str:
    files = read_zip(data)
    if MANIFEST not in files:
        raise Failure("no manifest.json in the bundle")
    digest = hashlib.sha256(files[MANIFEST]).hexdigest()
    if manifest_sha256 is not None and digest != manifest_sha256.strip().lower():
        raise Failure(f"the manifest's SHA-256 is {digest}, not the recorded {manifest_sha256}")
    try:
        manifest = json.loads(files[MANIFEST])
        listed, audit = dict(manifest["files"]), dict(manifest["audit"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Failure(f"manifest.json cannot be read ({exc})") from None
    present = set(files) - {MANIFEST}
    for name in sorted(present - set(listed)):
        raise Failure(f"{name} is in the zip but not in the manifest")
    for name in sorted(set(listed) - present):
        raise Failure(f"{name} is in the manifest but not in the zip")
    for name in sorted(listed):
        entry = listed[name]
        if not isinstance(entry, dict) or hashlib.sha256(files[name]).hexdigest() != entry.get("sha256"):
            raise Failure(f"{name} does not match its SHA-256 in the manifest")
        if len(files[name]) != entry.get("size"):
            raise Failure(f"{name} does not have the size the manifest gives")
    if "audit.jsonl" not in files:
        raise Failure("no audit.jsonl in the bundle")
    records, head = check_chain(files["audit.jsonl"].decode("utf-8", "replace"), audit)
    return f"verified: {len(files)} files, manifest {digest}, audit chain of {records} records, head {head}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Verify a modelport evidence bundle (standard library only)."
    )
    parser.add_argument("bundle", help="the bundle's zip file")
    parser.add_argument("--manifest-sha256", help="the manifest digest recorded when the bundle was made")
    args = parser.parse_args(argv)
    try:
        with open(args.bundle, "rb") as handle:
            data = handle.read()
        print(verify(data, args.manifest_sha256))
        return 0
    except OSError as exc:
        print(f"FAILED: cannot read {args.bundle}: {exc.strerror or exc}")
    except Failure as exc:
        print(f"FAILED: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
