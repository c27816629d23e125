"""Structural checks of decision trees read from a model file, before any of them scores a row.

The tree walkers of scikit-learn, XGBoost and LightGBM are C loops that trust the node arrays: a child
index pointing back at an ancestor loops forever (without the GIL, so no timeout in the process can
stop it) and an index beyond the array reads arbitrary memory. A safe *format* (skops, XGBoost JSON,
LightGBM text) does not make the arrays inside it safe, so every tree of a model is checked here:

* children in range, ``-1`` exactly for leaves (both children, or neither);
* a proper tree: every node but the root has exactly one parent, and all are reachable from the root
  (so no cycle, no shared node);
* depth within the recorded maximum (scikit-learn) and within :data:`MAX_DEPTH`;
* split features within the model's feature count; no NaN threshold; value arrays sized to the nodes.

The checks are vectorised numpy passes over the arrays plus one level-by-level walk (a loop over the
depth, not the nodes); only when a check fails does a node-by-node walk find the node to name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelport.errors import UnsafeFormat

__all__ = [
    "MAX_DEPTH",
    "check_estimator_trees",
    "check_lightgbm_text",
    "check_structure",
    "check_xgboost_json",
]

MAX_DEPTH = 10_000
"""No real tree is this deep; a deeper one is a crafted chain meant to exhaust a stack."""

_MAX_OBJECTS = 200_000  # containers and estimators visited while looking for trees


def check_structure(left: np.ndarray, right: np.ndarray, what: str, *, all_reachable: bool = True) -> int:
    """Check that ``left``/``right`` (``-1`` for a leaf's children) describe a binary tree rooted at
    node 0 and return its depth (a lone root has depth 0). ``all_reachable=False`` tolerates nodes
    no path reaches (XGBoost keeps pruned nodes in its arrays); they are never visited."""
    left = np.asarray(left, dtype=np.int64).reshape(-1)
    right = np.asarray(right, dtype=np.int64).reshape(-1)
    n = len(left)
    if n == 0 or len(right) != n:
        raise UnsafeFormat(f"{what}: {n} left and {len(right)} right children (a tree needs both, ≥1 node)")
    for side, children in (("left", left), ("right", right)):
        bad = np.flatnonzero((children < -1) | (children >= n))
        if len(bad):
            node = int(bad[0])
            raise UnsafeFormat(
                f"{what}: node {node}'s {side} child {int(children[node])} is out of range "
                f"(the tree has {n} nodes)"
            )
    split = left != -1
    lopsided = np.flatnonzero(split != (right != -1))
    if len(lopsided):
        node = int(lopsided[0])
        raise UnsafeFormat(
            f"{what}: node {node} has one child only (left {int(left[node])}, right {int(right[node])})"
        )
    children = np.concatenate([left[split], right[split]])
    parents = np.bincount(children, minlength=n)
    if parents[0] > 0 or (parents[1:] > 1).any():
        return _walk(left, right, what, all_reachable)
    # Every node has at most one parent and the root none: a level-by-level walk from the root
    # reaches each node at most once and ends.
    reached, depth = 1, 0
    frontier = np.zeros(1, dtype=np.int64)
    while True:
        frontier = frontier[split[frontier]]
        if not len(frontier):
            break
        frontier = np.concatenate([left[frontier], right[frontier]])
        depth += 1
        reached += len(frontier)
        if depth > MAX_DEPTH:
            raise UnsafeFormat(f"{what}: deeper than {MAX_DEPTH} levels")
    if reached < n and all_reachable:
        return _walk(left, right, what, all_reachable)
    return depth


def _walk(left: np.ndarray, right: np.ndarray, what: str, all_reachable: bool) -> int:
    """Walk node by node (iteratively) from the root, naming the first node that breaks the tree
    shape; return the depth when the reachable part is a proper tree."""
    n = len(left)
    parent = np.full(n, -2, dtype=np.int64)
    level = np.zeros(n, dtype=np.int64)
    parent[0] = -1
    stack = [0]
    while stack:
        node = stack.pop()
        for side, child in (("left", int(left[node])), ("right", int(right[node]))):
            if child == -1:
                continue
            if parent[child] != -2:
                up = node
                while up != -1 and up != child:
                    up = int(parent[up])
                if up == child:
                    raise UnsafeFormat(f"{what}: node {node}'s {side} child {child} is an ancestor (cycle)")
                raise UnsafeFormat(
                    f"{what}: node {node}'s {side} child {child} is already the child of node "
                    f"{int(parent[child])} (not a tree)"
                )
            parent[child] = node
            level[child] = level[node] + 1
            if level[child] > MAX_DEPTH:
                raise UnsafeFormat(f"{what}: deeper than {MAX_DEPTH} levels")
            stack.append(child)
    unreached = np.flatnonzero(parent == -2)
    if all_reachable and len(unreached):
        raise UnsafeFormat(f"{what}: node {int(unreached[0])} is not reachable from the root")
    return int(level.max())


def _check_features(feature: np.ndarray, split: np.ndarray, n_features: int, what: str) -> None:
    used = np.asarray(feature, dtype=np.int64)[split]
    bad = np.flatnonzero((used < 0) | (used >= n_features))
    if len(bad):
        node = int(np.flatnonzero(split)[bad[0]])
        raise UnsafeFormat(
            f"{what}: node {node} splits on feature {int(used[bad[0]])} but the model has {n_features}"
        )


# -- scikit-learn ---------------------------------------------------------------------------------


def _check_sklearn_tree(tree: Any, what: str) -> None:
    n = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    if len(left) != n or len(right) != n:
        raise UnsafeFormat(f"{what}: {len(left)} nodes stored for a node count of {n}")
    depth = check_structure(left, right, what)
    if depth > int(tree.max_depth):
        raise UnsafeFormat(f"{what}: {depth} levels deep but records a maximum depth of {tree.max_depth}")
    split = left != -1
    _check_features(np.asarray(tree.feature), split, int(tree.n_features), what)
    if np.isnan(np.asarray(tree.threshold, dtype=np.float64)[split]).any():
        raise UnsafeFormat(f"{what}: a split has a NaN threshold")
    value = np.asarray(tree.value)
    if value.ndim != 3 or value.shape[0] != n or value.shape[1] != int(tree.n_outputs):
        raise UnsafeFormat(f"{what}: values of shape {value.shape} for {n} nodes")


def _check_hist_predictor(predictor: Any, n_features: int, what: str) -> None:
    """HistGradientBoosting's ``TreePredictor``: leaves are flagged, their child fields unused."""
    nodes = np.asarray(predictor.nodes)
    leaf = nodes["is_leaf"].astype(bool)
    left = np.where(leaf, -1, nodes["left"].astype(np.int64))
    right = np.where(leaf, -1, nodes["right"].astype(np.int64))
    check_structure(left, right, what)
    numeric = ~leaf & ~nodes["is_categorical"].astype(bool)
    _check_features(nodes["feature_idx"], numeric, n_features, what)
    categorical = ~leaf & nodes["is_categorical"].astype(bool)
    if categorical.any():
        bitsets = len(np.asarray(predictor.raw_left_cat_bitsets))
        if (nodes["bitset_idx"][categorical].astype(np.int64) >= bitsets).any():
            raise UnsafeFormat(f"{what}: a categorical split points past its {bitsets} category sets")


def _children(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield item, f"{path}[{key!r}]"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield item, f"{path}[{index}]"
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            for position in np.ndindex(value.shape):
                label = ",".join(str(i) for i in position)
                yield value[position], f"{path}[{label}]"
    elif type(value).__module__.startswith("sklearn.") and hasattr(value, "__dict__"):
        for name, item in vars(value).items():
            yield item, f"{path}.{name}"


def check_estimator_trees(estimator: Any) -> int:
    """Check every tree reachable from ``estimator`` (pipelines, column transformers, ensembles, meta
    estimators: any attribute, list or object array holding estimators); return how many."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    root = type(estimator).__name__
    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = [(estimator, root, int(getattr(estimator, "n_features_in_", 0)))]
    checked = 0
    while stack:
        value, path, n_features = stack.pop()
        if isinstance(value, str | bytes | int | float | bool | type(None)) or id(value) in seen:
            continue
        seen.add(id(value))
        if len(seen) > _MAX_OBJECTS:
            raise UnsafeFormat(f"the {root} nests more than {_MAX_OBJECTS} objects")
        if isinstance(value, Tree):
            _check_sklearn_tree(value, f"tree {path}")
            checked += 1
            continue
        if isinstance(value, TreePredictor):
            _check_hist_predictor(value, n_features, f"tree {path}")
            checked += 1
            continue
        width = int(getattr(value, "n_features_in_", n_features) or n_features)
        stack.extend((item, label, width) for item, label in _children(value, path))
    return checked


# -- XGBoost JSON ---------------------------------------------------------------------------------


def _xgboost_trees(model: Any) -> tuple[list[Any], int]:
    learner = model["learner"]
    booster = learner["gradient_booster"]
    if booster.get("name") == "dart":
        booster = booster["gbtree"]
    n_features = int(learner["learner_model_param"]["num_feature"])
    trees = booster.get("model", {}).get("trees", []) if booster.get("name") != "gblinear" else []
    return list(trees), n_features


def check_xgboost_json(data: bytes | str) -> int:
    """Check every tree of an XGBoost JSON model (as saved by ``save_model``/``save_raw('json')``)
    before XGBoost parses it; return how many. :class:`ValueError` when it is no XGBoost model."""
    try:
        trees, n_features = _xgboost_trees(json.loads(data))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # Not a model at all (XGBoost would refuse it too): a format error, not a hostile tree.
        raise ValueError(f"not an XGBoost JSON model ({type(exc).__name__}: {exc})") from None
    for index, tree in enumerate(trees):
        what = f"XGBoost tree {index}"
        try:
            left = np.asarray(tree["left_children"], dtype=np.int64)
            right = np.asarray(tree["right_children"], dtype=np.int64)
            feature = np.asarray(tree["split_indices"], dtype=np.int64)
            nodes = int(tree["tree_param"]["num_nodes"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise UnsafeFormat(f"{what}: its node arrays are missing or not integers") from None
        if not len(left) == len(right) == len(feature) == nodes:
            raise UnsafeFormat(f"{what}: node arrays of different lengths for {nodes} nodes")
        check_structure(left, right, what, all_reachable=False)
        _check_features(feature, left != -1, n_features, what)
    return len(trees)


# -- LightGBM text --------------------------------------------------------------------------------


def _lightgbm_blocks(text: str) -> Iterator[tuple[str, dict[str, str]]]:
    block: dict[str, str] | None = None
    name = ""
    for line in text.splitlines():
        if line.startswith("Tree="):
            if block is not None:
                yield name, block
            name, block = line, {}
        elif line.startswith("end of trees"):
            break
        elif block is not None and "=" in line:
            key, _, value = line.partition("=")
            block[key] = value
    if block is not None:
        yield name, block


def _ints(block: dict[str, str], key: str, what: str) -> np.ndarray:
    try:
        return np.array(block.get(key, "").split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise UnsafeFormat(f"{what}: {key} holds something other than integers") from None


def check_lightgbm_text(data: bytes | str) -> int:
    """Check every tree of a LightGBM text model before LightGBM parses it; return how many.

    LightGBM numbers internal nodes 0..L-2 and leaves 0..L-1; a negative child ``c`` is leaf ``~c``.
    Leaves are renumbered after the internal nodes so the generic check applies."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    header = text.split("\nTree=", 1)[0]
    max_feature = next(
        (line.partition("=")[2] for line in header.splitlines() if line.startswith("max_feature_idx=")), ""
    )
    try:
        n_features = int(max_feature) + 1
    except ValueError:
        raise ValueError("not a LightGBM text model: it does not state max_feature_idx") from None
    count = 0
    for name, block in _lightgbm_blocks(text):
        what = f"LightGBM {name.lower().replace('=', ' ')}"
        try:
            leaves = int(block.get("num_leaves", ""))
        except ValueError:
            raise UnsafeFormat(f"{what}: num_leaves is not a number") from None
        count += 1
        if leaves <= 1:
            continue
        left, right = _ints(block, "left_child", what), _ints(block, "right_child", what)
        feature = _ints(block, "split_feature", what)
        internal = leaves - 1
        if not len(left) == len(right) == len(feature) == internal:
            raise UnsafeFormat(f"{what}: node arrays of different lengths for {leaves} leaves")
        for side, children in (("left", left), ("right", right)):
            bad = np.flatnonzero((children >= internal) | (children < -leaves))
            if len(bad):
                node = int(bad[0])
                raise UnsafeFormat(
                    f"{what}: node {node}'s {side} child {int(children[node])} is out of range "
                    f"({internal} nodes, {leaves} leaves)"
                )
        unified_left = np.concatenate([np.where(left < 0, internal + ~left, left), np.full(leaves, -1)])
        unified_right = np.concatenate([np.where(right < 0, internal + ~right, right), np.full(leaves, -1)])
        check_structure(unified_left, unified_right, what)
        _check_features(feature, np.ones(internal, dtype=bool), n_features, what)
    return count
