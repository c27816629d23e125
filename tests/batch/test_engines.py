"""The Dask and Spark engines, for real on 127.0.0.1: a Dask LocalCluster of two worker processes and
Spark ``local[2]`` (the machine's Java 17). Each writes what the local engine writes, bit for bit; a
rejected value names the same row; the version reaches the workers as its artifact's bytes and is
verified there (docs/batch.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from modelport.app import open_registry
from modelport.batch.engines import Shipment
from modelport.errors import IntegrityFailure
from modelport.settings import Settings
from tests.batch.conftest import book, leftovers, write_csv
from tests.conftest import FEATURES
from tests.conftest import invoke_cli as cli

ROWS = 40_000
COLUMNS = ("id", "branch", "label", "p_c0", "p_c1", "p_c2", "flags", "version")


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_an_engine_writes_what_the_local_engine_writes(home: Path, tmp_path: Path, engine: str) -> None:
    loans = book(ROWS, seed=11)
    loans.loc[31_234, "f2"] = 1e9
    source = write_csv(loans, tmp_path / "loans.csv")
    common = ["--keep", "id,branch", "--chunk-rows", "5000"]
    local = cli(
        home,
        "score",
        "credit",
        str(source),
        "-o",
        str(tmp_path / "local.parquet"),
        *common,
        "--on-violation",
        "flag",
        "--json",
    )
    assert local.returncode == 0, local.stderr
    remote = cli(
        home,
        "score",
        "credit",
        str(source),
        "-o",
        str(tmp_path / f"{engine}.parquet"),
        *common,
        "--on-violation",
        "flag",
        "--engine",
        engine,
        "--threads",
        "2",
        "--json",
    )
    assert remote.returncode == 0, remote.stderr
    summary = json.loads(remote.stdout)
    assert (summary["scored"], summary["flagged"], summary["chunks"]) == (
        ROWS,
        json.loads(local.stdout)["flagged"],
        8,
    )
    expected, written = (
        pq.read_table(tmp_path / "local.parquet"),
        pq.read_table(tmp_path / f"{engine}.parquet"),
    )
    for name in COLUMNS:
        assert written.column(name).equals(expected.column(name)), name
    job = json.loads(cli(home, "jobs", "--job", summary["job_id"], "--json").stdout)[0]
    assert job["engine"] == engine and job["status"] == "done"

    # a reject on the cluster stops the job and names the row, as here
    refused = cli(
        home,
        "score",
        "credit",
        str(source),
        "-o",
        str(tmp_path / "refused.parquet"),
        *common,
        "--on-violation",
        "reject",
        "--engine",
        engine,
        "--threads",
        "2",
    )
    assert refused.returncode == 2, refused.stderr
    flags = expected.column("flags").to_pylist()
    first = next(index for index, value in enumerate(flags) if value)  # the earliest row out of bounds
    row = expected.slice(first, 1).to_pylist()[0]
    assert f"row {first + 1:,} (id='{row['id']}', branch='{row['branch']}')" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused.parquet").exists()
    assert leftovers(tmp_path) == []


def test_the_shipped_version_is_verified_and_built_once_per_process(home: Path) -> None:
    registry = open_registry(Settings(home=home))
    try:
        version = registry.get("credit@1")
        blob = registry.read_artifact(version, "onnx")
    finally:
        registry.close()
    shipment = Shipment(version, "onnx", blob)
    loaded = shipment.loaded()
    assert shipment.loaded() is loaded  # the runtime is kept by the artifact's digest
    assert loaded.signature.names == FEATURES
    tampered = dataclasses.replace(shipment, blob=blob[:-1] + bytes([blob[-1] ^ 1]))
    changed = dataclasses.replace(
        tampered,
        version=dataclasses.replace(
            version,
            artifacts=tuple(
                dataclasses.replace(a, digest="0" * 64) if a.role == "onnx" else a for a in version.artifacts
            ),
        ),
    )
    with pytest.raises(IntegrityFailure, match="arrived changed on a worker"):
        changed.loaded()
