"""The registry service: register, look up, alias, load and predict — the core every adapter calls.

It composes the SQL store (rows), the artifact store (blobs) and the runtimes. Registration computes
everything first (signature, golden cases, ONNX twin and its proof), then writes blobs durably inside
a staging session, then commits the version row: a crash at any point leaves either a complete
version or nothing (the next open removes stray blobs).
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.errors import (
    AliasNotFound,
    InputMismatch,
    IntegrityFailure,
    InvalidInput,
    InvalidName,
    ModelportError,
    NotFound,
    PromotionRefused,
    RuntimeFailure,
    VersionArchived,
    brief,
)
from modelport.progress import Progress, no_progress
from modelport.registry.artifacts import ArtifactStore
from modelport.registry.names import (
    DEFAULT_ALIAS,
    LATEST,
    ModelRef,
    check_alias_name,
    check_model_name,
    check_version_number,
    parse_ref,
)
from modelport.registry.records import ModelRecord, VersionRecord
from modelport.registry.store import NewVersion, RegistryStore, VersionSummary
from modelport.settings import Settings

if TYPE_CHECKING:
    # Registration (pandas, converters) is imported by ``register`` only: a serving process never
    # pays for it in start-up time or memory. numpy, signatures and runtimes are imported where a
    # version is loaded or compared: `modelport models` and the other commands that only read the
    # registry do not wait ~0.1 s for numpy (docs/performance.md, "CLI start-up"); in the serving hot
    # path the import statement is a dictionary lookup (~70 ns).
    import numpy as np
    import pandas as pd

    from modelport.registry.compatibility import Differences
    from modelport.runtimes.base import Prediction, Runtime
    from modelport.signature import Batch, Signature

__all__ = ["GOLDEN_TOLERANCE", "LoadedVersion", "Registry", "local_actor"]

GOLDEN_TOLERANCE = 1e-4  # served twins are proven to 1e-5; this only absorbs float32 round-off


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    """A version with its runtime loaded from digest-verified bytes."""

    version: VersionRecord
    signature: Signature
    runtime: Runtime

    def predict(self, frame: pd.DataFrame) -> Prediction:
        """Score ``frame``. Input the model cannot score — including missing values it cannot handle,
        which some runtimes answer with NaN instead of an error — raises :class:`InputMismatch`."""
        return self.predict_batch(self.signature.batch(frame))

    def predict_batch(self, batch: Batch, options: Any = None) -> Prediction:
        """Score columns already converted by the signature (the serving hot path). ``options`` are
        the call's run options for a runtime that can be stopped (serving/scoring.py)."""
        import numpy as np

        try:
            if options is None:
                prediction = self.runtime.predict(batch)
            else:  # a cancellable runtime (OnnxRuntime): predict(batch, run_options)
                cancellable: Any = self.runtime
                prediction = cancellable.predict(batch, options)
        except ModelportError:
            raise
        except Exception as exc:
            missing = _features_with_missing(batch)
            if missing:
                raise InputMismatch(
                    f"{self.version.ref} cannot score rows with missing values in {', '.join(missing)}: "
                    f"{brief(exc)}"
                ) from None
            raise RuntimeFailure(f"{self.version.ref} failed to score the input: {brief(exc)}") from None
        scores = prediction.probabilities if prediction.probabilities is not None else prediction.values
        if scores is not None and scores.size and not np.isfinite(scores).all():
            bad_rows = np.flatnonzero(~np.isfinite(scores.reshape(len(scores), -1)).all(axis=1))
            missing = _features_with_missing({k: v[bad_rows] for k, v in batch.items()})
            cause = f"missing values in {', '.join(missing)}" if missing else "its input"
            raise InputMismatch(
                f"{self.version.ref} gives no valid score for row(s) "
                f"{', '.join(str(i) for i in bad_rows[:10])}: the model cannot handle {cause}"
            )
        return prediction

    def check_golden(self) -> None:
        """Replay the golden cases and require the answers recorded at registration (within
        :data:`GOLDEN_TOLERANCE`): the warm-up every version passes before it takes traffic."""
        import numpy as np

        from modelport.runtimes.base import Prediction
        from modelport.runtimes.equivalence import compare

        golden = self.version.golden
        try:
            got = self.predict_batch(self.signature.rows_batch(golden["columns"], golden["rows"]))
        except ModelportError as exc:
            raise RuntimeFailure(f"{self.version.ref} failed to replay its golden cases: {exc}") from None
        outputs = golden["outputs"]
        if "values" in outputs:
            values = np.array([np.nan if v is None else v for v in outputs["values"]], dtype=np.float64)
            expected = Prediction(values=values)
        else:
            expected = Prediction(
                labels=np.array(outputs["labels"], dtype=object),
                probabilities=np.array(outputs["probabilities"], dtype=np.float64),
            )
        report = compare(expected, got, GOLDEN_TOLERANCE)
        if not report.equivalent:
            raise RuntimeFailure(
                f"{self.version.ref} does not reproduce its golden cases: {report.summary()}"
            )

    def close(self) -> None:
        self.runtime.close()


