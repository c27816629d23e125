"""Zip archives (skops files) checked from their central directory before any library opens them.

A skops file is a zip archive that skops reads member by member into memory. A hostile one can
declare a member that inflates a thousandfold (a zip bomb), name members ``../../etc/cron.d/x`` or
``/etc/passwd`` (for any tool that extracts it), carry symbolic links or device files, encrypt members,
or hold hundreds of thousands of entries. :func:`check_zip` reads only the central directory — the
list of members with their declared sizes, compression and attributes — and refuses all of those
before skops (or anything else) inflates a byte. Python's ``zipfile`` never inflates a member beyond
its declared size (a member that lies fails its CRC check), so the declared sizes bound the work.

The preflight child (registry/preflight.py) still reads every model under CPU and memory limits; this
is the cheaper, clearer first line: a refusal that names the member and the rule it broke.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from modelport.errors import UnknownFormat, UnsafeFormat

__all__ = ["ArchiveLimits", "check_zip"]


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    members: int = 10_000  # a fitted pipeline with thousands of arrays has a few thousand
    inflated_bytes: int = 2 << 30  # all members together, inflated: what skops holds in memory
    ratio: float = 200.0  # inflated ÷ compressed, per member (numpy arrays of zeros reach ~100)


LIMITS = ArchiveLimits()
_SMALL = 64 * 1024  # members this small are not judged by their ratio (tiny headers compress well)


def check_zip(data: bytes, name: str, limits: ArchiveLimits = LIMITS) -> None:
    """Refuse the archive ``data`` (``name`` for messages) unless every member is a plain file or
    folder with a safe relative name, unencrypted, and the sizes stay within ``limits``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise UnknownFormat(f"{name!r} is not a readable skops model (not a zip archive: {exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.members:
            raise UnsafeFormat(f"{name!r} holds {len(members):,} archive members; at most {limits.members:,}")
        seen: set[str] = set()
        inflated = 0
        for member in members:
            _check_name(member.filename, name, seen)
            mode = member.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                what = "a symbolic link" if kind == stat.S_IFLNK else "not a plain file"
                raise UnsafeFormat(f"{name!r}: archive member {member.filename!r} is {what}")
            if member.flag_bits & 0x1:
                raise UnsafeFormat(f"{name!r}: archive member {member.filename!r} is encrypted")
            if member.file_size < 0 or member.compress_size < 0:
                raise UnsafeFormat(f"{name!r}: archive member {member.filename!r} declares a negative size")
            inflated += member.file_size
            if inflated > limits.inflated_bytes:
                raise UnsafeFormat(
                    f"{name!r} inflates to more than {limits.inflated_bytes / (1 << 30):g} GiB "
                    f"(at member {member.filename!r})"
                )
            if member.file_size > _SMALL and member.file_size > limits.ratio * max(member.compress_size, 1):
                raise UnsafeFormat(
                    f"{name!r}: archive member {member.filename!r} inflates "
                    f"{member.file_size / max(member.compress_size, 1):,.0f}-fold "
                    f"(at most {limits.ratio:g}): a zip bomb, or not a model"
                )


def _check_name(member: str, name: str, seen: set[str]) -> None:
    """A relative path of plain parts, once: no absolute paths, drive letters, ``..``, backslashes or
    control characters (nothing that would land outside a folder it was extracted to)."""
    path = PurePosixPath(member)
    unsafe = (
        not member
        or member.startswith("/")
        or "\\" in member
        or (len(member) > 1 and member[1] == ":")
        or any(part == ".." for part in path.parts)
        or any(ord(c) < 32 or ord(c) == 127 for c in member)
    )
    if unsafe:
        raise UnsafeFormat(f"{name!r}: archive member {member[:200]!r} has an unsafe name")
    if member in seen:
        raise UnsafeFormat(f"{name!r}: archive member {member[:200]!r} appears twice")
    seen.add(member)
