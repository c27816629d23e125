"""Export a version's proven ONNX twin: ``model.onnx`` with ``model.signature.json`` and
``model.card.md`` beside it (docs/formats.md, "Exporting the twin").

The twin is the version's ``onnx`` artifact: the converted model whose equivalence to the native one
was proven at registration (``conversion.status == "equivalent"``), or the model itself when it was
registered as ONNX (``"not_needed"``). Its bytes are read through :meth:`Registry.read_artifact`, which
refuses bytes that no longer hash to the recorded digest, and hashed again here before anything is
written.

Files are written only into the output path's own folder, each to a temporary file there, flushed to
disk and renamed into place: a reader never sees half a file, and a failure leaves no partial export.
An existing file is replaced only when asked (``force``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.errors import (
    Conflict,
    ConversionFailed,
    FileMissing,
    IntegrityFailure,
    InvalidInput,
    VersionArchived,
)

if TYPE_CHECKING:
    from modelport.registry.records import VersionRecord
    from modelport.registry.service import Registry

__all__ = ["PROVEN", "Exported", "export_twin", "model_card", "sidecar_paths"]

PROVEN = ("equivalent", "not_needed")  # conversion statuses whose ONNX artifact answers as the model
_GOLDEN_SHOWN = 10
_TEXT = 200


@dataclass(frozen=True, slots=True)
class Exported:
    ref: str
    onnx: Path
    signature: Path
    card: Path
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "onnx": str(self.onnx),
            "signature": str(self.signature),
            "card": str(self.card),
            "sha256": self.sha256,
            "size": self.size,
        }


def sidecar_paths(output: Path) -> tuple[Path, Path]:
    """``model.signature.json`` and ``model.card.md`` for ``model.onnx``, in the same folder."""
    stem = output.name[: -len(".onnx")] if output.name.lower().endswith(".onnx") else output.name
    return output.with_name(f"{stem}.signature.json"), output.with_name(f"{stem}.card.md")


def export_twin(registry: Registry, ref: str, output: Path, *, force: bool = False) -> Exported:
    """Write ``ref``'s ONNX twin to ``output`` with its signature and model card beside it."""
    version = registry.get(ref)
    if version.archived_at is not None:
        raise VersionArchived(f"{version.ref} was archived: its artifacts were freed, nothing to export")
    artifact = version.artifact("onnx")
    status = str(version.conversion.get("status") or "not recorded")
    if artifact is None or status not in PROVEN:
        reason = str(version.conversion.get("reason") or "")
        raise ConversionFailed(  # the twin was never proven: exit code 1, as a refusal
            f"{version.ref} has no proven ONNX twin to export (conversion: {status}"
            + (f": {reason[:200]}" if reason else "")
            + "); it serves its native format"
        )
    folder = output.parent
    if not output.name or output.name in (".", "..") or output.is_dir():
        raise InvalidInput(f"{output} is a folder: give a file name such as {output / 'model.onnx'}")
    if not folder.is_dir():
        raise FileMissing(f"folder {folder} does not exist")
    signature_path, card_path = sidecar_paths(output)
    existing = [p for p in (output, signature_path, card_path) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise Conflict(f"{', '.join(map(str, existing))} already exist(s): pass --force to replace")
    blob = registry.read_artifact(version, "onnx")  # re-hashed by the artifact store
    digest = hashlib.sha256(blob).hexdigest()
    if digest != artifact.digest:  # the store checked it; the export states it, so check it here too
        raise IntegrityFailure(f"{version.ref}'s ONNX artifact does not match sha256:{artifact.digest}")
    signature_text = json.dumps(version.signature, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    card = model_card(version, digest, len(blob), output.name)
    _write_all(
        [
            (signature_path, signature_text.encode()),
            (card_path, card.encode()),
            (output, blob),  # last: the model appears once its companions are in place
        ]
    )
    return Exported(version.ref, output, signature_path, card_path, digest, len(blob))


def _write_all(files: list[tuple[Path, bytes]]) -> None:
    """Each file to a temporary file in its own folder, flushed, then renamed over the target."""
    written: list[tuple[str, Path]] = []
    try:
        for target, data in files:
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            written.append((temporary, target))
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)  # an export is meant to be shared (mkstemp makes 0600)
        for temporary, target in written:
            os.replace(temporary, target)  # a symlink at target is replaced, never followed
    finally:
        for temporary, _ in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    with contextlib.suppress(OSError):  # the renames themselves, durable
        directory = os.open(files[0][0].parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# -- the model card --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= _TEXT else text[: _TEXT - 1] + "…"


def _table(heading: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def model_card(version: VersionRecord, digest: str, size: int, filename: str) -> str:
    """A Markdown model card from what the version recorded: nothing recomputed, no model loaded."""
    signature = version.signature
    outputs = signature.get("outputs", {})
    lines = [f"# {version.model} version {version.number}", ""]
    if version.description:
        lines += [version.description, ""]
    facts = [
        ["Reference", version.ref],
        ["UUID", version.uuid],
        ["Status", version.status],
        ["Label", version.label or ""],
        ["Aliases", ", ".join(version.aliases)],
        ["Created", version.created_at.isoformat(timespec="seconds")],
        ["Creator", version.creator],
        ["Task", outputs.get("task", "")],
        ["Classes", ", ".join(map(str, outputs.get("classes", [])))],
        ["File", filename],
        ["SHA-256", digest],
        ["Size (bytes)", f"{size:,}"],
    ]
    lines += [*_table(["", ""], [row for row in facts if row[1]]), ""]
    if version.tags:
        lines += ["## Tags", "", *_table(["Tag", "Value"], [[k, v] for k, v in sorted(version.tags.items())])]
        lines += [""]
    lines += ["## Inputs", ""]
    lines += _table(
        ["Feature", "Type", "Minimum", "Maximum", "Categories", "Missing rate"],
        [
            [
                f.get("name"),
                f.get("dtype"),
                f.get("minimum", ""),
                f.get("maximum", ""),
                ", ".join(map(str, f.get("categories") or [])),
                f.get("missing_rate", 0.0),
            ]
            for f in signature.get("inputs", [])
        ],
    )
    conversion = version.conversion
    lines += ["", "## Equivalence proof", ""]
    lines += [f"Conversion: **{conversion.get('status', 'not recorded')}**"]
    if conversion.get("converter"):
        lines += [f"Converter: {_cell(conversion['converter'])}"]
    if conversion.get("reason"):
        lines += [f"Reason: {_cell(conversion['reason'])}"]
    proof = conversion.get("proof")
    if isinstance(proof, dict):
        lines += ["", *_table(["Measure", "Value"], [[k, v] for k, v in proof.items()])]
    golden = version.golden
    rows: list[Any] = golden["rows"] if isinstance(golden.get("rows"), list) else []
    if rows:
        lines += ["", "## Golden cases", ""]
        lines += [f"The first {min(len(rows), _GOLDEN_SHOWN)} of {len(rows)} rows and the answers recorded."]
        out: dict[str, Any] = golden["outputs"] if isinstance(golden.get("outputs"), dict) else {}
        answers = out.get("values") or out.get("labels") or []
        heading = "Recorded value" if "values" in out else "Recorded label"
        lines += [
            "",
            *_table(
                [*map(str, golden.get("columns", [])), heading],
                [
                    [*row, answers[i] if i < len(answers) else ""]
                    for i, row in enumerate(rows[:_GOLDEN_SHOWN])
                ],
            ),
        ]
    lineage = {k: v for k, v in version.lineage.items() if k != "migrations"}
    if lineage:
        lines += ["", "## Lineage", "", *_table(["", ""], [[k, v] for k, v in lineage.items()])]
    lines += [
        "",
        "## Using the file",
        "",
        f"`{filename}` runs in onnxruntime. Its inputs are the features above (one 2-D tensor in the "
        "order listed, or one `[N, 1]` tensor per feature, as the model's own inputs say); "
        "the signature is beside it as JSON.",
        "",
    ]
    return "\n".join(lines)
