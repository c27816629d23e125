"""The generated gRPC code and what it asks of its runtimes (serving/protocol/__init__.py).

The floors that the start-up check names are the versions the code was generated with, the grpc
extra asks for at least those, and `make proto` generates with that grpcio-tools again. Read from the
sources, not imported: this process holds tritonclient's copy of the protocol, and both cannot be
loaded into protobuf's default pool at once.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[2]
PROTOCOL = ROOT / "src" / "modelport" / "serving" / "protocol"


def _constants() -> dict[str, str]:
    tree = ast.parse((PROTOCOL / "__init__.py").read_text())
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }


def test_the_floors_are_the_generated_codes_and_the_grpc_extra_asks_for_them() -> None:
    floors = _constants()
    protobuf, grpcio = floors["PROTOBUF_FLOOR"], floors["GRPCIO_FLOOR"]
    assert f"# Protobuf Python Version: {protobuf}\n" in (PROTOCOL / "inference_pb2.py").read_text()
    assert f"GRPC_GENERATED_VERSION = '{grpcio}'" in (PROTOCOL / "inference_pb2_grpc.py").read_text()
    generator = re.search(r"^GRPCIO_TOOLS := grpcio-tools==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert generator is not None and generator.group(1) == grpcio

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["grpc"]
    required = {r.name: r.specifier for r in map(Requirement, extra)}
    # the lowest release each range admits is the floor itself: neither older nor a needless newer one
    for name, floor in (("protobuf", protobuf), ("grpcio", grpcio)):
        assert Version(floor) in required[name], (name, required[name])
        lower = [Version(s.version) for s in required[name] if s.operator == ">="]
        assert lower == [Version(floor)], (name, required[name])
