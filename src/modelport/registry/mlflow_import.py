"""Importing MLflow models: a local MLflow model folder, ``runs:/RUN_ID/PATH``, ``models:/NAME/VERSION``
or ``models:/NAME@ALIAS`` becomes a modelport version through the normal registration path (the
same checks, ONNX conversion and equivalence proof), with MLflow's record as its lineage.

MLflow's own client resolves the URIs (``MLFLOW_TRACKING_URI`` or an explicit tracking URI) and
downloads the model folder; the model file is then read by modelport's intake, not by MLflow's
loaders:

- ``sklearn`` flavour saved as skops (MLflow's default since 3.x): read as skops, with its type checks;
- ``xgboost`` (ubj/json) and ``lightgbm`` Booster text: read as those formats;
- a flavour saved as pickle or cloudpickle runs code when loaded: refused unless ``trust_pickle``,
  then unpickled here, in the importing process (the same trust as loading it yourself) — never in
  a server, and never stored as a pickle;
- a ``python_function``-only model (custom Python code) is always refused: its code is arbitrary and
  there is nothing to convert into a safe, stored form.

Imports are idempotent: a version records ``lineage["mlflow"]`` (run, model URI, registered model and
version), and one already imported under that identity is reported, not imported again.
"""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from modelport.errors import InvalidInput, ModelportError, NotFound, UnsafeFormat, brief
from modelport.optional import require
from modelport.progress import Progress, no_progress
from modelport.registry.records import VersionRecord
from modelport.registry.service import Registry

__all__ = ["ImportResult", "MlflowSource", "import_all", "import_model", "modelport_name"]

_SYSTEM_TAG = "mlflow."  # MLflow's own run tags (user, source, log-model history …) are not copied
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,62}")


