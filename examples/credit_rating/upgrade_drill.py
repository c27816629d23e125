"""`make upgrade-drill`: train and register the example under one scikit-learn release, then check and
serve it under another — the upgrade that breaks pickled models in the field.

1. A second virtual environment (`.venv-drill`) gets modelport with an older scikit-learn
   (``DRILL_SKLEARN``, default 1.7.2); the example is trained and registered there into a fresh home.
2. With the project's environment (the current scikit-learn), `modelport doctor` replays every
   artifact's golden cases, then `modelport serve` answers the golden rows over HTTP; the served scores
   must equal the ground truth recorded under the old release.

Prints a summary and exits non-zero if anything differs. Talks only to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DRILL_VENV = ROOT / ".venv-drill"
OLD_SKLEARN = os.environ.get("DRILL_SKLEARN", "1.7.2")
NEW_BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def old_environment() -> Path:
    python = DRILL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DRILL_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    # modelport with its sklearn extra (skops, skl2onnx: not in the core install), the old scikit-learn
    editable = ["-e", f"{ROOT}[sklearn]", f"scikit-learn=={OLD_SKLEARN}"]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *editable], check=True)
    return python


def version_of(python: Path, package: str) -> str:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> int:
    step(f"old environment: scikit-learn {OLD_SKLEARN} in {DRILL_VENV.name}")
    old_python = old_environment()
    old_version = version_of(old_python, "scikit-learn")
    new_version = version_of(Path(sys.executable), "scikit-learn")
    print(f"scikit-learn {old_version} (registering) → {new_version} (serving)")
    if old_version == new_version:
        print("the two environments have the same scikit-learn: set DRILL_SKLEARN to another release")
        return 2
    home = Path(tempfile.mkdtemp(prefix="modelport-drill-")) / "home"
    env = {**os.environ, "MODELPORT_HOME": str(home)}

    step("create the registry")
    subprocess.run([str(NEW_BIN / "modelport"), "init", "--json"], env=env, check=True, capture_output=True)

    step("train and register the example under the old release")
    subprocess.run([str(old_python), str(ROOT / "examples/credit_rating/train.py")], env=env, check=True)

    step("modelport doctor under the current release")
    doctor = subprocess.run(
        [str(NEW_BIN / "modelport"), "doctor", "--json"], env=env, capture_output=True, text=True
    )
    diagnosis = json.loads(doctor.stdout)["versions"]
    for row in diagnosis:
        deviation = "—" if row["max_deviation"] is None else f"{row['max_deviation']:.1e}"
        print(
            f"{row['ref']:<18} {row['format']:<8} {row['recorded'] or 'unchanged':<45} "
            f"{deviation:>8}  {row['verdict']}"
        )

    step("serve under the current release and score the recorded golden rows")
    sys.path.insert(0, str(ROOT / "src"))
    from modelport.app import open_registry
    from modelport.settings import Settings

    registry = open_registry(Settings(home=home))
    version = registry.get("credit-rating@production")
    registry.close()
    golden = version.golden
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(NEW_BIN / "modelport"), "serve", "--port", str(port), "--insecure-dev"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        rows = golden["rows"]
        body = {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": [len(rows), len(golden["columns"])],
                    "data": [[float("nan") if v is None else v for v in row] for row in rows],
                }
            ]
        }
        response = httpx.post(
            f"http://127.0.0.1:{port}/v2/models/credit-rating/versions/production/infer",
            content=json.dumps(body),
            timeout=60,
        ).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    outputs = {o["name"]: o for o in response["outputs"]}
    served = np.asarray(outputs["probabilities"]["data"], dtype=np.float64).reshape(len(rows), -1)
    recorded = np.asarray(golden["outputs"]["probabilities"], dtype=np.float64)
    labels_equal = [str(v) for v in outputs["label"]["data"]] == [str(v) for v in golden["outputs"]["labels"]]
    worst = float(np.abs(served - recorded).max())
    print(
        f"served {len(rows)} golden rows: max |served − recorded| = {worst:.2e}, labels equal: {labels_equal}"
    )

    ok = doctor.returncode == 0 and labels_equal and worst <= 1e-4
    ok = ok and all(r["verdict"] == "ok" for r in diagnosis if r["serving"])
    step(f"drill {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
