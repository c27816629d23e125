"""Issue 19: a model file is data, never a handle on the host. Files crafted to read the server's
files (ONNX external data), hang a worker (cyclic trees) or crash the registering process (bad child
indices, a lying LightGBM header, a memory bomb) are refused with a clear error; nothing is stored."""

from __future__ import annotations

import functools
import io
import re
import select
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import skops.io
from onnx import TensorProto, helper
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

from modelport.errors import RuntimeFailure, UnknownFormat, UnsafeFormat
from modelport.registry.preflight import Limits, check_in_child, refusal
from modelport.registry.service import Registry
from modelport.runtimes.base import load_runtime
from modelport.runtimes.onnx import OnnxRuntime
from modelport.signature import Feature, Outputs, Signature
from tests.conftest import invoke_cli

T = TypeVar("T")

SECRET = b"TOP-SECRET-REGISTRY-BYTES-0123456789abcdef"
NAMES = ["a", "b", "c", "d"]
FRAME = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 4)), columns=NAMES)
LABELS = np.where(FRAME["a"] > 0, "hi", "lo")


def _at_once(*calls: Callable[[], T], workers: int = 4) -> list[T]:
    """The results of ``calls``, run side by side in threads (each mostly waits for a child process:
    a preflight or a probe), in order; the first failure (an assertion, an unexpected error) raised."""
    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def _blobs(registry: Registry) -> list[Path]:
    return [p for p in (registry.settings.home / "artifacts" / "blobs").rglob("*") if p.is_file()]


def _with_nodes(tree: Tree, mutate: Callable[[np.ndarray], None]) -> Tree:
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    mutate(nodes)
    crafted = Tree(tree.n_features, np.asarray([tree.value.shape[2]], dtype=np.intp), tree.n_outputs)
    crafted.__setstate__({**state, "nodes": nodes})
    return crafted


def _cyclic(nodes: np.ndarray) -> None:
    # Rows with a positive first feature go right at the root, back to the root, forever.
    nodes["feature"][0], nodes["threshold"][0], nodes["right_child"][0] = 0, 0.0, 0


def _out_of_range(nodes: np.ndarray) -> None:
    nodes["right_child"][0] = 10**9


@pytest.fixture(scope="module")
def cyclic_tree() -> bytes:
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(FRAME, LABELS)
    model.tree_ = _with_nodes(model.tree_, _cyclic)
    return bytes(skops.io.dumps(model))


@pytest.fixture(scope="module")
def out_of_range_forest() -> bytes:
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(FRAME, LABELS)
    forest.estimators_[3].tree_ = _with_nodes(forest.estimators_[3].tree_, _out_of_range)
    return bytes(skops.io.dumps(forest))


def _in_child(path: Path, blob: bytes, code: str) -> subprocess.Popen[bytes]:
    """Use a crafted file (``blob``, written to ``path``) the way the attacker wants it used: skops
    load + predict, no checks. The child's standard output is piped back, unbuffered (a line read
    from it is never more than that line)."""
    path.write_bytes(blob)
    script = (
        "import sys, numpy as np, skops.io as sio\n"
        "blob = open(sys.argv[1], 'rb').read()\n"
        "model = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))\n" + code
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )


@pytest.mark.timeout(120)
def test_the_crafted_trees_really_hang_and_crash(
    cyclic_tree: bytes, out_of_range_forest: bytes, tmp_path: Path
) -> None:
    """Without the checks: one request with a = 3e38 never returns; one row segfaults."""
    # Both children at once. The cyclic tree first scores a row that does not reach the cycle (a = 0
    # goes left at the root), so what follows its marker is one more row of a loaded, warmed-up tree.
    hanging = _in_child(
        tmp_path / "cyclic.skops",
        cyclic_tree,
        "model.predict(np.zeros((1, 4)))\n"
        "print('scoring', flush=True)\n"
        "model.predict(np.array([[3e38, 0, 0, 0]]))\n"
        "print('scored', flush=True)\n",
    )
    crashing = _in_child(
        tmp_path / "forest.skops", out_of_range_forest, "model.predict(np.full((1, 4), 3e38))"
    )
    try:
        assert hanging.stdout is not None and hanging.stdout.readline() == b"scoring\n"
        # one row of a sound tree takes microseconds: no answer (nor exit) in 2 s is a hang
        answered, _, _ = select.select([hanging.stdout], [], [], 2)
        assert answered == [] and hanging.poll() is None
        assert crashing.wait(timeout=60) == -signal.SIGSEGV
    finally:
        for child in (hanging, crashing):
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()


