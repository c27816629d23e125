"""MLflow's ``spark_udf`` on Spark ``local[2]``: the peer of `modelport score --engine spark` in
docs/performance.md ("Batch scoring"). Runs in the peer harness's MLflow environment, with pyspark
installed there:

    $BENCH_HOME/venv-mlflow/bin/pip install pyspark
    $BENCH_HOME/venv-mlflow/bin/python bench/batch_spark_udf.py small

Reads the same 1M-row Parquet file `bench/batch.py` writes, scores it with the harness's MLflow model
(``models/mlflow-MODEL``, env_manager=local: no environment is rebuilt) and writes Parquet. The time
includes starting the Spark session, as modelport's figure does. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "modelport-bench"))
RUN = ROOT / "run" / "modelport-batch"


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "small"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = time.perf_counter()
    import mlflow.pyfunc
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import array

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    frame = spark.read.parquet(str(RUN / "1m.parquet"))
    rows = frame.count()
    udf = mlflow.pyfunc.spark_udf(
        spark, model_uri=str(ROOT / "models" / f"mlflow-{model}"), result_type="double", env_manager="local"
    )
    # the harness's MLflow models take one (-1, 12) tensor: the features as one array column
    scored = frame.withColumn("prediction", udf(array(*frame.columns)))
    scored.write.mode("overwrite").parquet(str(RUN / f"spark-udf-{model}"))
    seconds = time.perf_counter() - started
    spark.stop()
    print(
        json.dumps(
            {
                "tool": "mlflow spark_udf local[2]",
                "model": model,
                "rows": rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
