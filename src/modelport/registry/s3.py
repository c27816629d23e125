"""Artifacts in S3-compatible object storage (``MODELPORT_ARTIFACT_URL=s3://bucket/prefix``).

The same content addressing as the local store: a blob's key is ``prefix/blobs/sha256/ab/<digest>``,
built from a validated digest only. Every download is re-hashed before it is returned or cached; a
mismatch is an :class:`IntegrityFailure` that names the digest (never the bucket's credentials).

**Client.** boto3, the reference S3 client: it speaks to AWS and to every S3-compatible service
(MinIO, SeaweedFS, Ceph, R2) through ``s3_endpoint_url``, takes credentials from the standard chain
when none are set (``AWS_*`` variables, profiles, a Kubernetes service account through IRSA, an
instance role), and uploads large blobs in parallel parts (``TransferConfig``). It is imported
through :func:`~modelport.optional.require`, so the core install says ``pip install
'modelport[s3]'``.

**Cache.** Each replica keeps the blobs it read in ``artifact_cache_dir`` (owner-only, temp file and
rename, so a reader never sees half a file), bounded by ``artifact_cache_bytes``: a hit refreshes the
file's mtime and the oldest go first when the bound is passed — mtime, not atime, since most hosts
mount with ``relatime``, and it is shared by the server's worker processes and survives restarts. A
cached file is re-hashed on every read too: a damaged one is deleted and fetched again. With the
cache warm, a replica loads models while S3 is down.

**Crash safety.** There is no ``flock`` across hosts, so a write session is a *lease*: its journal
object ``prefix/staging/<id>.journal`` lists the session's digests; it is rewritten *before* each
upload and renewed every ``s3_lease_seconds / 4`` by a heartbeat thread, deleted when the session
closes (the database rows then reference the blobs) and left behind when it fails or the process
dies. Blobs are uploaded before the rows commit, so a killed registration leaves blobs without a
version, never a version without its blob. :meth:`S3ArtifactStore.recover` deletes the blobs of
journals whose lease expired unless the database or a live journal names them; expiry is judged by
the S3 server's own clock (its ``Date`` header against the journal's ``LastModified``), so a replica
with a skewed clock cannot declare a live session dead. Live journals are read before the database
is asked and again just before deleting, which narrows — but cannot close without a lock service — the
race with a new registration that reuses a dying blob's bytes (it needs a dead session holding the
same bytes and a window of milliseconds). A paused process that misses its heartbeats for a whole
lease loses its blobs: keep the lease well above any pause (default 5 minutes).

**Uploads.** ``put`` skips an upload when the object is already there with the expected size and
ETag (the MD5 of the bytes, or of the parts for a multipart upload): content addressing deduplicates,
and a damaged object (another ETag) is overwritten by the good bytes. Blobs of at least
``s3_multipart_bytes`` go up in parts of that size, four at a time.

**Failures.** A missing bucket, refused credentials and an unreachable endpoint become
:class:`StoreNotReady` naming the store (``s3://bucket/prefix`` and the endpoint's host) and the
reason, never a key. At open, recovery skips an unreachable endpoint with a warning (a replica still
starts and serves what it has cached) but refuses a missing bucket or refused credentials: those are
configuration mistakes, not outages.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from modelport.errors import IntegrityFailure, InvalidInput, NotFound, StoreNotReady
from modelport.optional import require
from modelport.registry.artifacts import (
    Staging,
    _check_digest,
    _private_dirs,
    _private_file,
    sha256_bytes,
    write_session,
)

if TYPE_CHECKING:
    from modelport.settings import Settings

__all__ = ["BlobCache", "S3ArtifactStore", "parse_s3_url"]

log = logging.getLogger("modelport.registry")

# Registration refuses model files over 2 GiB (registry/intake.py); an ONNX twin may be larger than
# its source, so a stored blob may be up to twice that — and no object is read beyond it.
MAX_BLOB_BYTES = 4 << 30
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9._=+-]+")  # a prefix folder: no spaces, controls or other surprises
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "403",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_STALE_TEMP_SECONDS = 3600
_UNREACHABLE = "the endpoint is unreachable"  # an outage, not a mistake (see recover)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b/")``: the bucket checked against S3's naming rules, the
    prefix normalised (no leading or doubled ``/``) and refused if it climbs (``..``) or holds
    anything but letters, digits and ``._=+-`` in its folders."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or parsed.query or parsed.fragment or parsed.params:
        raise InvalidInput("an S3 artifact URL has the form s3://bucket/prefix (no query or fragment)")
    bucket = parsed.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(
            "the bucket of an s3:// artifact URL must be 3-63 lower-case letters, digits, dots and "
            "hyphens (no credentials or port: those are settings)"
        )
    segments = [segment for segment in unquote(parsed.path).split("/") if segment]
    for segment in segments:
        if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            raise InvalidInput(
                "each folder of an s3:// artifact prefix must be letters, digits and ._=+- (not . or ..)"
            )
    prefix = "".join(f"{segment}/" for segment in segments)
    if len(prefix) > 512:
        raise InvalidInput("the prefix of an s3:// artifact URL is longer than 512 characters")
    return bucket, prefix


def _md5_etags(data: bytes, part_bytes: int) -> set[str]:
    """The ETags S3 gives ``data`` uploaded whole, and in parts of ``part_bytes`` (``md5(md5s)-N``)."""
    etags = {hashlib.md5(data, usedforsecurity=False).hexdigest()}
    if len(data) >= part_bytes:
        view = memoryview(data)  # slices of a view, not copies of a blob that may be gigabytes
        parts = [view[i : i + part_bytes] for i in range(0, len(data), part_bytes)]
        joined = b"".join(hashlib.md5(part, usedforsecurity=False).digest() for part in parts)
        etags.add(f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}")
    return etags


def _touch(path: Path) -> None:
    """Mark ``path`` most recently used. From the clock, not the kernel's file timestamps: those tick
    once per scheduler tick (~4 ms), so reads in a row would tie."""
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(path, ns=(now, now))


class BlobCache:
    """A bounded, least-recently-used folder of verified blobs: ``root/ab/<digest>``."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit

    def path_for(self, digest: str) -> Path:
        digest = _check_digest(digest)
        return self.root / digest[:2] / digest

    def get(self, digest: str) -> bytes | None:
        """The cached bytes if present and still hashing to ``digest``; a damaged file is deleted."""
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except OSError:  # absent (or unreadable: then fetched again and replaced)
            return None
        if sha256_bytes(data) != digest:
            log.warning("cached artifact sha256:%s was damaged: deleted, fetching it again", digest)
            self.remove(digest)
            return None
        _touch(path)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (already verified), then evict the least recently used beyond the bound."""
        if len(data) > self.limit:
            return
        path = self.path_for(digest)
        temp_dir = self.root / "tmp"
        try:
            _private_dirs(temp_dir)
            _private_dirs(path.parent)
            temp = temp_dir / f"{digest}.{uuid.uuid4().hex}"
            with open(_private_file(temp, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
                handle.write(data)  # no fsync: a torn file after a power cut fails its hash check
            os.replace(temp, path)
            _touch(path)
        except OSError as exc:  # a full or read-only disk: serve from S3 without the cache
            log.warning("cannot cache artifact sha256:%s (%s)", digest, exc.strerror or type(exc).__name__)
            with contextlib.suppress(UnboundLocalError, OSError):
                temp.unlink()
            return
        self.evict()

    def remove(self, digest: str) -> None:
        with contextlib.suppress(OSError):
            self.path_for(digest).unlink()

    def evict(self) -> list[str]:
        """Delete the least recently used blobs until the cache fits its bound; return their digests."""
        entries: list[tuple[float, int, Path]] = []
        for path in self.root.glob("??/*"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        now = time.time()
        for temp in self.root.glob("tmp/*"):  # left by a process killed while writing
            with contextlib.suppress(OSError):
                if now - temp.stat().st_mtime > _STALE_TEMP_SECONDS:
                    temp.unlink()
        total = sum(size for _, size, _ in entries)
        evicted: list[str] = []
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= self.limit:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                evicted.append(path.name)
            total -= size
        return evicted


class _S3Staging:
    """A write session: its journal object is its lease (module docstring)."""

    def __init__(self, store: S3ArtifactStore) -> None:
        self._store = store
        self.id = uuid.uuid4().hex
        self.journal_key = store.journal_key(self.id)
        self._digests: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _write_journal(self) -> None:
        with self._lock:  # the heartbeat and a put never interleave: the last write lists everything
            body = "".join(f"{digest}\n" for digest in self._digests).encode("ascii")
            with self._store.calls("writing a registration journal"):
                self._store.client.put_object(Bucket=self._store.bucket, Key=self.journal_key, Body=body)

    def _beat(self) -> None:
        while not self._stop.wait(self._store.lease_seconds / 4):
            try:
                self._write_journal()
            except StoreNotReady as exc:  # try again at the next beat; the lease allows three misses
                log.warning("cannot renew a registration's lease: %s", exc)

    def open(self) -> None:
        self._write_journal()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lease-{self.id[:8]}", daemon=True)
        self._heartbeat.start()

    def _end(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None

    def close(self) -> None:
        """Success: the database references the blobs; the lease is given up. The rows are committed
        by now, so a journal that cannot be deleted (S3 away for a moment) must not turn a registered
        version into a reported failure (a retry would register it twice): it is left to expire, and
        recovery deletes it then, keeping its blobs, which committed rows reference."""
        self._end()
        try:
            with self._store.calls("closing a registration journal"):
                self._store.client.delete_object(Bucket=self._store.bucket, Key=self.journal_key)
        except StoreNotReady as exc:
            log.warning("registered, but its journal stays until its lease expires: %s", exc)

    def abandon(self) -> None:
        """Failure: stop renewing, keep the journal; recovery removes what nothing references."""
        self._end()

    def put(self, data: bytes) -> str:
        assert self._heartbeat is not None, "staging session is closed"
        digest = sha256_bytes(data)
        if digest not in self._digests:
            self._digests.append(digest)
            self._write_journal()  # journaled before the blob exists: a crash after it leaks nothing
        self._store.upload(digest, data)
        return digest


class S3ArtifactStore:
    """Blobs under ``s3://bucket/prefix/blobs/sha256/ab/<digest>``, leases under ``prefix/staging``."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        cache: BlobCache | None,
        multipart_bytes: int,
        lease_seconds: float,
        endpoint: str = "AWS S3",
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache = cache
        self.multipart_bytes = multipart_bytes
        self.lease_seconds = lease_seconds
        self.where = f"artifact store s3://{bucket}/{prefix} at {endpoint}"

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> S3ArtifactStore:
        bucket, prefix = parse_s3_url(url)
        boto3 = require("boto3", "s3", "an s3:// artifact store")
        config = require("botocore.config", "s3", "an s3:// artifact store")
        if (settings.s3_access_key_id is None) != (settings.s3_secret_access_key is None):
            raise InvalidInput(
                "set both MODELPORT_S3_ACCESS_KEY_ID and MODELPORT_S3_SECRET_ACCESS_KEY, or neither"
            )
        secret = settings.s3_secret_access_key
        endpoint = settings.s3_endpoint_url
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
            config=config.Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
                # S3-compatible services rarely resolve bucket.host names: address buckets by path
                s3={"addressing_style": "path" if endpoint else "auto"},
            ),
        )
        cache = None
        if settings.artifact_cache_bytes > 0:
            root = settings.artifact_cache_dir or settings.home / "cache" / "artifacts"
            # resolved now: a serving worker later runs in an empty directory of its own
            cache = BlobCache(root.resolve(), settings.artifact_cache_bytes)
        shown = "AWS S3"
        if endpoint:
            parsed = urlparse(endpoint)
            shown = f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        return cls(
            client,
            bucket,
            prefix,
            cache=cache,
            multipart_bytes=settings.s3_multipart_bytes,
            lease_seconds=settings.s3_lease_seconds,
            endpoint=shown,  # without any user:password@ an endpoint URL may carry
        )

    # -- keys and errors -------------------------------------------------------------------------

    def key_for(self, digest: str) -> str:
        digest = _check_digest(digest)
        return f"{self.prefix}blobs/sha256/{digest[:2]}/{digest}"

    def journal_key(self, session_id: str) -> str:
        return f"{self.prefix}staging/{session_id}.journal"

    @contextlib.contextmanager
    def calls(self, action: str, *, missing: str | None = None) -> Iterator[None]:
        """Turn botocore's errors into modelport's: built from the error code only, since a message
        from the service or from botocore may quote a header, a key id or a signed URL."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if missing is not None and code in _MISSING_CODES:
                raise NotFound(missing) from None
            if code == "NoSuchBucket":
                raise StoreNotReady(f"{self.where}: {action} failed: the bucket does not exist") from None
            if code in _AUTH_CODES:
                raise StoreNotReady(
                    f"{self.where}: {action} failed: access denied ({code}); check the S3 credentials "
                    "(MODELPORT_S3_ACCESS_KEY_ID / MODELPORT_S3_SECRET_ACCESS_KEY or the AWS chain)"
                ) from None
            raise StoreNotReady(f"{self.where}: {action} failed ({code or 'unknown error'})") from None
        except NoCredentialsError:
            raise StoreNotReady(
                f"{self.where}: {action} failed: no S3 credentials found (set "
                "MODELPORT_S3_ACCESS_KEY_ID and MODELPORT_S3_SECRET_ACCESS_KEY, or the AWS chain)"
            ) from None
        except BotoCoreError as exc:
            raise StoreNotReady(
                f"{self.where}: {action} failed: {_UNREACHABLE} ({type(exc).__name__})"
            ) from None

    # -- the ArtifactStore interface -------------------------------------------------------------

    def staging(self) -> contextlib.AbstractContextManager[Staging]:
        return write_session(_S3Staging(self))

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self.calls("checking an artifact"):
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=self.key_for(digest)))
            except ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise

    def exists(self, digest: str) -> bool:
        return self._head(digest) is not None

    def upload(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` unless an intact-looking copy (size and ETag) is there."""
        head = self._head(digest)
        if (
            head is not None
            and head.get("ContentLength") == len(data)
            and str(head.get("ETag", "")).strip('"') in _md5_etags(data, self.multipart_bytes)
        ):
            return
        transfer = require("boto3.s3.transfer", "s3", "an s3:// artifact store")
        config = transfer.TransferConfig(
            multipart_threshold=self.multipart_bytes,
            multipart_chunksize=self.multipart_bytes,
            max_concurrency=4,
        )
        with self.calls("uploading an artifact"):
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, self.key_for(digest), Config=config)

    def read(self, digest: str) -> bytes:
        key = self.key_for(digest)
        if self.cache is not None:
            cached = self.cache.get(digest)
            if cached is not None:
                return cached
        missing = f"artifact sha256:{digest} is missing from the artifact store"
        with self.calls("reading an artifact", missing=missing):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            # Whoever can write to the bucket could put anything under a blob's key: the size it
            # declares is checked before a byte is read, and no more than that is ever read.
            declared = int(answer.get("ContentLength", 0))
            if declared > MAX_BLOB_BYTES:
                answer["Body"].close()
                raise IntegrityFailure(
                    f"artifact sha256:{digest} is corrupt: the stored object is {declared:,} bytes, "
                    f"over the {MAX_BLOB_BYTES:,} any artifact may be"
                )
            data = bytes(answer["Body"].read(MAX_BLOB_BYTES + 1))
        actual = sha256_bytes(data)
        if actual != digest:
            raise IntegrityFailure(
                f"artifact sha256:{digest} is corrupt: its bytes now hash to sha256:{actual}"
            )
        if self.cache is not None:
            self.cache.put(digest, data)
        return data

    def _journals(self) -> tuple[dict[str, datetime], datetime]:
        """Every journal's key and LastModified, and the server's clock when it listed them."""
        journals: dict[str, datetime] = {}
        now: datetime | None = None
        token: str | None = None
        with self.calls("listing registration journals"):
            while True:
                extra = {"ContinuationToken": token} if token else {}
                page = self.client.list_objects_v2(
                    Bucket=self.bucket, Prefix=f"{self.prefix}staging/", **extra
                )
                if now is None:
                    date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
                    now = email.utils.parsedate_to_datetime(date) if date else datetime.now(UTC)
                for item in page.get("Contents", []):
                    if item["Key"].endswith(".journal"):
                        journals[item["Key"]] = item["LastModified"]
                if not page.get("IsTruncated"):
                    break
                token = page.get("NextContinuationToken")
        return journals, now if now is not None else datetime.now(UTC)

    def _journaled(self, key: str) -> set[str] | None:
        """The digests a journal lists (``None`` if it is gone: its session closed meanwhile)."""
        from botocore.exceptions import ClientError

        with self.calls("reading a registration journal"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise
        return {line.strip() for line in body.decode("ascii", "replace").splitlines() if line.strip()}

    def _delete_blob(self, digest: str) -> bool:
        if self.cache is not None:
            self.cache.remove(digest)
        if not self.exists(digest):
            return False
        with self.calls("deleting an artifact"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key_for(digest))
        return True

    def recover(self, referenced: Callable[[], set[str]]) -> list[str]:
        try:
            journals, now = self._journals()
        except StoreNotReady as exc:
            if _UNREACHABLE not in str(exc):
                raise  # a missing bucket or refused credentials: a mistake to report at once
            log.warning("%s; recovery of interrupted registrations skipped until the next start", exc)
            return []
        dead = {
            key for key, modified in journals.items() if (now - modified).total_seconds() > self.lease_seconds
        }
        if not dead:
            return []
        live: set[str] = set()
        doomed: set[str] = set()
        for key in journals:
            (doomed if key in dead else live).update(self._journaled(key) or set())
        # Ask the database only after the live journals are read (as the local store does) …
        doomed -= live | referenced()
        if doomed:  # … and look again for sessions that started since, just before deleting
            later, _ = self._journals()
            for key in later.keys() - dead:
                doomed -= self._journaled(key) or set()
        removed = [
            digest for digest in sorted(doomed) if _check_digest_quietly(digest) and self._delete_blob(digest)
        ]
        self._abort_uploads({self.key_for(digest) for digest in doomed if _check_digest_quietly(digest)})
        with self.calls("deleting a registration journal"):
            for key in dead:
                self.client.delete_object(Bucket=self.bucket, Key=key)
        return removed

    def _abort_uploads(self, keys: set[str]) -> None:
        """Abort the unfinished multipart uploads of ``keys`` (a session killed mid-upload leaves its
        parts stored, and billed, until then)."""
        if not keys:
            return
        with self.calls("listing unfinished uploads"):
            pages = self.client.get_paginator("list_multipart_uploads")  # 1,000 uploads a page
            for page in pages.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"):
                for upload in page.get("Uploads", []):
                    if upload["Key"] in keys:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )

    def discard(self, digests: list[str], live: Callable[[], set[str]]) -> list[str]:
        """Delete blobs no version needs any more, keeping those any journal names (a registration in
        progress may be about to reuse them) or ``live()`` still names."""
        if not digests:
            return []
        journaled: set[str] = set()
        for key in self._journals()[0]:
            journaled |= self._journaled(key) or set()
        keep = journaled | live()
        return [
            digest
            for digest in digests
            if digest not in keep and _check_digest_quietly(digest) and self._delete_blob(digest)
        ]


def _code(exc: Any) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``403`` …)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _check_digest_quietly(digest: str) -> bool:
    """Whether ``digest`` is well formed: a journal line that is not is skipped, never used as a key."""
    try:
        _check_digest(digest)
    except InvalidInput:
        return False
    return True