CRAFTED = {
    "cyclic_tree": r"tree DecisionTreeClassifier\.tree_: node \d+'s right child 0 is an ancestor \(cycle\)",
    "out_of_range_forest": (
        r"tree RandomForestClassifier\.estimators_\[3\]\.tree_: node 0's right child 1000000000 is out of range"
    ),
}


@pytest.mark.timeout(180)
def test_crafted_trees_are_refused_at_registration_and_at_load(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_registry: Registry
) -> None:
    """Each crafted file (the registrations side by side: each waits for its preflight child)."""
    blobs: dict[str, bytes] = {fixture: request.getfixturevalue(fixture) for fixture in CRAFTED}

    def refused(fixture: str) -> None:
        blob, message = blobs[fixture], CRAFTED[fixture]
        path = tmp_path / f"{fixture}.skops"
        path.write_bytes(blob)
        with pytest.raises(UnsafeFormat, match=message):
            sqlite_registry.register(name="trees", path=path, sample=FRAME)
        # A file stored before this check existed never takes traffic: the loader refuses it.
        signature = Signature([Feature(n, "float64") for n in NAMES], Outputs("classification", ["hi", "lo"]))
        with pytest.raises(UnsafeFormat, match=message):
            load_runtime("skops", blob, {}, signature)

    _at_once(*(functools.partial(refused, fixture) for fixture in CRAFTED))
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []


@pytest.mark.timeout(300)
def test_cli_register_refuses_a_cyclic_tree(tmp_path: Path, cyclic_tree: bytes) -> None:
    model, sample = tmp_path / "cyclic.skops", tmp_path / "sample.csv"
    model.write_bytes(cyclic_tree)
    FRAME.to_csv(sample, index=False)
    assert invoke_cli(tmp_path / "home", "init", "--json").returncode == 0
    result = invoke_cli(tmp_path / "home", "register", "trees", str(model), "--sample", str(sample))
    assert result.returncode != 0
    assert "is an ancestor (cycle)" in result.stderr
    assert "Traceback" not in result.stderr and "Segmentation" not in result.stderr
    blobs = tmp_path / "home" / "artifacts" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


def _lying_lightgbm() -> str:
    """A LightGBM text model whose tree_sizes header no longer matches its tree blocks: LightGBM
    throws from a place that cannot throw, and the process aborts (SIGABRT). The tree checks do not
    look at tree_sizes, so only the preflight child stands between this file and the registry."""
    import lightgbm as lgb

    booster = (
        lgb.LGBMClassifier(n_estimators=2, num_leaves=4, verbose=-1, n_jobs=1).fit(FRAME, LABELS).booster_
    )
    text = str(booster.model_to_string())
    return re.sub(r"\nshrinkage=1\n", "\nshrinkage=1.000000000\n", text, count=1)