class Registry:
    """Models, versions and aliases over one database and one artifact store."""

    def __init__(self, settings: Settings, store: RegistryStore, artifacts: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts

    def close(self) -> None:
        self.store.db.dispose()

    # -- registration ---------------------------------------------------------------------------

    def register(
        self,
        model: Any = None,
        *,
        name: str,
        sample: pd.DataFrame | str | Path,
        path: str | Path | None = None,
        format: str | None = None,
        trust_pickle: bool = False,
        alias: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        training_data: pd.DataFrame | str | Path | None = None,
        code_revision: str | None = None,
        parent: int | None = None,
        target: str | None = None,
        classes: list[Any] | None = None,
        require_onnx: bool = False,
        creator: str | None = None,
        extra_lineage: Mapping[str, Any] | None = None,
        progress: Progress = no_progress,
    ) -> VersionRecord:
        """Register ``model`` (an in-process object) or the model file at ``path`` as a new version.
        ``extra_lineage`` adds keys to the version's lineage (an import's origin: ``mlflow_import.py``).
        ``progress`` hears each step (modelport/progress.py)."""
        from modelport.registry import intake
        from modelport.registry.lineage import training_data_lineage
        from modelport.registry.registration import (
            artifact_records,
            default_params,
            fingerprint,
            json_safe,
            prepare,
        )
        from modelport.tables import read_table

        check_model_name(name)
        if alias is not None:
            check_alias_name(alias)
        if creator is not None and not 0 < len(creator) <= 200:
            raise InvalidInput("the creator must be 1 to 200 characters")
        if (model is None) == (path is None):
            raise InvalidInput("give either a model object or a model file path, not both or neither")
        progress("reading the model" if path is None else f"reading and checking {Path(path).name}")
        native = (
            intake.from_object(model)
            if path is None
            else intake.from_file(Path(path), format, trust_pickle=trust_pickle)
        )
        progress("reading the sample")
        frame = read_table(Path(sample)) if isinstance(sample, str | Path) else sample
        if parent is not None:
            self.store.get_version(ModelRef(name, version=check_version_number(parent)))
        lineage: dict[str, Any] = {
            "training_data": training_data_lineage(training_data),
            "sample": fingerprint(frame),
            "code_revision": code_revision if code_revision is not None else _git_revision(),
            "params": json_safe(params if params is not None else default_params(native), "param"),
            "metrics": json_safe(metrics, "metric", numbers=True),
            "parent_version": parent,
            "source": native.source,
            "library": native.kind,
            **json_safe(extra_lineage, "lineage"),
        }
        prepared = prepare(
            native,
            frame,
            self.settings,
            target=target,
            classes=classes,
            require_onnx=require_onnx,
            progress=progress,
        )
        if alias is not None:
            self._refuse_incompatible_alias(name, alias, prepared.signature)
        if prepared.sample_check is not None:
            lineage["sample"] = {**(lineage["sample"] or {}), **prepared.sample_check}
        progress("storing the version")
        try:
            with self.artifacts.staging() as staging:
                digests = {role: staging.put(blob) for role, (_fmt, blob, _d) in prepared.blobs.items()}
                return self.store.add_version(
                    NewVersion(
                        model=name,
                        status="ready",
                        serving_format=prepared.serving_format,
                        signature=prepared.signature.to_dict(),
                        golden=prepared.golden,
                        environment=prepared.environment,
                        lineage=lineage,
                        conversion=prepared.conversion,
                        description=description,
                        tags={str(k): str(v) for k, v in (tags or {}).items()},
                        creator=creator if creator is not None else local_actor(),
                        artifacts=artifact_records(digests, prepared),
                        profile=prepared.profile,
                    ),
                    alias=alias,
                )
        except BaseException:
            # The staging session kept its journal: remove the blobs nothing references now (or,
            # if even that fails, on the next open).
            with contextlib.suppress(ModelportError, OSError):
                self.artifacts.recover(self.store.referenced_digests)
            raise

    def _refuse_incompatible_alias(self, name: str, alias: str, signature: Signature) -> None:
        """``register --alias`` onto an alias whose traffic the new version cannot take is refused
        before anything is stored: the override belongs to an explicit, audited alias move."""
        try:
            current = self.store.get_model(name).aliases.get(alias)
        except NotFound:  # the model's first version: no traffic yet
            return
        if current is None:
            return
        from modelport.registry.compatibility import compare as compare_signatures
        from modelport.signature import Signature

        now = Signature.from_dict(self.store.get_version(ModelRef(name, version=current)).signature)
        differences = compare_signatures(now, signature)
        if not differences.compatible:
            raise PromotionRefused(
                f"the new version cannot take the traffic of {name}@{alias} (version {current}): "
                + "; ".join(differences.breaking)
                + f". Register without --alias; to move {name}@{alias} anyway, then run `modelport alias "
                f"set {name}@NEW {alias} --allow-incompatible` (audited)"
            )

    # -- lookups --------------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        return self.store.list_models()

    def model(self, name: str) -> ModelRecord:
        return self.store.get_model(name)

    def versions(self, name: str) -> list[VersionRecord]:
        return self.store.list_versions(name)

    def version_summaries(
        self, name: str, *, limit: int = 50, before: int | None = None
    ) -> list[VersionSummary]:
        """A page of ``name``'s versions for a listing, newest first (two queries; see the store)."""
        return self.store.version_summaries(name, limit=limit, before=before)

    def version_metrics(self, name: str, numbers: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The metrics in the lineage of versions ``numbers`` of ``name`` (a listing's page), in one
        query; versions that do not exist are left out."""
        return self.store.version_metrics(name, numbers)

    def get(self, ref: str | ModelRef) -> VersionRecord:
        """The version a reference (``NAME``, ``NAME@ALIAS``, ``NAME@VERSION``, ``NAME@LABEL``) points
        at. A bare ``NAME`` is the default route: ``NAME@production`` if that alias is set, else
        ``NAME@latest`` — the version serving answers for the same reference."""
        if isinstance(ref, str):
            ref = parse_ref(ref)
        elif not isinstance(ref, ModelRef):
            raise InvalidName(
                f"a model reference is a string like 'name@production', not {type(ref).__name__}"
            )
        if ref.selector is not None:
            return self.store.get_version(ref)
        try:
            return self.store.get_version(ModelRef(ref.name, alias=DEFAULT_ALIAS))
        except AliasNotFound:
            return self.store.get_version(ModelRef(ref.name, alias=LATEST))

    def set_alias(
        self,
        name: str,
        alias: str,
        number: int,
        *,
        actor: str | None = None,
        verify: bool = True,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> VersionRecord:
        """Point ``name@alias`` at version ``number``. With ``verify`` (the default) the version is first
        loaded from digest-checked bytes and must reproduce its golden cases, so an alias never moves to
        a version that cannot serve. A protected alias (the promotion gate, docs/validation.md) moves only
        to a version with a passing validation report for this environment, or with an override reason
        (recorded in the audit log). An alias moves only to a version that can take its traffic
        (:meth:`check_compatible`), unless ``allow_incompatible`` (recorded in the audit log)."""
        actor = actor if actor is not None else local_actor()
        number = check_version_number(number)
        note = self.check_gate(name, alias, number, actor=actor, override_reason=override_reason)
        allowed = self.check_compatible(
            name, alias, number, actor=actor, allow_incompatible=allow_incompatible
        )
        if verify:
            self.verify(name, number)
        return self.store.set_alias(
            name, alias, number, actor=actor, note={**(note or {}), **(allowed or {})}
        )

    def compatibility(self, name: str, alias: str, number: int) -> tuple[int, Differences] | None:
        """How version ``number``'s signature differs from that of the version ``name@alias`` points at
        now (docs/releases.md, "Compatible signatures"), with that version's number; None when the alias
        is not set or already points there (no traffic to compare with)."""
        current = self.store.get_model(name).aliases.get(alias)
        if current is None or current == number:
            return None
        now = self.store.get_version(ModelRef(name, version=current))
        candidate = self.store.get_version(ModelRef(name, version=number))
        from modelport.registry.compatibility import compare as compare_signatures
        from modelport.signature import Signature

        return current, compare_signatures(
            Signature.from_dict(now.signature), Signature.from_dict(candidate.signature)
        )

    def check_compatible(
        self,
        name: str,
        alias: str,
        number: int,
        *,
        actor: str,
        allow_incompatible: bool = False,
        arm: str = "alias",
    ) -> dict[str, Any] | None:
        """Refuse to send ``name@alias``'s traffic (all of it, or a canary's or shadow's share: ``arm``)
        to version ``number`` when its signature cannot take it. The refusal is audited and raises
        :class:`PromotionRefused` naming the differences; with ``allow_incompatible`` the move goes ahead
        and the differences are returned as the audit note of the change."""
        found = self.compatibility(name, alias, number)
        if found is None or found[1].compatible:
            return None
        current, differences = found
        what = f"make version {number} the {arm}" if arm != "alias" else f"move {name}@{alias} to it"
        reason = (
            f"version {number} cannot take the traffic of {name}@{alias} (version {current}): "
            + "; ".join(differences.breaking)
        )
        if not allow_incompatible:
            self.store.append_audit(
                actor,
                "alias.refused",
                f"{name}@{alias}",
                after={"version": number, "arm": arm, "reason": reason},
            )
            raise PromotionRefused(
                f"{reason}. To {what} anyway, pass --allow-incompatible "
                '(API: "allow_incompatible": true); the override is audited'
            )
        return {"allow_incompatible": {arm: list(differences.breaking)}}

    def check_gate(
        self, name: str, alias: str, number: int, *, actor: str, override_reason: str | None = None
    ) -> dict[str, Any] | None:
        """The promotion gate (docs/validation.md): on a protected alias, ``number`` needs a passing
        validation report for this environment, or an override reason — returned as the audit note.
        A refusal is audited and raises :class:`PromotionRefused`."""
        if alias not in self.store.protected(name):
            return None
        from modelport.environment import fingerprint

        if self.store.validation.has_passing_report(name, number, fingerprint()):
            return None
        reason = (
            f"{name}@{alias} is protected: version {number} has no passing validation report "
            f"for this environment (run `modelport validate {name}@{number}`)"
        )
        if override_reason is None or not override_reason.strip():
            self.store.append_audit(
                actor, "alias.refused", f"{name}@{alias}", after={"version": number, "reason": reason}
            )
            raise PromotionRefused(reason)
        return {"override": override_reason.strip()[:500]}

    def verify(self, name: str, number: int) -> None:
        """Load ``name@number`` from digest-checked bytes and replay its golden cases (raises if it
        cannot serve)."""
        loaded = self.load(ModelRef(name, version=number))
        try:
            loaded.check_golden()
        finally:
            loaded.close()

    def set_policy(self, name: str, on_violation: str, *, actor: str | None = None) -> None:
        """``flag`` (default) or ``reject`` values outside the signature when serving ``name``."""
        self.store.set_policy(name, on_violation, actor=actor if actor is not None else local_actor())

    def remove_alias(self, name: str, alias: str, *, actor: str | None = None) -> None:
        self.store.remove_alias(name, alias, actor=actor if actor is not None else local_actor())

    # -- loading and predicting -----------------------------------------------------------------

    def read_artifact(self, version: VersionRecord, role: str) -> bytes:
        """An artifact's bytes, refused unless they still hash to the recorded digest."""
        artifact = version.artifact(role)
        if artifact is None:
            raise NotFound(f"{version.ref} has no {role} artifact")
        try:
            return self.artifacts.read(artifact.digest)
        except IntegrityFailure:
            raise IntegrityFailure(
                f"refusing to load {version.ref}: its {role} artifact ({artifact.format}) does not "
                f"match the recorded digest sha256:{artifact.digest}; the stored file was changed"
            ) from None
        except NotFound:
            raise IntegrityFailure(
                f"refusing to load {version.ref}: its {role} artifact sha256:{artifact.digest} "
                "is missing from the artifact store"
            ) from None

    def load(self, ref: str | ModelRef | VersionRecord, *, role: str | None = None) -> LoadedVersion:
        """Load a version's runtime: the serving format by default, or the artifact ``role``."""
        version = ref if isinstance(ref, VersionRecord) else self.get(ref)
        if version.archived_at is not None:
            raise VersionArchived(
                f"{version.ref} was archived on {version.archived_at.date().isoformat()}: its record and "
                "audit history are kept, its artifacts were freed"
            )
        if role is None:
            role = "onnx" if version.serving_format == "onnx" else "native"
        artifact = version.artifact(role)
        if artifact is None:
            raise NotFound(f"{version.ref} has no {role} artifact")
        from modelport.runtimes.base import load_runtime
        from modelport.signature import Signature

        signature = Signature.from_dict(version.signature)
        blob = self.read_artifact(version, role)
        return LoadedVersion(
            version, signature, load_runtime(artifact.format, blob, artifact.details, signature)
        )

    def predict(
        self, ref: str | ModelRef, frame: pd.DataFrame, *, progress: Progress = no_progress
    ) -> pd.DataFrame:
        """Score ``frame`` locally with the version's serving runtime; one output row per input row."""
        progress(f"loading {ref}")
        loaded = self.load(ref)
        try:
            progress(f"scoring {len(frame):,} row(s) with {loaded.version.ref}")
            return prediction_frame(loaded.predict(frame), loaded.signature)
        finally:
            loaded.close()


def prediction_frame(prediction: Prediction, signature: Signature) -> pd.DataFrame:
    """A prediction as a table: ``label`` and ``p_<class>`` columns, or ``prediction`` for regressors."""
    import numpy as np
    import pandas as pd

    if prediction.values is not None:
        return pd.DataFrame({"prediction": prediction.values})
    assert prediction.labels is not None and prediction.probabilities is not None
    columns: dict[str, Any] = {"label": list(prediction.labels)}
    for index, name in enumerate(signature.outputs.probability_names):
        columns[name] = np.asarray(prediction.probabilities[:, index], dtype=np.float64)
    return pd.DataFrame(columns)


def _features_with_missing(batch: dict[str, np.ndarray]) -> list[str]:
    import numpy as np

    def has_missing(column: np.ndarray) -> bool:
        if column.dtype.kind == "f":
            return bool(np.isnan(column).any())
        return column.dtype == object and any(v is None or v != v for v in column.tolist())

    return [name for name, column in batch.items() if has_missing(column)]


def local_actor() -> str:
    """The actor of a change made in this process without an API key: ``local:<OS user>``."""
    try:
        return f"local:{getpass.getuser()}"
    except (OSError, KeyError):
        return "local:unknown"


def _git_revision() -> str | None:
    from modelport.registry.registration import code_revision

    return code_revision()
