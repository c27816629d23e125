"""The OpenAPI 3.0 document of the REST API, derived from the route table itself (so it cannot drift):
every route's paths come from its pattern, its description and body schema from :data:`OPERATIONS`.
Served at ``GET /openapi.json`` (any valid key); ``tests/security/test_openapi.py`` fuzzes it.
"""

from __future__ import annotations

import re
from typing import Any

from modelport._version import __version__

__all__ = ["document", "paths_of"]

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "data": {"type": "array", "items": {}},
        "parameters": {"type": "object"},
    },
}
_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "parameters": {"type": "object"},
    },
}
_MLFLOW = {
    "type": "object",
    "properties": {
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array"},
            },
        },
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": {},
        "inputs": {},
        "params": {"type": "object"},
    },
}
_TF_PREDICT = {
    "type": "object",
    "properties": {
        "instances": {"type": "array", "description": "row form: objects by feature, or lists in order"},
        "inputs": {"description": "columnar form: feature -> values, or rows in signature order"},
        "signature_name": {"type": "string", "enum": ["serving_default"]},
    },
}
_KEY = {
    "type": "object",
    "required": ["name", "role"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "role": {"type": "string", "enum": ["consumer", "publisher", "admin"]},
        "models": {"type": "array", "items": {"type": "string"}},
        "expires": {"type": "string", "example": "90d"},
        "rate": {"type": "string", "example": "50/s"},
        "quota": {"type": "string", "example": "1000000/month"},
    },
}