@pytest.mark.timeout(180)
def test_a_file_that_crashes_its_library_is_refused(tmp_path: Path, sqlite_registry: Registry) -> None:
    path = tmp_path / "model.txt"
    path.write_text(_lying_lightgbm())

    def probe() -> int:
        return subprocess.run(
            [sys.executable, "-c", "import sys, lightgbm as lgb; lgb.Booster(model_str=sys.stdin.read())"],
            input=path.read_text(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).returncode

    def refused() -> None:
        with pytest.raises(UnsafeFormat, match=r"'model.txt' crashed the model library \(SIGABRT\).*refused"):
            sqlite_registry.register(name="lgb", path=path, sample=FRAME)

    # the unchecked read and the registration side by side
    aborted, _ = _at_once(probe, refused)
    assert aborted == -signal.SIGABRT  # the threat is real: unchecked, registration dies
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []


def _memory_bomb() -> bytes:
    """A skops file whose first array header claims 16 GiB (numpy allocates before reading)."""
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(FRAME, FRAME["a"])
    source = zipfile.ZipFile(io.BytesIO(skops.io.dumps(model)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        bombed = False
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".npy") and not bombed:
                length = int.from_bytes(data[8:10], "little")
                header = re.sub(
                    r"'shape': \([^)]*\)", "'shape': (2147483648,)", data[10 : 10 + length].decode()
                )
                header = header.rstrip(" \n").ljust(length - 1) + "\n"
                data, bombed = data[:10] + header.encode() + data[10 + length :], True
            target.writestr(info, data)
    return out.getvalue()


@pytest.mark.timeout(180)
def test_preflight_limits_memory_cpu_and_time(tmp_path: Path, sqlite_registry: Registry) -> None:
    bomb = tmp_path / "bomb.skops"
    bomb.write_bytes(_memory_bomb())
    valid = bytes(skops.io.dumps(DecisionTreeClassifier(random_state=0).fit(FRAME, LABELS)))

    def bombed() -> None:
        with pytest.raises(UnsafeFormat, match=r"'bomb.skops' needed more than 8 GiB of memory .*: refused"):
            sqlite_registry.register(name="bomb", path=bomb, sample=FRAME)

    def accepted() -> None:
        assert check_in_child(valid, "skops", "ok.skops")["converted"] == "ok"

    # Reading, converting and scoring takes well over a CPU second and a wall-clock half second.
    def out_of_cpu() -> None:
        with pytest.raises(UnsafeFormat, match=r"more than 1 s of CPU time \(SIGXCPU\)"):
            check_in_child(valid, "skops", "ok.skops", Limits(cpu_seconds=1))

    def out_of_time() -> None:
        with pytest.raises(UnsafeFormat, match=r"still being read, converted or scored after 0.5 s"):
            check_in_child(valid, "skops", "ok.skops", Limits(wall_seconds=0.5))

    def unreadable() -> None:
        with pytest.raises(UnknownFormat, match=r"'junk\.skops' is not a readable skops model"):
            check_in_child(b"not a zip file", "skops", "junk.skops")

    # Five preflight children side by side (each limit is the child's own: CPU time, address space,
    # its own clock), the longest first.
    _at_once(accepted, out_of_cpu, bombed, unreadable, out_of_time)
    assert "(SIGSEGV)" in str(refusal(-signal.SIGSEGV, "m.skops", Limits()))
    assert "(SIGKILL)" in str(refusal(-signal.SIGKILL, "m.skops", Limits()))
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []


# -- ONNX external data -------------------------------------------------------------------------


def _external(name: str, dtype: int, shape: list[int], location: str) -> TensorProto:
    tensor = helper.make_tensor(name, dtype, shape, vals=[0] * int(np.prod(shape)))
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", location),
        ("offset", "0"),
        ("length", str((4 if dtype == TensorProto.FLOAT else 8) * int(np.prod(shape)))),
    ):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _dense(name: str, external: str | None = None) -> TensorProto:
    if external is not None:
        return _external(name, TensorProto.FLOAT, [4, 2], external)
    return helper.make_tensor(name, TensorProto.FLOAT, [4, 2], vals=[0.0] * 8)


def _sparse(name: str, part: str, location: str = "registry.db") -> Any:
    values = helper.make_tensor(f"{name}_v", TensorProto.FLOAT, [8], vals=[0.0] * 8)
    indices = helper.make_tensor(f"{name}_i", TensorProto.INT64, [8], vals=list(range(8)))
    if part == "values":
        values = _external(f"{name}_v", TensorProto.FLOAT, [8], location)
    else:
        indices = _external(f"{name}_i", TensorProto.INT64, [8], location)
    return helper.make_sparse_tensor(values, indices, [4, 2])


def _model(
    nodes: list[Any],
    initializers: tuple[Any, ...] = (),
    sparse: tuple[Any, ...] = (),
    functions: tuple[Any, ...] = (),
) -> bytes:
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["x", "c"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        list(initializers),
        sparse_initializer=list(sparse),
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8, functions=list(functions))
    return bytes(model.SerializeToString())


def _branch(name: str, node: Any) -> Any:
    return helper.make_graph(
        [node], name, [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4, 2])]
    )


