"""ONNX runtime (onnxruntime): the default serving format.

The input layout is read from the model itself: either one 2-D tensor holding every feature in
signature order (``matrix``), or one ``[N, 1]`` tensor per feature named after it (``columns``, used
when a model mixes numbers and text). Classifier outputs may be a plain probability tensor or a
ZipMap (sequence of maps); both are returned as a matrix in the signature's class order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from modelport.errors import RuntimeFailure, UnsafeFormat
from modelport.runtimes.base import Prediction, prediction_from_scores, register_loader
from modelport.signature import Batch, Signature

if TYPE_CHECKING:
    import onnx

__all__ = ["OnnxRuntime", "check_self_contained", "session_options"]

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _attribute_tensors(attribute: Any, where: str) -> Iterator[tuple[str, Any]]:
    where = f"{where} attribute {attribute.name!r}"
    if attribute.HasField("t"):
        yield where, attribute.t
    for tensor in attribute.tensors:
        yield where, tensor
    sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
    for tensor in [*sparse, *attribute.sparse_tensors]:
        yield f"{where} (sparse values)", tensor.values
        yield f"{where} (sparse indices)", tensor.indices
    if attribute.HasField("g"):
        yield from _graph_tensors(attribute.g, f"{where} subgraph")
    for index, subgraph in enumerate(attribute.graphs):
        yield from _graph_tensors(subgraph, f"{where} subgraph {index}")


def _node_tensors(nodes: Any, where: str) -> Iterator[tuple[str, Any]]:
    for index, node in enumerate(nodes):
        label = f"{where} node {node.name or index!r} ({node.op_type})"
        for attribute in node.attribute:
            yield from _attribute_tensors(attribute, label)


def _graph_tensors(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every tensor stored in a graph: initializers (dense and sparse), its nodes' attributes (dense,
    sparse, lists of either) and, recursively, the subgraphs of Loop/If/Scan bodies."""
    for tensor in graph.initializer:
        yield f"{where} initializer", tensor
    for sparse in graph.sparse_initializer:
        yield f"{where} sparse initializer (values)", sparse.values
        yield f"{where} sparse initializer (indices)", sparse.indices
    yield from _node_tensors(graph.node, where)


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """Every tensor of a model, with where it sits: the main graph, model-local functions (their
    nodes and default attribute values) and training graphs, which onnxruntime may also read."""
    yield from _graph_tensors(model.graph, "graph")
    for function in model.functions:
        label = f"function {function.name!r}"
        yield from _node_tensors(function.node, label)
        for attribute in function.attribute_proto:
            yield from _attribute_tensors(attribute, label)
    for index, training in enumerate(model.training_info):
        yield from _graph_tensors(training.initialization, f"training {index} initialization")
        yield from _graph_tensors(training.algorithm, f"training {index} algorithm")


def check_self_contained(blob: bytes) -> onnx.ModelProto:
    """Parse an ONNX model and refuse one with any tensor in an external file: its path comes from
    the file's author and would be resolved against the server's working directory (attack: a sparse
    constant naming ``registry.db``, multiplied by one-hot inputs, returned the database's bytes).

    Registration calls this on every ONNX file it accepts; a stored blob is verified against its digest
    before it is loaded, so serving does not parse it again (nor import ``onnx``, ~20 MB). Sessions are
    also built so that external data cannot resolve at all (:func:`session_options`)."""
    import onnx

    model = onnx.load_from_string(blob)
    for where, tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise UnsafeFormat(
                f"the ONNX model keeps tensor {tensor.name!r} ({where}) in an external file; "
                "only self-contained ONNX models are accepted"
            )
    return model


# onnxruntime resolves external-data locations of a model loaded from bytes against the process's
# working directory (the registry's home in practice), and for sparse constants without its
# "escapes the model directory" check. Pointing the folder at /dev/null, which is not a directory,
# makes every location unresolvable: relative names fail to open, "../" names fail ORT's escape
# check, absolute names are refused outright. Proven in tests/registry/test_hostile_models.py.
_NO_EXTERNAL_DATA = "/dev/null"

# A row's score must not depend on the rows it is scored with — the micro-batcher groups concurrent
# requests, a batch job cuts its input into chunks — yet ONNX Runtime's CPU kernels take other code
# paths (another summation order: 1 ulp of float32 apart) for a one-row matrix product and for tensors
# beyond about 2^15 elements (measured: a scaler + logistic regression of 6 features answers
# differently from 5,462 rows on). So every call scores between 2 and _BLOCK_ELEMENTS / width rows: a
# lone row is scored as two identical rows, a large batch in blocks. Bit-for-bit equality of online and
# batch scores is tested in tests/batch/test_online_equals_batch.py (docs/batch.md).
_BLOCK_ELEMENTS = 16_384


