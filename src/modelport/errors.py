"""One exception tree for modelport. Core errors carry meaning, never HTTP status codes.

    ModelportError
     ├── InvalidInput                 the caller sent something unusable (bad name, bad sample …)
     │    ├── InvalidName             a model name, alias name or reference breaks the naming rules
     │    ├── UnknownFormat           a file is in no format modelport can read
     │    ├── UnsafeFormat            code-executing input (pickle) without an explicit opt-in
     │    ├── SampleMismatch          sample columns do not match what the model expects
     │    ├── UnsupportedMediaType    a request body in a content type the route cannot read
     │    └── InputMismatch           prediction input does not match the version's signature
     │         └── ValuesRejected     values outside the training ranges, refused by a "reject" policy
     ├── NotFound                     the thing named does not exist
     │    ├── ModelNotFound
     │    ├── VersionNotFound
     │    ├── AliasNotFound
     │    ├── VersionArchived         the version was archived by retention: metadata kept, artifacts freed
     │    └── FileMissing             a file given by path is not there
     ├── Conflict                     the request clashes with the current state (duplicate …)
     │    └── PromotionRefused        a protected alias may not move to a version without a passing report
     ├── IntegrityFailure             a stored artifact no longer matches its recorded digest
     ├── ConversionFailed             a model could not be converted or proven equivalent
     ├── RuntimeFailure               a runtime failed to load or to predict
     ├── ScoringTimeout               a runtime call passed its deadline and was stopped
     ├── VersionFailing               a version missed its deadline repeatedly and is rested for a while
     ├── StorageFailure               the database refused an operation (reported without its SQL)
     ├── StoreNotReady                the registry database or artifact store is missing, unreachable, refused
     │    │                           us, or needs a migration
     │    └── IdentityProviderUnavailable  the OpenID provider's signing keys cannot be fetched
     ├── Unauthenticated              no key, or a key that is unknown, wrong, expired or revoked
     ├── Forbidden                    the key's role does not allow the operation
     ├── RateLimited                  the key (or address) is over its rate or quota; carries retry_after
     ├── AuditFailure                 the audit chain does not verify, or an audit record cannot be written
     └── MissingExtra                 an optional dependency is not installed; says which extra to install

:data:`OUTCOMES` is the one table that maps each class to its HTTP status, gRPC status code, MLflow
``error_code`` and CLI exit code; every adapter reads it through :func:`outcome_for`. Messages built
from a third-party exception go through :func:`brief`, which keeps one line and strips file paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "INTERNAL",
    "OUTCOMES",
    "AliasNotFound",
    "AuditFailure",
    "Conflict",
    "ConversionFailed",
    "FileMissing",
    "Forbidden",
    "IdentityProviderUnavailable",
    "InputMismatch",
    "IntegrityFailure",
    "InvalidInput",
    "InvalidName",
    "MissingExtra",
    "ModelNotFound",
    "ModelportError",
    "NotFound",
    "Outcome",
    "PromotionRefused",
    "RateLimited",
    "RuntimeFailure",
    "SampleMismatch",
    "ScoringTimeout",
    "StorageFailure",
    "StoreNotReady",
    "Unauthenticated",
    "UnknownFormat",
    "UnsafeFormat",
    "UnsupportedMediaType",
    "ValuesRejected",
    "VersionArchived",
    "VersionFailing",
    "VersionNotFound",
    "brief",
    "outcome_for",
]

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.+-]+){2,}(?::\d+)?")


def brief(exc: BaseException, limit: int = 300) -> str:
    """One line describing ``exc`` for a user: no traceback, no file paths, bounded length."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return _PATH.sub("<path>", text)[:limit]


class ModelportError(Exception):
    """Base of every error modelport raises on purpose. ``str(err)`` is safe to show a user."""


class InvalidInput(ModelportError):
    """The caller sent something unusable."""


class InvalidName(InvalidInput):
    """A model name, alias name or model reference breaks the naming rules."""


class UnknownFormat(InvalidInput):
    """A file is in no format modelport can read."""


class UnsafeFormat(InvalidInput):
    """Code-executing input (pickle, joblib) offered without an explicit opt-in."""


class SampleMismatch(InvalidInput):
    """The registration sample does not match the features the model expects."""


class InputMismatch(InvalidInput):
    """Prediction input does not match the version's signature."""

    rejected = False  # True: the values broke the model's "reject" policy (counted per version)


class UnsupportedMediaType(InvalidInput):
    """A request body's content type is one the route cannot read (or a pickle, never read)."""


class ValuesRejected(InputMismatch):
    """Values outside what the version was trained on, refused by the model's ``reject`` policy."""

    rejected = True


class NotFound(ModelportError):
    """The thing named does not exist."""


class ModelNotFound(NotFound):
    """No model of that name."""


