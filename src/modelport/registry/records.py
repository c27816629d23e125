"""What the registry hands out: plain, immutable records, free of SQL and HTTP."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["ArtifactRecord", "ModelRecord", "VersionRecord"]

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """One stored blob of a version. ``role`` is ``onnx`` (the converted twin) or ``native``."""

    role: str
    format: str
    digest: str
    size: int
    details: JSONDict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ArtifactRecord(role={self.role!r}, format={self.format!r}, "
            f"digest='{self.digest[:12]}…', size={self.size})"
        )


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """An immutable model version, as registered."""

    model: str
    number: int
    uuid: str
    status: str
    serving_format: str
    signature: JSONDict
    golden: JSONDict
    environment: JSONDict
    lineage: JSONDict
    conversion: JSONDict
    description: str
    tags: dict[str, str]
    creator: str
    created_at: datetime
    artifacts: tuple[ArtifactRecord, ...]
    aliases: tuple[str, ...] = ()
    label: str | None = None  # semantic version label (docs/releases.md)
    archived_at: datetime | None = None  # set by `modelport gc`: artifacts freed, record kept

    def __repr__(self) -> str:
        # A notebook's `version` or `print(version)`: who it is, not ~10 KB of signature and golden
        # rows (`to_dict()` has everything).
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("label", self.label), ("aliases", self.aliases))
            if value
        )
        archived = (
            "" if self.archived_at is None else f", archived_at={self.archived_at.date().isoformat()!r}"
        )
        created = self.created_at.isoformat(timespec="seconds")
        return (
            f"VersionRecord(ref={self.ref!r}, uuid={self.uuid!r}, status={self.status!r}, "
            f"serving_format={self.serving_format!r}{extra}, created_at={created!r}{archived})"
        )

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.number}"

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(artifact.format for artifact in self.artifacts)

    def artifact(self, role: str) -> ArtifactRecord | None:
        return next((a for a in self.artifacts if a.role == role), None)

    def to_dict(self, *, full: bool = True) -> JSONDict:
        """A JSON-ready dict. ``full=False`` leaves out the bulky signature and golden cases."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["archived_at"] = None if self.archived_at is None else self.archived_at.isoformat()
        data["formats"] = list(self.formats)
        if not full:
            for bulky in ("signature", "golden", "environment", "conversion"):
                data.pop(bulky)
        return data


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A model: a name with versions and aliases."""

    name: str
    description: str
    created_at: datetime
    latest_version: int
    aliases: dict[str, int]
    on_violation: str = "flag"

    def __repr__(self) -> str:
        created = self.created_at.isoformat(timespec="seconds")
        return (
            f"ModelRecord(name={self.name!r}, latest_version={self.latest_version}, "
            f"aliases={self.aliases!r}, created_at={created!r})"
        )

    def to_dict(self) -> JSONDict:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data
