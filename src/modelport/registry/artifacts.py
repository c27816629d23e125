"""Content-addressed artifact store.

A blob's address is the sha256 of its bytes; its path is derived from that digest only, never from a
name a user supplied. Writing goes through a *staging* session:

1. the digest is appended (and fsynced) to the session's journal, ``staging/<id>.journal``, which the
   session holds an exclusive ``flock`` on for its whole life;
2. the bytes go to a temporary file that is fsynced and renamed into ``blobs/sha256/ab/<digest>``;
3. the caller commits the database rows that reference the digest, then closes the session.

A process killed anywhere in between leaves a journal nobody holds a lock on. :meth:`recover`, run
whenever the registry is opened, deletes the blobs such dead journals list unless a committed version
or a live session references them. Recovery holds the store lock exclusively while puts hold it
shared, and it reads live journals *before* asking the database, so a concurrent registration's blob
is always protected by one or the other. Every read re-hashes the bytes and refuses a mismatch.

Everything the store creates is its owner's alone — folders 0700, journals and the lock 0600, blobs
0400 (read-only, so a slip cannot change a stored version) — whatever the umask, also when
``MODELPORT_ARTIFACT_URL`` puts the store outside the registry's private home; a store folder found
open to other users loses their access when it is opened (the group's stays the operator's choice, as
for the home).

:class:`ArtifactStore` is the interface; :class:`LocalArtifactStore` is the local-directory
implementation and :class:`~modelport.registry.s3.S3ArtifactStore` the S3-compatible one, which keeps
the same promises with a lease in place of the lock (``registry/s3.py``). :func:`open_artifact_store`
chooses between them by the URL's scheme.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

from modelport.errors import IntegrityFailure, InvalidInput, NotFound

if TYPE_CHECKING:
    from modelport.settings import Settings

__all__ = ["ArtifactStore", "LocalArtifactStore", "Staging", "open_artifact_store"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Staging(Protocol):
    """A write session: every blob put through it is protected until the session closes."""

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its sha256 hex digest."""


class ArtifactStore(Protocol):
    """Where version blobs live. Implementations: a local directory; S3-compatible object storage."""

    def staging(self) -> contextlib.AbstractContextManager[Staging]:
        """Open a write session (see module docstring)."""

    def read(self, digest: str) -> bytes:
        """Return the blob's bytes after checking they hash to ``digest``; raise otherwise."""

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored."""

    def recover(self, referenced: Callable[[], set[str]]) -> list[str]:
        """Delete blobs left by dead write sessions that nothing references; return their digests."""

    def discard(self, digests: list[str], live: Callable[[], set[str]]) -> list[str]:
        """Delete blobs of archived versions that ``live()`` no longer names; return their digests."""


class Session(Staging, Protocol):
    """A store's write session: opened, then closed on success or abandoned on failure."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def abandon(self) -> None: ...


@contextlib.contextmanager
def write_session(session: Session) -> Iterator[Staging]:
    """The one life of every store's write session: open; close when the caller's block succeeds
    (its rows are committed), abandon when it fails, so recovery removes what nothing references."""
    session.open()
    try:
        yield session
    except BaseException:
        session.abandon()
        raise
    session.close()


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput("artifact digest must be 64 lower-case hex characters")
    return digest


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only (``mkdir -p`` would use the umask for them)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)


