"""The Open Inference Protocol's gRPC messages and service (``inference.GRPCInferenceService``).

``inference_pb2*.py`` are generated from ``inference.proto`` by ``make proto`` with grpcio-tools 1.72.1,
whose protobuf gencode is 6.30.0: a protobuf runtime accepts gencode of its own version or older, so
this code runs on protobuf 6.30 up to 7.x — the range of the current grpcio-tools (protobuf 7) and of
the current ``tritonclient[grpc]`` (protobuf 6) alike — and on grpcio 1.72.1 or newer.

Importing this package checks that: a missing or older grpcio/protobuf is reported as
:class:`~modelport.errors.MissingExtra` with the command that fixes it, never as the generated code's
``VersionError`` in every worker.
"""

from __future__ import annotations

from modelport.errors import MissingExtra, brief
from modelport.optional import install_command, require

__all__ = ["GRPCIO_FLOOR", "PROTOBUF_FLOOR", "PURPOSE"]

PURPOSE = "gRPC serving (--grpc-port)"
# What the generated code asks of its runtimes: the versions `make proto` generates with (tests check
# them against the generated files and against the grpc extra of pyproject.toml).
PROTOBUF_FLOOR = "6.30.0"
GRPCIO_FLOOR = "1.72.1"

_grpc = require("grpc", "grpc", PURPOSE)
_protobuf = require("google.protobuf", "grpc", PURPOSE)
try:
    from modelport.serving.protocol import inference_pb2, inference_pb2_grpc  # noqa: F401
except Exception as exc:  # VersionError (protobuf too old), RuntimeError (grpcio too old), ImportError
    reason = brief(exc).split(" when loading ")[0]  # protobuf's first words; the rest names files
    upgrade = install_command("grpc").replace("pip install", "pip install --upgrade", 1)
    raise MissingExtra(
        f"{PURPOSE} needs protobuf>={PROTOBUF_FLOOR} and grpcio>={GRPCIO_FLOOR}, found protobuf "
        f"{_protobuf.__version__} and grpcio {_grpc.__version__} ({reason}): {upgrade}"
    ) from None