def _hostile_onnx() -> dict[str, bytes]:
    leak = "registry.db"
    constant = helper.make_node
    condition = constant(
        "Constant", [], ["cond"], value=helper.make_tensor("b", TensorProto.BOOL, [], [True])
    )
    in_if = constant(
        "If",
        ["cond"],
        ["c"],
        then_branch=_branch("t", constant("Constant", [], ["t"], value=_dense("tv", leak))),
        else_branch=_branch("e", constant("Constant", [], ["e"], value=_dense("ev"))),
    )
    body = helper.make_graph(
        [
            constant("Constant", [], ["out"], value=_dense("lv", leak)),
            constant("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 2]),
        ],
    )
    trip = constant("Constant", [], ["n"], value=helper.make_tensor("n", TensorProto.INT64, [], [1]))
    in_loop = constant("Loop", ["n", "cond"], ["c_all"], body=body)
    function = helper.make_function(
        "local",
        "Leak",
        [],
        ["c"],
        [constant("Constant", [], ["c"], sparse_value=_sparse("fc", "values"))],
        [helper.make_opsetid("", 17)],
    )
    return {
        "initializer": _model([], initializers=(_dense("c", leak),)),
        "sparse initializer values": _model([], sparse=(_sparse("c", "values"),)),
        "sparse initializer indices": _model([], sparse=(_sparse("c", "indices"),)),
        "attribute t": _model([constant("Constant", [], ["c"], value=_dense("cv", leak))]),
        "attribute tensors": _model(
            [constant("Constant", [], ["c"], value=_dense("cv"), extra=[_dense("xv", leak)])]
        ),
        "attribute sparse_tensor": _model(
            [constant("Constant", [], ["c"], sparse_value=_sparse("cs", "values"))]
        ),
        "attribute sparse_tensors": _model(
            [constant("Constant", [], ["c"], value=_dense("cv"), extra=[_sparse("xs", "indices")])]
        ),
        "If branch": _model([condition, in_if]),
        "Loop body": _model([condition, trip, in_loop, constant("Identity", ["c_all"], ["c"])]),
        "model-local function": _model([constant("Leak", [], ["c"], domain="local")], functions=(function,)),
    }


@pytest.mark.timeout(300)
def test_onnx_tensors_in_external_files_are_refused_everywhere(
    tmp_path: Path, sqlite_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sqlite_registry.settings.home)  # where registry.db lives: what the attack read
    assert (sqlite_registry.settings.home / "registry.db").is_file()
    sample = pd.DataFrame(np.zeros((20, 4)), columns=NAMES)

    def refused(where: str, blob: bytes) -> None:
        path = tmp_path / f"{where.replace(' ', '_')}.onnx"
        path.write_bytes(blob)
        with pytest.raises(UnsafeFormat, match=r"keeps tensor '\w+' \(.*\) in an external file") as caught:
            sqlite_registry.register(name="leak", path=path, sample=sample)
        assert "registry.db" not in str(caught.value).replace("'registry.db'", ""), where

    # the registrations side by side: each waits for its preflight child
    _at_once(*(functools.partial(refused, where, blob) for where, blob in _hostile_onnx().items()))
    assert sqlite_registry.models() == [] and _blobs(sqlite_registry) == []


def test_onnx_sessions_cannot_resolve_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth, bypassing the registration check: a sparse constant naming a file in the
    working directory. onnxruntime's defaults read it; our session options make every location fail."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(SECRET)
    blobs = [
        _model([helper.make_node("Constant", [], ["c"], sparse_value=_sparse("c", "values", location))])
        for location in ("secret.bin", "./secret.bin", f"../{tmp_path.name}/secret.bin")
    ]
    one_hot = np.eye(4, dtype=np.float32)
    leaked = ort.InferenceSession(blobs[0], providers=["CPUExecutionProvider"]).run(None, {"x": one_hot})[0]
    assert leaked.tobytes()[:32] == SECRET[:32]  # the attack works against onnxruntime's defaults
    signature = Signature([Feature(n, "float64") for n in NAMES], Outputs("regression"))
    for blob in blobs:
        with pytest.raises(RuntimeFailure, match="could not load the artifact"):
            load_runtime("onnx", blob, {}, signature)
        with pytest.raises(Exception, match="External data path") as refused:
            OnnxRuntime(blob, signature)
        assert SECRET.decode() not in str(refused.value)


def test_pickles_are_never_read_by_the_preflight(tmp_path: Path) -> None:
    """The only code-executing loader (``joblib.load`` in intake, behind ``trust_pickle``) is not
    reachable through the preflight, whatever format a caller names."""
    from modelport.registry import preflight

    with pytest.raises(UnsafeFormat, match="never read by the preflight"):
        preflight.check_in_child(b"\x80\x04N.", "pickle", "model.pkl")
    with pytest.raises(UnsafeFormat, match="never read by the preflight"):
        preflight.inspect(b"\x80\x04N.", "pickle", "model.pkl")


def test_a_serving_process_never_loads_the_pickle_path(tmp_path: Path) -> None:
    """Build the server's application from a fresh home (keys on, the defaults) in a clean
    interpreter: neither the intake (the only caller of ``joblib.load``) nor joblib is imported."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from modelport.app import create_app, open_registry\n"
        "from modelport.settings import Settings\n"
        f"settings = Settings(home=Path({str(tmp_path / 'home')!r}))\n"
        "open_registry(settings, create=True).close()\n"
        "create_app(settings)\n"
        "loaded = [m for m in ('joblib', 'modelport.registry.intake', 'modelport.registry.preflight') if m in sys.modules]\n"
        "print(','.join(loaded) or 'none')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