@dataclass
class MlflowSource:
    """What an MLflow URI or folder resolved to."""

    uri: str
    folder: Path
    run_id: str | None = None
    artifact_path: str | None = None
    registered_model: str | None = None
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The keys an earlier import of the same model is recognised by."""
        if self.registered_model is not None:
            return {"registered_model": self.registered_model, "version": self.version}
        return {"run_id": self.run_id, "model_uri": self.uri}


@dataclass(frozen=True, slots=True)
class ImportResult:
    source: str
    name: str
    status: str  # imported | already imported | failed
    version: VersionRecord | None = None
    reason: str = ""
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "name": self.name,
            "status": self.status,
            "version": None if self.version is None else self.version.number,
            "reason": self.reason,
            "aliases": list(self.aliases),
        }


def import_model(
    registry: Registry,
    source: str,
    *,
    name: str,
    alias: str | None = None,
    sample: pd.DataFrame | Path | None = None,
    trust_pickle: bool = False,
    tracking_uri: str | None = None,
    progress: Progress = no_progress,
) -> ImportResult:
    """Import one MLflow model (a folder with ``MLmodel`` or an MLflow URI) as a version of ``name``."""
    folder = "://" not in source and ":/" not in source
    client = _client(tracking_uri, required=not folder)  # a folder's run is read when a server is set
    with _resolved(client, source, tracking_uri, progress) as resolved:
        return _import(registry, client, resolved, name, alias, sample, trust_pickle, progress)


def import_all(
    registry: Registry,
    *,
    tracking_uri: str | None = None,
    trust_pickle: bool = False,
    progress: Progress = no_progress,
) -> list[ImportResult]:
    """Every version of every registered model of the MLflow registry, oldest first, then their
    aliases; versions imported before are skipped. A version that fails does not stop the others."""
    client = _client(tracking_uri)
    results: list[ImportResult] = []
    for model in _pages(client.search_registered_models):
        try:
            name = modelport_name(model.name)
        except ModelportError as exc:
            results.append(ImportResult(f"models:/{model.name}", "-", "failed", reason=str(exc)))
            continue
        found = _pages(functools.partial(client.search_model_versions, f"name = '{_quoted(model.name)}'"))
        numbers: dict[str, int] = {}
        imported: list[ImportResult] = []
        for listed in sorted(found, key=lambda v: int(v.version)):
            uri = f"models:/{model.name}/{listed.version}"
            try:
                # fetched one by one: a search's versions may lack their aliases
                known = client.get_model_version(model.name, listed.version)
                with _resolved(client, uri, tracking_uri, progress, known=known) as resolved:
                    result = _import(registry, client, resolved, name, None, None, trust_pickle, progress)
            except ModelportError as exc:
                result = ImportResult(uri, name, "failed", reason=str(exc))
            except Exception as exc:  # MLflow's own errors: one version, not the whole walk
                result = ImportResult(uri, name, "failed", reason=brief(exc))
            if result.version is not None:
                numbers[str(listed.version)] = result.version.number
            imported.append(result)
        results += _point_aliases(registry, name, dict(model.aliases or {}), numbers, imported)
    return results


def modelport_name(mlflow_name: str) -> str:
    """An MLflow registered model's name as a modelport model name: lower case, other characters
    than letters, digits, ``.``, ``_`` and ``-`` replaced by ``-``."""
    from modelport.registry.names import check_model_name

    name = re.sub(r"[^a-z0-9._-]+", "-", mlflow_name.strip().lower()).strip("-._")
    name = re.sub(r"\.{2,}", ".", name)[:100].strip("-._")
    check_model_name(name)
    return name


# -- resolving ------------------------------------------------------------------------------------


def _client(tracking_uri: str | None, *, required: bool = True) -> Any:
    """MLflow's client for ``tracking_uri`` (else ``MLFLOW_TRACKING_URI``), or ``None`` when neither is
    set and ``required`` is false. Never MLflow's own default: that creates ``./mlflow.db``."""
    require("mlflow", "mlflow", "importing MLflow models")
    from mlflow import MlflowClient
    from mlflow.environment_variables import MLFLOW_TRACKING_URI

    if tracking_uri is None and not MLFLOW_TRACKING_URI.is_set():  # type: ignore[no-untyped-call]
        if not required:
            return None
        raise InvalidInput("no MLflow tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def _resolved(
    client: Any, source: str, tracking_uri: str | None, progress: Progress, known: Any = None
) -> Iterator[MlflowSource]:
    """``source`` downloaded (a URI) or found (a folder), with its run and registry record."""
    if "://" not in source and ":/" not in source:
        folder = Path(source)
        if not (folder / "MLmodel").is_file():
            raise NotFound(f"{source!r} is not an MLflow model folder (it has no MLmodel file)")
        run_id = _mlmodel(folder).get("run_id")
        yield MlflowSource(uri=str(folder.absolute()), folder=folder, run_id=run_id)
        return
    import mlflow

    resolved = MlflowSource(uri=source, folder=Path())
    registered = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([^/]+))/?", source)
    runs = re.fullmatch(r"runs:/([^/]+)/(.+)", source)
    if registered is not None:
        model_name, number, alias = registered.groups()
        mv = known
        if mv is None:
            mv = (
                client.get_model_version(model_name, number)
                if number is not None
                else client.get_model_version_by_alias(model_name, alias)
            )
        resolved.registered_model, resolved.version = mv.name, str(mv.version)
        resolved.run_id = mv.run_id or None
        resolved.aliases = list(mv.aliases or [])
        resolved.description = mv.description or ""
        resolved.tags = dict(mv.tags or {})
        download = f"models:/{mv.name}/{mv.version}"  # the version the alias pointed at when resolved
    elif runs is not None:
        resolved.run_id, resolved.artifact_path = runs.group(1), runs.group(2).strip("/")
        download = source
    elif source.startswith("models:/"):  # an MLflow 3 logged model id, models:/m-…
        download = source
    else:
        raise InvalidInput(
            f"unsupported MLflow source {source!r}: give a model folder, runs:/RUN_ID/PATH, "
            "models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    progress(f"downloading {download}")
    with tempfile.TemporaryDirectory(prefix="modelport-mlflow-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=download, dst_path=tmp, tracking_uri=tracking_uri
            )
        except Exception as exc:
            raise NotFound(f"MLflow could not resolve {download!r}: {brief(exc)}") from None
        resolved.folder = Path(local)
        if not (resolved.folder / "MLmodel").is_file():
            raise NotFound(f"{download!r} is not an MLflow model (no MLmodel file)")
        resolved.run_id = resolved.run_id or _mlmodel(resolved.folder).get("run_id")
        yield resolved


def _mlmodel(folder: Path) -> dict[str, Any]:
    import yaml

    document = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise InvalidInput("the MLmodel file is not a YAML mapping")
    return document


# -- one model ------------------------------------------------------------------------------------


def _import(
    registry: Registry,
    client: Any,
    resolved: MlflowSource,
    name: str,
    alias: str | None,
    sample: pd.DataFrame | Path | None,
    trust_pickle: bool,
    progress: Progress,
) -> ImportResult:
    earlier = _already_imported(registry, name, resolved.identity())
    if earlier is not None:
        return ImportResult(resolved.uri, name, "already imported", earlier, f"as {earlier.ref}")
    mlmodel = _mlmodel(resolved.folder)
    model_file, fmt = _model_file(resolved.folder, mlmodel, trust_pickle)
    signature = _signature(mlmodel)
    frame = _sample(resolved.folder, mlmodel, sample, signature)
    run = _run(client, resolved.run_id, progress) if resolved.run_id and client is not None else None
    run_tags = {k: v for k, v in (run.data.tags if run else {}).items() if not k.startswith(_SYSTEM_TAG)}
    description = resolved.description or (run.data.tags.get("mlflow.note.content", "") if run else "")
    lineage = {
        "mlflow": {
            "model_uri": resolved.uri,
            "run_id": resolved.run_id,
            "artifact_path": resolved.artifact_path,
            "registered_model": resolved.registered_model,
            "version": resolved.version,
            "aliases": resolved.aliases,
            "flavor": fmt,
            "model_id": mlmodel.get("model_id"),
            "mlflow_version": mlmodel.get("mlflow_version"),
            "signature": mlmodel.get("signature"),
            "run_tags": run_tags,
        }
    }
    progress(f"registering {resolved.uri} as {name}")
    version = registry.register(
        name=name,
        path=model_file,
        format=fmt,
        trust_pickle=trust_pickle,
        sample=frame,
        alias=alias,
        description=description,
        tags={**run_tags, **resolved.tags},
        params=dict(run.data.params) if run else {},
        metrics=dict(run.data.metrics) if run else {},
        extra_lineage=lineage,
        progress=progress,
    )
    return ImportResult(resolved.uri, name, "imported", version, aliases=(alias,) if alias else ())


def _already_imported(registry: Registry, name: str, identity: dict[str, Any]) -> VersionRecord | None:
    try:
        versions = registry.versions(name)
    except NotFound:
        return None
    for version in versions:
        recorded = version.lineage.get("mlflow") or {}
        if all(recorded.get(k) == v for k, v in identity.items()):
            return version
    return None


def _model_file(folder: Path, mlmodel: dict[str, Any], trust_pickle: bool) -> tuple[Path, str]:
    """The model's file in a format modelport's intake reads, from the first flavour it knows."""
    flavors = mlmodel.get("flavors") or {}
    if "sklearn" in flavors:
        flavor = flavors["sklearn"]
        serialization = flavor.get("serialization_format", "cloudpickle")
        fmt = "skops" if serialization == "skops" else "pickle"
        file = folder / str(flavor.get("pickled_model", "model.pkl"))
    elif "xgboost" in flavors:
        flavor = flavors["xgboost"]
        file = folder / str(flavor.get("data", "model.ubj"))
        fmt = {"json": "xgboost-json", "ubj": "xgboost-ubj"}.get(str(flavor.get("model_format", "ubj")), "")
        if not fmt:
            raise UnsafeFormat(
                f"the XGBoost model is saved as {flavor.get('model_format')!r}: re-log it as ubj"
            )
    elif "lightgbm" in flavors:
        flavor = flavors["lightgbm"]
        file = folder / str(flavor.get("data", "model.lgb"))
        serialization = flavor.get("serialization_format", "cloudpickle")
        fmt = "lightgbm-text" if file.suffix == ".lgb" else "skops" if serialization == "skops" else "pickle"
    else:
        raise UnsafeFormat(
            "the MLflow model has no sklearn, xgboost or lightgbm flavour (it has "
            + (", ".join(sorted(flavors)) or "none")
            + "): a python_function model runs arbitrary code and cannot be converted to a safe form"
        )
    if fmt == "pickle" and not trust_pickle:
        raise UnsafeFormat(
            f"the MLflow model is saved as a pickle ({file.name}), which runs code when loaded: pass "
            "--trust-pickle if you trust its author (it is loaded here, converted, never stored as a pickle)"
        )
    return file, fmt


def _signature(mlmodel: dict[str, Any]) -> Any:
    from mlflow.models.signature import ModelSignature

    recorded = mlmodel.get("signature")
    return ModelSignature.from_dict(recorded) if isinstance(recorded, dict) else None


_DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool"}


def _sample(
    folder: Path, mlmodel: dict[str, Any], sample: pd.DataFrame | Path | None, signature: Any
) -> pd.DataFrame:
    """The given sample, else the logged input example; in the signature's column order and types."""
    if sample is None:
        from mlflow.models import Model

        example = Model.load(str(folder / "MLmodel")).load_input_example(str(folder))
        if example is None:
            raise InvalidInput("the MLflow model has no input example: pass --sample FILE")
        frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)
    elif isinstance(sample, pd.DataFrame):
        frame = sample
    else:
        from modelport.tables import read_table

        frame = read_table(sample)
    return _as_signed(frame, signature)