# handler name → (summary, request body schema or None, query parameters)
OPERATIONS: dict[str, tuple[str, dict[str, Any] | None, tuple[str, ...]]] = {
    "live": ("Liveness probe (no key needed)", None, ()),
    "ready": ("Readiness probe (no key needed); 503 while draining", None, ()),
    "server_metadata": ("Server metadata (Open Inference Protocol)", None, ()),
    "statistics": ("Inference statistics (Triton statistics extension)", None, ()),
    "model_metadata": ("Model metadata: inputs, outputs, versions", None, ()),
    "model_ready": ("Whether the model (version) is loaded and warmed", None, ()),
    "infer": ("Inference (JSON, or the binary tensor data extension)", _INFER, ()),
    "repository_index": ("Models this key may see (Triton repository extension)", None, ()),
    "repository_load": ("Load and warm a model's default route", None, ()),
    "repository_unload": ("Unload a model's versions from memory", None, ()),
    "ping": ("MLflow health probe (no key needed)", None, ()),
    "mlflow_version": ("Server version (MLflow scoring protocol)", None, ()),
    "invocations": ("MLflow scoring: dataframe_split/records, instances, inputs, or CSV", _MLFLOW, ()),
    "tf_predict": (
        "TensorFlow Serving / KServe V1 predict: instances (rows) or inputs (columns)",
        _TF_PREDICT,
        (),
    ),
    "tf_model_status": ("TensorFlow Serving model status (model_version_status)", None, ()),
    "tf_model_metadata": ("TensorFlow Serving model metadata (signature_def)", None, ()),
    "list_keys": ("List API keys (admin)", None, ()),
    "create_key": ("Create an API key; the token is in the answer, once (admin)", _KEY, ()),
    "revoke_key": ("Revoke an API key (admin)", None, ()),
    "update_key": (
        "Change a key's model patterns, rate, quota or expiry; null removes a limit (admin)",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "models": {"type": "array", "items": {"type": "string"}},
                "rate": {"type": "string", "nullable": True},
                "quota": {"type": "string", "nullable": True},
                "expires": {"type": "string", "nullable": True},
            },
        },
        (),
    ),
    "rotate_key": (
        "New secret for a key; the old one works for the grace period (admin)",
        {"type": "object", "additionalProperties": False, "properties": {"grace": {"type": "string"}}},
        (),
    ),
    "get_usage": (
        "Usage per key × model × day (admins: all keys; others: their own)",
        None,
        ("key", "model", "since"),
    ),
    "get_audit": ("Audit records (admin)", None, ("action", "target", "limit")),
    "verify_audit": ("Verify the audit hash chain (admin); 409 names the first bad record", None, ()),
    "list_models": ("Models this key may see, with aliases", None, ()),
    "set_alias": (
        "Point an alias at a version (publisher); the version must replay its golden cases",
        {
            "type": "object",
            "required": ["version"],
            "additionalProperties": False,
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "override_reason": {"type": "string", "description": "admin only; audited"},
                "allow_incompatible": {
                    "type": "boolean",
                    "description": "a version whose signature cannot take the traffic; admin only, audited",
                },
            },
        },
        (),
    ),
    "remove_alias": ("Remove an alias (publisher)", None, ()),
    "set_policy": (
        "What serving does with values outside the signature (publisher)",
        {
            "type": "object",
            "required": ["on_violation"],
            "additionalProperties": False,
            "properties": {"on_violation": {"type": "string", "enum": ["flag", "reject"]}},
        },
        (),
    ),
    "post_feedback": (
        "Ground-truth labels for logged predictions, by request id and row (live accuracy)",
        {
            "type": "object",
            "required": ["model", "labels"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string"},
                "labels": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 10000,
                    "items": {
                        "type": "object",
                        "required": ["request_id", "label"],
                        "additionalProperties": False,
                        "properties": {
                            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:/+=@-]{1,128}$"},
                            "row": {"type": "integer", "minimum": 0, "maximum": 999999},
                            "label": {
                                "oneOf": [
                                    {"type": "string", "minLength": 1, "maxLength": 200},
                                    {"type": "number"},
                                ]
                            },
                        },
                    },
                },
            },
        },
        (),
    ),
    "get_drift": (
        "Drift of logged traffic against each version's reference profile, and live accuracy",
        None,
        ("version", "windows"),
    ),
    "start_release": (
        "Start or change a release on an alias: a canary with a weight (optionally sticky) and/or a "
        "shadow (publisher); 202 with a pending change when the alias needs approval",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "canary": {"type": "integer", "minimum": 1},
                "weight": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 99.99},
                "sticky_by": {"type": "string", "example": "header:x-customer-id"},
                "shadow": {"type": "integer", "minimum": 1},
                "auto_rollback": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "error_rate": {"type": "number"},
                        "p99_ms": {"type": "number"},
                        "window": {"type": "number"},
                        "min_requests": {"type": "integer"},
                    },
                },
                "override_reason": {"type": "string", "description": "admin only; audited"},
                "allow_incompatible": {
                    "type": "boolean",
                    "description": "a version whose signature cannot take the traffic; admin only, audited",
                },
            },
        },
        (),
    ),
    "release_status": ("The alias's running release and each arm's numbers", None, ()),
    "stop_release": ("Withdraw the canary and shadow (publisher; never needs approval)", None, ()),
    "promote_release": (
        "Move the alias fully to the canary (publisher)",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "override_reason": {"type": "string", "description": "admin only; audited"},
                "allow_incompatible": {
                    "type": "boolean",
                    "description": "a canary whose signature cannot take the traffic; admin only, audited",
                },
            },
        },
        (),
    ),
    "rollback_alias": (
        "Withdraw the running release, or return the alias to its previous version (publisher; at once)",
        {"type": "object", "additionalProperties": False, "properties": {"reason": {"type": "string"}}},
        (),
    ),
    "alias_history": ("Every state the alias has been in, oldest first", None, ()),
    "list_changes": ("Changes of approval-protected aliases (publisher)", None, ("status",)),
    "approve_change": (
        "Approve and apply another key's change (publisher; never the requester's own)",
        {"type": "object", "additionalProperties": False, "properties": {}},
        (),
    ),
    "reject_change": (
        "Reject another key's change (publisher)",
        {"type": "object", "additionalProperties": False, "properties": {"reason": {"type": "string"}}},
        (),
    ),
    "submit_job": (
        "Queue a batch scoring job (publisher); INPUT and OUTPUT inside MODELPORT_BATCH_ROOTS; 202",
        {
            "type": "object",
            "required": ["model", "input", "output"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string", "description": "NAME, NAME@ALIAS, NAME@VERSION or NAME@LABEL"},
                "input": {"type": "string", "description": "a .csv or .parquet file, a folder or a glob"},
                "output": {"type": "string", "description": "a .parquet or .csv file, written atomically"},
                "keep": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 1000},
                "drop": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 1000},
                "on_violation": {"type": "string", "enum": ["reject", "flag", "skip"]},
                "chunk_rows": {"type": "integer", "minimum": 1000, "maximum": 10000000},
            },
        },
        (),
    ),
    "list_versions": (
        "A page of a model's versions, newest first (next page: before=next)",
        None,
        ("limit", "before"),
    ),
    "register_version": (
        "Register a model file as a new version (publisher): multipart/form-data with parts model "
        "(skops, ONNX, XGBoost JSON/UBJ, LightGBM text; never a pickle) and sample (Parquet or CSV), "
        "optional format, alias, description, label, target, require_onnx, tags, params, metrics; 201",
        None,
        (),
    ),
    "list_jobs": ("Batch jobs this key submitted (admins: every job), newest first", None, ()),
    "get_job": ("A batch job: status, progress, counts, digests", None, ()),
    "cancel_job": ("Cancel a batch job (at its next chunk when running)", None, ()),
    "job_output": ("A finished job's output file (Parquet or CSV)", None, ()),
    "create_webhook": (
        "Subscribe a URL to registry events (admin); the answer carries the signing secret, once",
        {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "example": "https://hooks.example.com/modelport"},
                "actions": {"type": "array", "items": {"type": "string"}, "example": ["alias.*"]},
                "models": {"type": "array", "items": {"type": "string"}, "example": ["credit*"]},
                "enabled": {"type": "boolean"},
            },
        },
        (),
    ),
    "list_webhooks": ("Webhook subscriptions, without their secrets (admin)", None, ()),
    "update_webhook": (
        "Pause or resume a subscription (admin); resumed, it hears of changes from now on",
        {
            "type": "object",
            "required": ["enabled"],
            "additionalProperties": False,
            "properties": {"enabled": {"type": "boolean"}},
        },
        (),
    ),
    "remove_webhook": ("Delete a subscription and its deliveries (admin)", None, ()),
    "list_deliveries": (
        "A subscription's deliveries with every attempt, newest first",
        None,
        ("status", "limit"),
    ),
    "retry_delivery": ("Send a dead-lettered delivery again (admin)", None, ()),
    "get_evidence": (
        "Evidence of what served the model at a time: a verifiable zip, or its summary with format=json "
        "(admin)",
        None,
        ("at", "format"),
    ),
    "openapi": ("This document", None, ()),
    "metrics": ("Prometheus metrics of every worker (a key, unless MODELPORT_METRICS_PUBLIC)", None, ()),
}