class VersionNotFound(NotFound):
    """The model exists but not that version."""


class AliasNotFound(NotFound):
    """The model exists but has no such alias."""


class VersionArchived(NotFound):
    """The version was archived (``modelport gc``): its record stays, its artifacts were freed."""


class FileMissing(NotFound):
    """A file given by path does not exist or is not a regular file."""


class Conflict(ModelportError):
    """The request clashes with the current state."""


class IntegrityFailure(ModelportError):
    """A stored artifact no longer matches the digest recorded when it was registered."""


class ConversionFailed(ModelportError):
    """A model could not be converted to ONNX, or the conversion was not proven equivalent."""


class RuntimeFailure(ModelportError):
    """A runtime failed to load an artifact or to compute a prediction."""


class ScoringTimeout(ModelportError):
    """A runtime call passed its deadline and was stopped (serving/scoring.py)."""


class VersionFailing(ModelportError):
    """A version missed its scoring deadline repeatedly: it answers nothing until its rest is over."""


class StorageFailure(ModelportError):
    """The registry database refused an operation."""


class StoreNotReady(ModelportError):
    """The registry database does not exist yet, cannot be reached, or its schema needs a migration; or
    the artifact store (an S3 bucket) is missing, unreachable, or refuses the credentials."""


class IdentityProviderUnavailable(StoreNotReady):
    """The OpenID provider's signing keys (its JWKS) cannot be fetched: access tokens cannot be checked
    for now (API keys do not depend on it)."""


class Unauthenticated(ModelportError):
    """No API key, or one that is unknown, wrong, expired or revoked (deliberately not saying which)."""


class Forbidden(ModelportError):
    """The key is valid but its role does not allow the operation."""


class RateLimited(ModelportError):
    """The key or client address is over its rate or quota."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuditFailure(ModelportError):
    """The audit chain does not verify, or an audit record could not be written."""


class MissingExtra(ModelportError):
    """An optional dependency is not installed (or too old); the message names the ``pip install
    'modelport[EXTRA]'`` command that fixes it (``modelport/optional.py``)."""


class PromotionRefused(Conflict):
    """A protected alias may only move to a version with a passing validation report."""


# -- the one error table --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """How every adapter reports one kind of error: the HTTP status (REST and MLflow routes), the gRPC
    status code's name, MLflow's ``error_code`` and the CLI's exit code."""

    http: int
    grpc: str
    mlflow: str
    exit: int


# First match wins: subclasses come before their bases.
OUTCOMES: tuple[tuple[type[Exception], Outcome], ...] = (
    (Unauthenticated, Outcome(401, "UNAUTHENTICATED", "UNAUTHENTICATED", 1)),
    (Forbidden, Outcome(403, "PERMISSION_DENIED", "PERMISSION_DENIED", 1)),
    (RateLimited, Outcome(429, "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED", 1)),
    (ValuesRejected, Outcome(400, "INVALID_ARGUMENT", "INVALID_PARAMETER_VALUE", 2)),
    (UnsupportedMediaType, Outcome(415, "INVALID_ARGUMENT", "BAD_REQUEST", 2)),
    (InvalidInput, Outcome(400, "INVALID_ARGUMENT", "BAD_REQUEST", 2)),
    (VersionArchived, Outcome(410, "NOT_FOUND", "RESOURCE_DOES_NOT_EXIST", 3)),
    (NotFound, Outcome(404, "NOT_FOUND", "RESOURCE_DOES_NOT_EXIST", 3)),
    (PromotionRefused, Outcome(409, "FAILED_PRECONDITION", "INVALID_STATE", 6)),
    (Conflict, Outcome(409, "ALREADY_EXISTS", "RESOURCE_ALREADY_EXISTS", 1)),
    (IntegrityFailure, Outcome(500, "DATA_LOSS", "INTERNAL_ERROR", 4)),
    (AuditFailure, Outcome(500, "INTERNAL", "INTERNAL_ERROR", 4)),
    (StoreNotReady, Outcome(503, "UNAVAILABLE", "TEMPORARILY_UNAVAILABLE", 5)),
    (VersionFailing, Outcome(503, "UNAVAILABLE", "TEMPORARILY_UNAVAILABLE", 1)),
    (ScoringTimeout, Outcome(504, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", 1)),
    # The server lacks what the request needs (an XGBoost runtime, say): 501 is "not supported here".
    (MissingExtra, Outcome(501, "UNIMPLEMENTED", "NOT_IMPLEMENTED", 1)),
)
# Model failures, storage refusals and anything unexpected.
INTERNAL = Outcome(500, "INTERNAL", "INTERNAL_ERROR", 1)


def outcome_for(error: BaseException) -> Outcome:
    """The row of :data:`OUTCOMES` for ``error`` (:data:`INTERNAL` for anything not in the table)."""
    for kind, outcome in OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return INTERNAL