def _as_signed(frame: pd.DataFrame, signature: Any) -> pd.DataFrame:
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not inputs.has_input_names():
        return frame
    columns = inputs.input_names()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInput(f"the sample lacks the MLflow signature's column(s): {', '.join(missing[:20])}")
    frame = frame[columns].copy()
    for spec in inputs.inputs:
        dtype = _DTYPES.get(str(getattr(spec.type, "name", "")))
        if dtype is not None and not frame[spec.name].isna().any():
            frame[spec.name] = frame[spec.name].astype(dtype)
    return frame


def _run(client: Any, run_id: str, progress: Progress) -> Any:
    progress(f"reading run {run_id}")
    try:
        return client.get_run(run_id)
    except Exception:  # a folder copied from elsewhere: its run is not in this tracking server
        return None


# -- aliases and paging ---------------------------------------------------------------------------


def _point_aliases(
    registry: Registry,
    name: str,
    aliases: dict[str, Any],
    numbers: dict[str, int],
    results: list[ImportResult],
) -> list[ImportResult]:
    """Point ``name``'s aliases like MLflow's (through :meth:`Registry.set_alias`: verified, gated and
    audited like any alias move); each result lists the aliases on its version, and says why an
    alias of its MLflow version was not set."""
    moved: dict[int, list[str]] = {}
    refused: dict[int, list[str]] = {}
    for mlflow_alias, mlflow_version in sorted(aliases.items()):
        number = numbers.get(str(mlflow_version))
        if number is None:
            continue  # its version failed to import
        alias = mlflow_alias.strip().lower()
        if not _ALIAS.fullmatch(alias) or alias == "latest":
            refused.setdefault(number, []).append(f"alias {mlflow_alias!r} is not a modelport alias name")
            continue
        try:
            if registry.model(name).aliases.get(alias) != number:
                registry.set_alias(name, alias, number)
        except ModelportError as exc:  # a protected alias (promotion gate), an incompatible move
            refused.setdefault(number, []).append(f"alias {alias} not moved: {exc}")
            continue
        moved.setdefault(number, []).append(alias)
    updated = []
    for r in results:
        if r.version is not None:
            notes = "; ".join([r.reason, *refused.get(r.version.number, [])][0 if r.reason else 1 :])
            r = ImportResult(
                r.source, r.name, r.status, r.version, notes, tuple(moved.get(r.version.number, ()))
            )
        updated.append(r)
    return updated


def _pages(search: Any) -> Iterator[Any]:
    token = None
    while True:
        page = search(max_results=100, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")
