"""Tree structure checks (runtimes/trees.py): real fitted models pass, crafted node arrays are named."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    BaggingClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

from modelport.errors import UnsafeFormat
from modelport.runtimes.base import load_runtime
from modelport.runtimes.trees import (
    MAX_DEPTH,
    check_estimator_trees,
    check_lightgbm_text,
    check_structure,
    check_xgboost_json,
)
from modelport.signature import Feature, Outputs, Signature

X, Y = make_classification(300, 4, n_informative=3, n_redundant=0, n_classes=3, random_state=0)


def with_nodes(tree: Tree, mutate: Callable[[np.ndarray], None], **state: Any) -> Tree:
    """A copy of ``tree`` whose node records were changed by ``mutate`` (the arrays are read-only)."""
    old = tree.__getstate__()
    nodes = old["nodes"].copy()
    mutate(nodes)
    n_classes = np.asarray([tree.value.shape[2]] * tree.n_outputs, dtype=np.intp)
    crafted = Tree(tree.n_features, n_classes, tree.n_outputs)
    crafted.__setstate__({**old, "nodes": nodes, **state})
    return crafted


def crafted_tree(mutate: Callable[[np.ndarray], None], **state: Any) -> DecisionTreeClassifier:
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, Y)
    model.tree_ = with_nodes(model.tree_, mutate, **state)
    return model


def _internal_right(nodes: np.ndarray) -> int:
    return int(nodes["right_child"][0])  # the root's right child, an internal node in these trees


def test_real_models_pass() -> None:
    frame_models = [
        DecisionTreeClassifier(random_state=0),
        RandomForestClassifier(n_estimators=7, random_state=0),
        GradientBoostingClassifier(n_estimators=4, random_state=0),  # estimators_ is 2-D
        HistGradientBoostingClassifier(max_iter=5, random_state=0),
        make_pipeline(StandardScaler(), BaggingClassifier(DecisionTreeClassifier(), n_estimators=3)),
        make_pipeline(
            ColumnTransformer([("s", StandardScaler(), [0, 1])], remainder="passthrough"),
            RandomForestClassifier(n_estimators=2, random_state=0),
        ),
    ]
    counts = [check_estimator_trees(m.fit(X, Y)) for m in frame_models]
    assert counts == [1, 7, 12, 15, 3, 2]


def test_cycle_is_named() -> None:
    def cycle(nodes: np.ndarray) -> None:
        nodes["left_child"][_internal_right(nodes)] = 0

    with pytest.raises(
        UnsafeFormat,
        match=r"tree DecisionTreeClassifier\.tree_: node \d+'s left child 0 is an ancestor \(cycle\)",
    ):
        check_estimator_trees(crafted_tree(cycle))


def test_out_of_range_child_is_named() -> None:
    def far(nodes: np.ndarray) -> None:
        nodes["right_child"][0] = 10**9

    with pytest.raises(UnsafeFormat, match=r"node 0's right child 1000000000 is out of range \(the tree has"):
        check_estimator_trees(crafted_tree(far))


def test_shared_lopsided_and_unreachable_nodes() -> None:
    def shared(nodes: np.ndarray) -> None:
        right = _internal_right(nodes)
        nodes["left_child"][right] = int(nodes["left_child"][1])

    with pytest.raises(
        UnsafeFormat, match=r"node \d+'s left child \d+ is already the child of node \d+ \(not a tree\)"
    ):
        check_estimator_trees(crafted_tree(shared))

    def lopsided(nodes: np.ndarray) -> None:
        nodes["right_child"][0] = -1

    with pytest.raises(UnsafeFormat, match="node 0 has one child only"):
        check_estimator_trees(crafted_tree(lopsided))
    # Nodes 3 and 4 hang off a self-loop no path from the root reaches.
    left, right = np.array([1, -1, -1, 4, -1]), np.array([2, -1, -1, 3, -1])
    with pytest.raises(UnsafeFormat, match="node 3 is not reachable from the root"):
        check_structure(left, right, "t")
    assert check_structure(left, right, "t", all_reachable=False) == 1


def test_features_thresholds_depth_and_values() -> None:
    def feature(nodes: np.ndarray) -> None:
        nodes["feature"][0] = 99

    with pytest.raises(UnsafeFormat, match="node 0 splits on feature 99 but the model has 4"):
        check_estimator_trees(crafted_tree(feature))

    def nan(nodes: np.ndarray) -> None:
        nodes["threshold"][0] = np.nan

    with pytest.raises(UnsafeFormat, match="NaN threshold"):
        check_estimator_trees(crafted_tree(nan))
    with pytest.raises(UnsafeFormat, match="3 levels deep but records a maximum depth of 1"):
        check_estimator_trees(crafted_tree(lambda nodes: None, max_depth=1))
    chain = MAX_DEPTH + 1  # a left-leaning chain one level too deep
    left = np.full(2 * chain + 1, -1)
    right = np.full(2 * chain + 1, -1)
    left[:chain] = np.arange(1, chain + 1)
    right[:chain] = np.arange(chain + 1, 2 * chain + 1)
    with pytest.raises(UnsafeFormat, match=f"deeper than {MAX_DEPTH} levels"):
        check_structure(left, right, "t")


def test_trees_inside_ensembles_are_named_by_path() -> None:
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y)
    forest.estimators_[2].tree_ = with_nodes(
        forest.estimators_[2].tree_, lambda nodes: nodes["right_child"].__setitem__(0, 0)
    )
    with pytest.raises(
        UnsafeFormat, match=r"tree RandomForestClassifier\.estimators_\[2\]\.tree_: node 0's right child 0"
    ):
        check_estimator_trees(make_pipeline(StandardScaler(), forest).steps[1][1])
    boosted = GradientBoostingClassifier(n_estimators=2, random_state=0).fit(X, Y)
    boosted.estimators_[1, 2].tree_ = with_nodes(
        boosted.estimators_[1, 2].tree_, lambda nodes: nodes["left_child"].__setitem__(0, 10**6)
    )
    with pytest.raises(
        UnsafeFormat, match=r"tree Pipeline\.steps\[1\]\[1\]\.estimators_\[1,2\]\.tree_: node 0's left"
    ):
        check_estimator_trees(make_pipeline(StandardScaler(), boosted))


def _xgboost_json() -> dict[str, Any]:
    import xgboost as xgb

    booster = xgb.XGBClassifier(n_estimators=2, max_depth=2, n_jobs=1).fit(X, Y).get_booster()
    return dict(json.loads(bytes(booster.save_raw(raw_format="json"))))


def test_xgboost_trees() -> None:
    model = _xgboost_json()
    assert check_xgboost_json(json.dumps(model)) == 6
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    cyclic = copy.deepcopy(model)
    cyclic["learner"]["gradient_booster"]["model"]["trees"][4]["right_children"][0] = 0
    with pytest.raises(UnsafeFormat, match="XGBoost tree 4: node 0's right child 0 is an ancestor"):
        check_xgboost_json(json.dumps(cyclic))
    far = copy.deepcopy(model)
    far["learner"]["gradient_booster"]["model"]["trees"][1]["left_children"][0] = len(
        trees[1]["left_children"]
    )
    with pytest.raises(UnsafeFormat, match=r"XGBoost tree 1: node 0's left child \d+ is out of range"):
        check_xgboost_json(json.dumps(far))
    feature = copy.deepcopy(model)
    feature["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 7
    with pytest.raises(UnsafeFormat, match="splits on feature 7 but the model has 4"):
        check_xgboost_json(json.dumps(feature))


def test_xgboost_ubj_is_checked_after_parsing_before_predicting() -> None:
    """We do not decode UBJSON ourselves: the loader checks XGBoost's JSON rendering of what it read
    (XGBoost loads a cyclic tree without complaint and crashes with SIGSEGV when predicting)."""
    import xgboost as xgb

    model = _xgboost_json()
    model["learner"]["gradient_booster"]["model"]["trees"][0]["right_children"][0] = 0
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(model).encode()))
    ubj = bytes(booster.save_raw(raw_format="ubj"))
    signature = Signature(
        [Feature(f"f{i}", "float64") for i in range(4)], Outputs("classification", [0, 1, 2])
    )
    with pytest.raises(UnsafeFormat, match="XGBoost tree 0: node 0's right child 0 is an ancestor"):
        load_runtime("xgboost-ubj", ubj, {}, signature)
    with pytest.raises(UnsafeFormat, match="XGBoost tree 0"):
        load_runtime("xgboost-json", json.dumps(model).encode(), {}, signature)


def _lightgbm_text() -> str:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=2, num_leaves=4, verbose=-1, n_jobs=1).fit(X, Y)
    return str(model.booster_.model_to_string())


def _replace_in_tree(text: str, tree: int, key: str, edit: Callable[[list[str]], None]) -> str:
    start = text.index(f"Tree={tree}\n")
    line_start = text.index(f"\n{key}=", start) + 1
    line_end = text.index("\n", line_start)
    values = text[line_start + len(key) + 1 : line_end].split()
    edit(values)
    return text[:line_start] + f"{key}=" + " ".join(values) + text[line_end:]


def test_lightgbm_trees() -> None:
    text = _lightgbm_text()
    assert check_lightgbm_text(text) == 6
    cyclic = _replace_in_tree(text, 3, "right_child", lambda v: v.__setitem__(1, "0"))
    with pytest.raises(UnsafeFormat, match="LightGBM tree 3: node 1's right child 0 is an ancestor"):
        check_lightgbm_text(cyclic)
    far = _replace_in_tree(text, 5, "left_child", lambda v: v.__setitem__(0, "70000"))
    with pytest.raises(UnsafeFormat, match="LightGBM tree 5: node 0's left child 70000 is out of range"):
        check_lightgbm_text(far)
    leaf = _replace_in_tree(text, 0, "left_child", lambda v: v.__setitem__(0, "-9"))
    with pytest.raises(UnsafeFormat, match="LightGBM tree 0: node 0's left child -9 is out of range"):
        check_lightgbm_text(leaf)
    feature = _replace_in_tree(text, 1, "split_feature", lambda v: v.__setitem__(0, "12"))
    with pytest.raises(UnsafeFormat, match="splits on feature 12 but the model has 4"):
        check_lightgbm_text(feature)
