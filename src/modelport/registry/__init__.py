"""The registry: models → immutable versions → mutable aliases, with a content-addressed artifact
store. ``service.Registry`` is the entry point; ``app.open_registry`` wires it from settings."""

from modelport.registry.names import ModelRef, parse_ref
from modelport.registry.records import ArtifactRecord, ModelRecord, VersionRecord
from modelport.registry.service import LoadedVersion, Registry

__all__ = [
    "ArtifactRecord",
    "LoadedVersion",
    "ModelRecord",
    "ModelRef",
    "Registry",
    "VersionRecord",
    "parse_ref",
]
