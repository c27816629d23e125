"""Where a version's training data came from: a DataFrame's or file's SHA-256, or — inside a DVC
repository — the DVC-tracked path, its content hash and the default remote.

DVC's own files are read directly (``*.dvc`` and ``dvc.lock`` are YAML, ``.dvc/config`` is INI-like),
so recording DVC lineage needs neither the ``dvc`` package nor network access. Nothing secret is
recorded: of a remote only its name and URL, the URL without user, password or query string
(credentials live in other keys of ``.dvc/config.local``, which are never read into the lineage).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from modelport.errors import InvalidInput

__all__ = ["MAX_DIRECTORY_FILES", "dvc_lineage", "remote_url", "training_data_lineage"]

# A directory outside DVC is hashed file by file; past this many files hashing it is refused (track
# such data with DVC, whose recorded hash is then taken instead of re-reading the data).
MAX_DIRECTORY_FILES = 10_000


def training_data_lineage(data: pd.DataFrame | str | Path | None) -> dict[str, Any] | None:
    """The ``training_data`` entry of a version's lineage.

    A DataFrame: the SHA-256 of its content. A path inside a DVC repository that DVC tracks (its own
    ``PATH.dvc``, a tracked folder above it, or an output in a ``dvc.lock``): its path relative to the
    repository, and under ``dvc`` the recorded hash, the default remote and the git revision; the
    workspace copy, when present as a file, is hashed too and compared with DVC's md5. Any other file
    or folder: its SHA-256 (a folder's over its files' paths and digests, at most
    :data:`MAX_DIRECTORY_FILES` files)."""
    from modelport.registry.registration import fingerprint

    if data is None or isinstance(data, pd.DataFrame):
        return fingerprint(data)
    path = Path(data)
    tracked = dvc_lineage(path)
    if tracked is not None:
        return tracked
    if path.is_dir():
        return {"path": _shown(path), **_directory_digest(path)}
    if not path.is_file():
        raise InvalidInput(f"training data {str(path)!r} does not exist")
    return {"path": _shown(path), **_file_digests(path)}


def dvc_lineage(path: Path) -> dict[str, Any] | None:
    """``path``'s lineage if a DVC repository tracks it, else ``None``. The data itself need not be in
    the workspace (``dvc pull`` not run): the hash comes from DVC's files."""
    absolute = Path(path).absolute()
    root = _dvc_root(absolute)
    if root is None:
        return None
    entry = _tracking_entry(absolute, root)
    if entry is None:
        return None
    out, tracked_by, tracked_path = entry
    algorithm = str(out.get("hash") or "md5")
    digest = out.get("md5") or out.get(algorithm)
    dvc: dict[str, Any] = {"tracked_by": tracked_by, "hash": algorithm, "md5": digest}
    if tracked_path != absolute:  # a file inside a tracked folder: the folder's hash is recorded
        dvc["tracked_path"] = tracked_path.relative_to(root).as_posix()
    for key in ("size", "nfiles"):
        if isinstance(out.get(key), int):
            dvc[key] = out[key]
    remote = _default_remote(root)
    if remote is not None:
        dvc["remote"] = remote
    revision = _git_head(root)
    if revision is not None:
        dvc["repo_rev"] = revision
    result: dict[str, Any] = {"path": absolute.relative_to(root).as_posix(), "dvc": dvc}
    if absolute.is_file():
        digests = _file_digests(absolute, with_md5=True)
        md5 = digests.pop("md5")
        result.update(digests)
        if tracked_path == absolute and isinstance(digest, str):
            # dvc 3 hashes a file's raw bytes; a mismatch means the workspace changed since `dvc add`
            dvc["workspace_matches"] = md5 == digest
    else:
        result["present"] = absolute.exists()
    return result


