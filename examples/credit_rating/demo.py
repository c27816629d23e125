"""`make demo`: train and register the example model, show it, score a few firms locally, then serve it.

Everything lives under MODELPORT_HOME (default ./.modelport): an SQLite registry and local artifacts.
The server runs in the foreground on 127.0.0.1 (PORT, default 8080) until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELPORT = str(Path(sys.executable).with_name("modelport"))


def run(*args: str) -> None:
    print(f"\n$ modelport {shlex.join(args)}", flush=True)
    subprocess.run([MODELPORT, *args], check=True)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from train import OUT, train_and_register

    home = os.environ.get("MODELPORT_HOME", ".modelport")
    run("init")  # creates the registry (or migrates it) and prints its first admin key, once
    print(f"training the credit-rating example and registering it in {home} …", flush=True)
    version = train_and_register()
    print(f"registered {version.ref} (alias production), serving format {version.serving_format}")
    print(f"ONNX twin: {version.conversion['status']} — {version.conversion['reason']}")
    run("versions", "credit-rating")
    run("show", "credit-rating@production")
    run("predict", "credit-rating@production", "--input", str(OUT / "new_firms.csv"), "--csv")
    token = _demo_key()
    port = os.environ.get("PORT", "8080")
    row = [0.35, 2.1, 6.5, 1.6, 1.2, 0.05, 0.11, 0.12, 0.06, 0.45, 1.0, 3.2]
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 12], "data": row}]})
    print(
        f"""
Serving every registered model on http://127.0.0.1:{port} (Ctrl-C stops it).
Every call needs an API key. A consumer key for credit-rating* was just created (shown only once):

  export APP_KEY={token}   # not MODELPORT_KEY: the CLI reads that one as your own identity

Try it from another terminal:

  curl -s -X POST http://127.0.0.1:{port}/v2/models/credit-rating/versions/production/infer \\
       -H "Authorization: Bearer $APP_KEY" -d '{body}'

  curl -s -X POST http://127.0.0.1:{port}/invocations -H "Authorization: Bearer $APP_KEY" \\
       -H 'Content-Type: text/csv' --data-binary @{OUT / "new_firms.csv"}

  .venv/bin/python - <<'PY'
import numpy as np, tritonclient.http as triton
client = triton.InferenceServerClient("127.0.0.1:{port}")
x = triton.InferInput("input", [1, 12], "FP64")
x.set_data_from_numpy(np.array([{row}]))
result = client.infer("credit-rating", [x], model_version="production",
                      headers={{"Authorization": "Bearer {token}"}})
print(result.as_numpy("label"), result.as_numpy("probabilities").round(3))
PY
""",
        flush=True,
    )
    os.execv(
        MODELPORT,
        [MODELPORT, "serve", "--port", port, "--default-model", "credit-rating@production"],
    )


def _demo_key() -> str:
    """A consumer key limited to the example's models, for the calls printed below."""
    from modelport.app import open_registry
    from modelport.registry.service import local_actor
    from modelport.security.store import KeyStore

    registry = open_registry()
    try:
        created = KeyStore(registry.store).create(
            name="demo", role="consumer", models=["credit-rating*"], actor=local_actor()
        )
    finally:
        registry.close()
    assert created is not None
    return created[1]


if __name__ == "__main__":
    main()