_OPTIONAL_VERSION = re.compile(r"\(\?:(/versions/\(\?P<version>\[\^/\]\+\))\)\?")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def paths_of(pattern: str) -> list[str]:
    """OpenAPI path templates for a route pattern (an optional ``/versions/{version}`` gives two)."""
    variants = [pattern]
    if _OPTIONAL_VERSION.search(pattern):
        variants = [_OPTIONAL_VERSION.sub("", pattern), _OPTIONAL_VERSION.sub(r"\1", pattern)]
    return [
        _GROUP.sub(lambda m: "{" + m.group(1) + "}", v).replace("/?", "").replace("\\.", ".")
        for v in variants
    ]


def document(routes: tuple[tuple[str, re.Pattern[str], Any, bool, str | None], ...]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, pattern, handler, mlflow_errors, permission in routes:
        summary, body, query = OPERATIONS[handler.__name__]
        for path in paths_of(pattern.pattern):
            operation: dict[str, Any] = {
                "operationId": f"{handler.__name__}_{method.lower()}_{len(paths)}",
                "summary": summary,
                "tags": [path.split("/")[1 if not path.startswith("/api") else 3] or "root"],
                "responses": {
                    "200": {"description": "OK"},
                    "default": {
                        "description": "An error: "
                        + ('{"error_code", "message"}' if mlflow_errors else '{"error": "..."}')
                    },
                },
            }
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"\{(\w+)\}", path)
            ] + [
                {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                for name in query
            ]
            if parameters:
                operation["parameters"] = parameters
            if body is not None:
                operation["requestBody"] = {
                    "required": handler.__name__ not in ("rotate_key",),
                    "content": {"application/json": {"schema": body}},
                }
            if permission is None:
                operation["security"] = []
            else:
                needed = "read" if permission == "metrics" else permission
                operation["description"] = f"Needs a key whose role allows `{needed}`."
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelport", "version": __version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    }