def _private_file(path: Path, flags: int) -> int:
    """Open (creating owner-only) ``path``: a descriptor."""
    return os.open(path, flags | os.O_CREAT, 0o600)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalStaging:
    def __init__(self, store: LocalArtifactStore) -> None:
        self._store = store
        self.id = uuid.uuid4().hex
        self.journal_path = store.staging_dir / f"{self.id}.journal"
        self.temp_dir = store.staging_dir / self.id
        self._journal: IO[str] | None = None

    def open(self) -> None:
        _private_dirs(self._store.staging_dir)
        # Create and lock the journal under the shared store lock, so that recovery (which holds it
        # exclusively) never sees this journal unlocked and mistakes it for a dead one.
        with self._store.lock(shared=True):
            descriptor = _private_file(self.journal_path, os.O_RDWR | os.O_APPEND)
            journal = open(descriptor, "a+", encoding="ascii")  # noqa: SIM115 - held open
            fcntl.flock(journal, fcntl.LOCK_EX)
        self._journal = journal

    def close(self) -> None:
        """Success: the database references the blobs now; the journal is no longer needed."""
        if self._journal is None:
            return
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.journal_path.unlink(missing_ok=True)
        self._journal.close()  # releases the lock
        self._journal = None

    def abandon(self) -> None:
        """Failure: release the lock but keep the journal, so recovery removes this session's blobs."""
        if self._journal is None:
            return
        self._journal.close()
        self._journal = None

    def put(self, data: bytes) -> str:
        assert self._journal is not None, "staging session is closed"
        digest = sha256_bytes(data)
        with self._store.lock(shared=True):
            self._journal.write(digest + "\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
            final = self._store.path_for(digest)
            if final.exists() and _file_digest(final) == digest:
                return digest  # already stored (and intact): content addressing deduplicates
            _private_dirs(self.temp_dir)
            temp = self.temp_dir / f"{digest}.tmp"
            with open(_private_file(temp, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o400)
            _private_dirs(final.parent)
            os.replace(temp, final)
            _fsync_dir(final.parent)
        return digest


class LocalArtifactStore:
    """Blobs under ``root/blobs/sha256/ab/<digest>``; write sessions under ``root/staging``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.staging_dir = root / "staging"
        _private_dirs(self.root)
        mode = self.root.stat().st_mode & 0o7777
        if mode & 0o007:
            with contextlib.suppress(PermissionError):  # not ours to change: its owner decides
                self.root.chmod(mode & ~0o007)

    def path_for(self, digest: str) -> Path:
        digest = _check_digest(digest)
        return self.blob_dir / digest[:2] / digest

    @contextlib.contextmanager
    def lock(self, *, shared: bool) -> Iterator[None]:
        with open(_private_file(self.root / ".lock", os.O_RDWR | os.O_APPEND), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield

    def staging(self) -> contextlib.AbstractContextManager[Staging]:
        return write_session(_LocalStaging(self))

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def read(self, digest: str) -> bytes:
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"artifact sha256:{digest} is missing from the artifact store") from None
        except OSError as exc:
            # A directory or an unreadable file where the blob should be: damaged, like a changed
            # file. Named by digest only: the store's paths are no business of the caller's.
            raise IntegrityFailure(
                f"artifact sha256:{digest} cannot be read from the artifact store "
                f"({type(exc).__name__}: {exc.strerror or 'unreadable'})"
            ) from None
        actual = sha256_bytes(data)
        if actual != digest:
            raise IntegrityFailure(
                f"artifact sha256:{digest} is corrupt: its bytes now hash to sha256:{actual}"
            )
        return data

    def discard(self, digests: list[str], live: Callable[[], set[str]]) -> list[str]:
        """Delete blobs no version needs any more (archived by ``modelport gc``). Under the exclusive
        lock, a digest is kept if ``live()`` still names it or a registration in progress journaled it
        (it may be about to reuse the blob)."""
        if not digests:
            return []
        removed: list[str] = []
        with self.lock(shared=False):
            journaled: set[str] = set()
            for path in self.staging_dir.glob("*.journal") if self.staging_dir.is_dir() else ():
                with contextlib.suppress(OSError):
                    journaled.update(line.strip() for line in path.read_text(encoding="ascii").splitlines())
            keep = journaled | live()
            for digest in digests:
                if digest in keep or not _DIGEST.fullmatch(digest):
                    continue
                blob = self.path_for(digest)
                if blob.exists():
                    blob.unlink()
                    removed.append(digest)
        return removed

    def recover(self, referenced: Callable[[], set[str]]) -> list[str]:
        if not self.staging_dir.is_dir():
            return []
        if not any(self.staging_dir.glob("*.journal")):
            return []
        removed: list[str] = []
        with self.lock(shared=False):
            # Listed under the exclusive lock: no session can be between creating and locking its
            # journal, nor between journaling a digest and checking whether its blob exists.
            journals = sorted(self.staging_dir.glob("*.journal"))
            live: set[str] = set()
            dead: list[tuple[Path, set[str], IO[str]]] = []
            for path in journals:
                handle: IO[str] = open(path, "a+", encoding="ascii")  # noqa: SIM115 - closed below
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    live.update(line.strip() for line in handle if line.strip())
                    handle.close()
                    continue
                handle.seek(0)
                dead.append((path, {line.strip() for line in handle if line.strip()}, handle))
            if not dead:
                return []
            # Ask the database only after the live journals are known (see module docstring).
            keep = live | referenced()
            for path, digests, handle in dead:
                for digest in sorted(digests - keep):
                    if _DIGEST.fullmatch(digest):
                        blob = self.path_for(digest)
                        if blob.exists():
                            blob.unlink()
                            removed.append(digest)
                shutil.rmtree(path.with_suffix(""), ignore_errors=True)
                path.unlink(missing_ok=True)
                handle.close()
        return removed


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """The artifact store of ``settings.resolved_artifact_url``, chosen by its scheme."""
    url = settings.resolved_artifact_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalArtifactStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from modelport.registry.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(url, settings)
    if parsed.scheme == "" and url:
        return LocalArtifactStore(Path(url))
    raise InvalidInput(f"unsupported artifact store URL scheme {parsed.scheme!r}: use file:// or s3://")