def session_options(threads: int = 1) -> ort.SessionOptions:
    """The one place onnxruntime sessions get their options."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: shape warnings from converted models are noise
    # No per-session memory arena: each arena reserves ~1 MB up front and keeps its largest call's
    # scratch for good, per session; with many models per worker that memory is never shared, and
    # it hides what a session really uses (serving/pool.py measures it). Measured on the bench's
    # small model: 155 → 115 kB resident per session; calls of 2 and 1,365 rows took the same time
    # with and without it, for it and for a 200-tree ensemble (within ±10 % run-to-run noise).
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", _NO_EXTERNAL_DATA
    )
    return options


class OnnxRuntime:
    format = "onnx"
    cancellable = True  # a call can be stopped from another thread: ``predict(batch, run_options)``

    def __init__(
        self, blob: bytes, signature: Signature, threads: int = 1, label_index: bool = False
    ) -> None:
        self._signature = signature
        self._label_index = label_index
        self._session = ort.InferenceSession(
            blob, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        inputs = self._session.get_inputs()
        names = signature.names
        self._matrix = len(inputs) == 1 and (len(names) > 1 or inputs[0].name not in names)
        if not self._matrix:
            unknown = [i.name for i in inputs if i.name not in names]
            if unknown:
                raise RuntimeFailure(f"ONNX inputs {', '.join(unknown)} are not features of the signature")
        self._inputs = [(i.name, _NUMPY_TYPES.get(i.type, np.float32)) for i in inputs]
        self._outputs = [(o.name, o.type) for o in self._session.get_outputs()]
        self._label_output, self._score_output = self._pick_outputs()
        self._by_text = {str(c): c for c in signature.outputs.classes}
        width = max(len(names), len(signature.outputs.classes), 1)
        self._block = max(2, _BLOCK_ELEMENTS // width)

    def _pick_outputs(self) -> tuple[str | None, str]:
        if self._signature.outputs.task == "regression" or len(self._outputs) == 1:
            return None, self._outputs[0][0]
        label = self._outputs[0][0]
        scores = next(
            (n for n, t in self._outputs[1:] if t.startswith("seq(map") or t.startswith("tensor(")),
            self._outputs[-1][0],
        )
        return label, scores

    def feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        if self._matrix:
            name, dtype = self._inputs[0]
            sent = getattr(batch, "matrix", None)  # a MatrixBatch: the request's own matrix
            if sent is not None:
                return {name: sent.astype(dtype)}
            matrix: np.ndarray = np.column_stack([batch[n] for n in self._signature.names]).astype(dtype)
            return {name: matrix}
        feeds: dict[str, np.ndarray] = {}
        for name, dtype in self._inputs:
            column = batch[name]
            if dtype is np.object_:
                column = np.array(["" if v is None else str(v) for v in column], dtype=object)
            feeds[name] = column.astype(dtype).reshape(-1, 1)
        return feeds

    def predict(self, batch: Batch, run_options: ort.RunOptions | None = None) -> Prediction:
        wanted = [n for n in (self._label_output, self._score_output) if n is not None]
        feeds = self.feeds(batch)
        rows = next(iter(feeds.values())).shape[0]
        if rows <= self._block:
            outputs = self._run(wanted, feeds, rows, run_options)
        else:  # in blocks: see _BLOCK_ELEMENTS
            pieces = []
            for start in range(0, rows, self._block):
                block = {name: values[start : start + self._block] for name, values in feeds.items()}
                pieces.append(self._run(wanted, block, min(self._block, rows - start), run_options))
            outputs = [_joined([piece[index] for piece in pieces]) for index in range(len(wanted))]
        results = dict(zip(wanted, outputs, strict=True))
        scores = results[self._score_output]
        if isinstance(scores, list):  # ZipMap: one {class: probability} dict per row
            classes = self._signature.outputs.classes
            scores = np.array([[row[c] for c in classes] for row in scores], dtype=np.float64)
        prediction = prediction_from_scores(np.asarray(scores), self._signature)
        if self._label_output is None or prediction.probabilities is None:
            return prediction
        labels = np.asarray(results[self._label_output]).reshape(-1)
        classes = self._signature.outputs.classes
        if self._label_index:
            labels = np.asarray(classes, dtype=object)[labels.astype(np.int64)]
        else:
            labels = _as_class_values(labels, self._by_text)
        return Prediction(labels=labels, probabilities=prediction.probabilities)

    def _run(
        self, wanted: list[str], feeds: dict[str, np.ndarray], rows: int, run_options: ort.RunOptions | None
    ) -> list[Any]:
        if rows == 1:  # scored as two identical rows: see _BLOCK_ELEMENTS
            feeds = {name: np.repeat(values, 2, axis=0) for name, values in feeds.items()}
        outputs: list[Any] = self._session.run(wanted, feeds, run_options)
        return [values[:1] for values in outputs] if rows == 1 else outputs

    def close(self) -> None:
        del self._session


def _joined(pieces: list[Any]) -> Any:
    if isinstance(pieces[0], list):  # ZipMap: lists of dicts
        return [row for piece in pieces for row in piece]
    return np.concatenate(pieces)


_LABEL_BLOCK = 32_768  # labels mapped per step: a step holds the interpreter for a few ms at most


def _as_class_values(labels: np.ndarray, by_text: dict[str, Any]) -> np.ndarray:
    """Labels as the signature's class values (ONNX may return int64 or bytes/str); ``by_text`` maps
    each class's text to its value. Many rows (a batch job's chunk) map each distinct label once.

    A large answer is mapped a block at a time, and string labels (an object array from ONNX's string
    tensor) are sorted as fixed-width text: ``np.unique`` over 300,000 Python strings holds the
    interpreter for ~0.2 s in one call, which an event loop in the same process would wait for."""
    if len(labels) <= 64:
        return np.array([by_text.get(str(v), v) for v in labels.tolist()], dtype=object)
    if len(labels) > _LABEL_BLOCK:
        return np.concatenate(
            [
                _as_class_values(labels[start : start + _LABEL_BLOCK], by_text)
                for start in range(0, len(labels), _LABEL_BLOCK)
            ]
        )
    # ONNX's string tensors hold str: as fixed-width text they compare in C, and map the same
    distinct, positions = np.unique(
        labels.astype(str) if labels.dtype == object else labels, return_inverse=True
    )
    values = np.empty(len(distinct), dtype=object)
    values[:] = [by_text.get(str(v), v) for v in distinct.tolist()]
    return values[positions.reshape(-1)]


@register_loader("onnx")
def load(blob: bytes, details: dict[str, Any], signature: Signature) -> OnnxRuntime:
    return OnnxRuntime(blob, signature, label_index=details.get("label_output") == "index")