def remote_url(url: str) -> str:
    """A remote's URL without user, password, query or fragment (a local path is returned as is)."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# -- DVC's files --------------------------------------------------------------------------------


def _dvc_root(path: Path) -> Path | None:
    for folder in [path, *path.parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _tracking_entry(path: Path, root: Path) -> tuple[dict[str, Any], str, Path] | None:
    """The DVC output covering ``path`` (itself or a folder above it, up to ``root``), with the file that
    records it and the output's own path."""
    for tracked in [path, *path.parents]:
        if tracked == root.parent:
            break
        dvc_file = tracked.with_name(tracked.name + ".dvc")
        if dvc_file.is_file():
            for out in _yaml(dvc_file).get("outs") or []:
                if isinstance(out, dict) and (dvc_file.parent / str(out.get("path", ""))) == tracked:
                    return out, dvc_file.relative_to(root).as_posix(), tracked
        for lock in _lock_files(tracked.parent, root):
            for stage in (_yaml(lock).get("stages") or {}).values():
                for out in (stage or {}).get("outs") or []:
                    if isinstance(out, dict) and (lock.parent / str(out.get("path", ""))) == tracked:
                        return out, lock.relative_to(root).as_posix(), tracked
        if tracked == root:
            break
    return None


def _lock_files(folder: Path, root: Path) -> list[Path]:
    """``dvc.lock`` files that may name an output in ``folder``: its own and those of the folders
    above it, up to the repository's root (a stage's outputs are relative to its ``dvc.yaml``)."""
    found = []
    for candidate in [folder, *folder.parents]:
        if (candidate / "dvc.lock").is_file():
            found.append(candidate / "dvc.lock")
        if candidate == root:
            break
    return found


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read the DVC file {path.name!r}: {type(exc).__name__}") from None
    return document if isinstance(document, dict) else {}


def _default_remote(root: Path) -> dict[str, str] | None:
    """The default remote's name and URL (``core.remote``), ``config.local`` overriding ``config``."""
    sections: dict[str, dict[str, str]] = {}
    for file in ("config", "config.local"):
        for section, values in _config(root / ".dvc" / file).items():
            sections.setdefault(section, {}).update(values)
    name = sections.get("core", {}).get("remote")
    if not name:
        return None
    url = sections.get(f"remote {name}", {}).get("url")
    return {"name": name, **({"url": remote_url(url)} if url else {})}


def _config(path: Path) -> dict[str, dict[str, str]]:
    """DVC's configobj file: ``[core]`` and ``['remote "name"']`` sections of ``key = value`` lines."""
    if not path.is_file():
        return {}
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().strip("'").replace('"', "")
            current = sections.setdefault(" ".join(name.split()), {})
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip().strip("'\"")
    return sections


def _git_head(root: Path) -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() or None


# -- plain files and folders ----------------------------------------------------------------------


def _file_digests(path: Path, *, with_md5: bool = False) -> dict[str, Any]:
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(chunk)
            if with_md5:
                md5.update(chunk)
    result: dict[str, Any] = {"sha256": sha256.hexdigest(), "file": path.name, "bytes": path.stat().st_size}
    if with_md5:
        result["md5"] = md5.hexdigest()
    return result


def _directory_digest(folder: Path) -> dict[str, Any]:
    """SHA-256 over the sorted ``relative path NUL sha256`` lines of the folder's files (links are not
    followed)."""
    files = []
    for candidate in sorted(folder.rglob("*")):
        if candidate.is_file() and not candidate.is_symlink():
            files.append(candidate)
            if len(files) > MAX_DIRECTORY_FILES:
                raise InvalidInput(
                    f"training data folder {folder.name!r} has more than {MAX_DIRECTORY_FILES:,} files: "
                    "track it with DVC (its recorded hash is used) or give one file"
                )
    digest = hashlib.sha256()
    total = 0
    for file in files:
        entry = _file_digests(file)
        total += entry["bytes"]
        digest.update(f"{file.relative_to(folder).as_posix()}\0{entry['sha256']}\n".encode())
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total}


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, else as given."""
    try:
        return path.absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)
