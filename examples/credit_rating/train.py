"""Train the example credit-rating classifier and register it with modelport.

    python examples/credit_rating/train.py [--rows 10000] [--alias production]

The pipeline is median imputation + gradient boosting: trees need no scaling, and both steps convert
to ONNX exactly (a StandardScaler in front of trees does not: float32 scaling moves a few rows across
split thresholds, and modelport then refuses the ONNX twin — see docs/formats.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import FEATURES, make_dataset

import modelport

OUT = Path(__file__).resolve().parent / "out"


def build_pipeline(n_estimators: int = 60) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            (
                "gbm",
                GradientBoostingClassifier(
                    n_estimators=n_estimators,
                    max_depth=3,
                    learning_rate=0.15,
                    subsample=0.8,
                    random_state=0,
                ),
            ),
        ]
    )


def train_and_register(
    rows: int = 10_000,
    alias: str | None = "production",
    n_estimators: int = 60,
    out: Path = OUT,
    settings: modelport.Settings | None = None,
) -> modelport.VersionRecord:
    data = make_dataset(rows, seed=7)
    split = int(len(data) * 0.8)
    train, test = data.iloc[:split], data.iloc[split:]
    out.mkdir(parents=True, exist_ok=True)
    train.to_parquet(out / "train.parquet", index=False)
    test[FEATURES].head(5).to_csv(out / "new_firms.csv", index=False)

    model = build_pipeline(n_estimators).fit(train[FEATURES], train["rating"])
    probabilities = model.predict_proba(test[FEATURES])
    metrics = {
        "accuracy": float(accuracy_score(test["rating"], model.predict(test[FEATURES]))),
        "log_loss": float(log_loss(test["rating"], probabilities, labels=model.classes_)),
    }
    return modelport.register(
        model,
        name="credit-rating",
        sample=train,
        target="rating",
        alias=alias,
        description="Corporate credit rating (AAA … D) from 12 financial ratios",
        tags={"team": "credit-risk", "example": "true"},
        metrics=metrics,
        training_data=out / "train.parquet",
        settings=settings,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--alias", default="production")
    parser.add_argument("--estimators", type=int, default=60)
    args = parser.parse_args(argv)
    version = train_and_register(args.rows, args.alias or None, args.estimators)
    print(f"registered {version.ref} serving {version.serving_format}: {version.conversion['reason']}")


if __name__ == "__main__":
    main()
