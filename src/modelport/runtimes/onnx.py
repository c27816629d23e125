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


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor stored in a graph, its nodes' attributes and nested subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def check_self_contained(blob: bytes) -> onnx.ModelProto:
    """Parse an ONNX model and refuse one whose tensors live in external files: their paths come from
    the file's author and would be resolved against the server's working directory.

    Registration calls this on every ONNX file it accepts; a stored blob is verified against its digest
    before it is loaded, so serving does not parse it again (nor import ``onnx``, ~20 MB)."""
    import onnx

    model = onnx.load_from_string(blob)
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise UnsafeFormat(
                f"the ONNX model keeps tensor {tensor.name!r} in an external file; "
                "only self-contained ONNX models are accepted"
            )
    return model


def session_options(threads: int = 1) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: shape warnings from converted models are noise
    return options


class OnnxRuntime:
    format = "onnx"

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
            matrix: np.ndarray = np.column_stack([batch[n] for n in self._signature.names]).astype(dtype)
            return {name: matrix}
        feeds: dict[str, np.ndarray] = {}
        for name, dtype in self._inputs:
            column = batch[name]
            if dtype is np.object_:
                column = np.array(["" if v is None else str(v) for v in column], dtype=object)
            feeds[name] = column.astype(dtype).reshape(-1, 1)
        return feeds

    def predict(self, batch: Batch) -> Prediction:
        wanted = [n for n in (self._label_output, self._score_output) if n is not None]
        results = dict(zip(wanted, self._session.run(wanted, self.feeds(batch)), strict=True))
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
            labels = _as_class_values(labels, classes)
        return Prediction(labels=labels, probabilities=prediction.probabilities)

    def close(self) -> None:
        del self._session


def _as_class_values(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    """Labels as the signature's class values (ONNX may return int64 or bytes/str)."""
    by_text = {str(c): c for c in classes}
    return np.array([by_text.get(str(v), v) for v in labels.tolist()], dtype=object)


@register_loader("onnx")
def load(blob: bytes, details: dict[str, Any], signature: Signature) -> OnnxRuntime:
    return OnnxRuntime(blob, signature, label_index=details.get("label_output") == "index")
