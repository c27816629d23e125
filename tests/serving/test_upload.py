"""Registration over HTTP (serving/upload.py, registry/upload.py): a publisher streams a model file and
a sample as a multipart form and gets the same version local registration makes; every hostile upload
— oversized, a zip bomb, a traversal or symlink member, a pickle disguised as skops or declared as
one, a model that needs too much memory, a registration that runs past its time — is refused with a
clear 4xx, leaves nothing registered and no upload behind, and the server goes on serving. In-process
through the real ASGI app; registration runs in real child processes."""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

import modelport.serving.upload as upload_module
from modelport.registry.upload import RegistrationLimits
from tests.registry.test_archives import _hostile
from tests.registry.test_hostile_models import _memory_bomb
from tests.security.conftest import INFER, Keys, bearer, keyed_app, keyed_home, keys, open_home
from tests.security.test_attacks import Canary
from tests.serving.conftest import InProcess

__all__ = ["keyed_app", "keyed_home", "keys"]  # fixtures, imported for this module

FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = pd.DataFrame(np.random.default_rng(3).normal(size=(200, 6)), columns=FEATURES)
    return data


@pytest.fixture(scope="module")
def skops_model(frame: pd.DataFrame) -> bytes:
    model = LogisticRegression().fit(frame, np.where(frame["f0"] > 0, "good", "bad"))
    return bytes(skops.io.dumps(model))


def parquet(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.to_parquet(out)
    return out.getvalue()


def post(
    app: InProcess, token: str | None, name: str, files: dict[str, tuple[str, bytes]], **data: str
) -> httpx.Response:
    with app.client() as client:
        headers = bearer(token) if token else {}
        return client.post(f"/api/v1/models/{name}/versions", files=files, data=data, headers=headers)


def versions_of(app: InProcess, name: str) -> int:
    registry = open_home(app.home)
    try:
        return len(registry.versions(name)) if name in {m.name for m in registry.models()} else 0
    finally:
        registry.close()


def leftovers(app: InProcess) -> list[Path]:
    return list((app.home / "run" / "uploads").glob("*"))


def still_serving(app: InProcess, keys: Keys) -> None:
    with app.client(keys.consumer) as client:
        assert client.post("/v2/models/credit/infer", json=INFER).status_code == 200


@pytest.fixture
def app(keyed_app: InProcess) -> Iterator[InProcess]:
    yield keyed_app
    assert leftovers(keyed_app) == []  # no upload left behind, whatever happened


def test_a_publisher_registers_over_http(
    app: InProcess, keys: Keys, skops_model: bytes, frame: pd.DataFrame
) -> None:
    files = {"model": ("model.skops", skops_model), "sample": ("sample.parquet", parquet(frame))}
    answer = post(
        app,
        keys.publisher,
        "credit-uploaded",
        files,
        alias="staging",
        description="from a notebook",
        metrics='{"auc": 0.91}',
        tags='{"team": "risk"}',
    )
    assert answer.status_code == 201, answer.text
    version = answer.json()
    assert version["number"] == 1 and version["creator"] == f"key:{Keys.id_of(keys.publisher)}"
    assert answer.headers["location"] == "/api/v1/models/credit-uploaded/versions/1"
    assert version["conversion"]["proof"]["equivalent"] is True  # the same proof as local registration
    registry = open_home(app.home)
    try:
        stored = registry.get("credit-uploaded@staging")
        assert stored.lineage["metrics"] == {"auc": 0.91} and stored.tags == {"team": "risk"}
        assert stored.description == "from a notebook"
    finally:
        registry.close()
    row = {"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [[0.5] * 6]}
    with app.client(keys.admin) as client:
        scored = client.post("/v2/models/credit-uploaded/infer", json={"inputs": [row]})
    assert scored.status_code == 200, scored.text


def test_who_may_upload(app: InProcess, keys: Keys, skops_model: bytes, frame: pd.DataFrame) -> None:
    files = {"model": ("model.skops", skops_model), "sample": ("sample.parquet", parquet(frame))}
    assert post(app, None, "credit-nobody", files).status_code == 401
    assert post(app, keys.consumer, "credit-nobody", files).status_code == 403
    assert post(app, keys.publisher, "fraud-new", files).status_code == 404  # outside its patterns
    assert versions_of(app, "credit-nobody") == 0


def test_malformed_forms_are_refused(
    app: InProcess, keys: Keys, skops_model: bytes, frame: pd.DataFrame
) -> None:
    sample = ("sample.parquet", parquet(frame))
    cases = [
        ({"model": ("model.skops", skops_model)}, {}, 400, "needs a sample part"),
        ({"model": ("model.bin", skops_model), "sample": sample}, {}, 400, "say the model's format"),
        (
            {"model": ("model.skops", skops_model), "sample": sample, "evil": ("x", b"1")},
            {},
            400,
            "unknown form part",
        ),
        ({"model": ("model.skops", skops_model), "sample": sample}, {"tags": "[1]"}, 400, "JSON object"),
        ({"model": ("model.skops", skops_model), "sample": sample}, {"alias": "../x"}, 400, "alias"),
    ]
    for files, data, status, message in cases:
        answer = post(app, keys.publisher, "credit-malformed", files, **data)
        assert answer.status_code == status and message in answer.text, (message, answer.text)
    with app.client(keys.publisher) as client:
        not_multipart = client.post("/api/v1/models/credit-malformed/versions", content=skops_model)
        assert not_multipart.status_code == 415
        broken = client.post(
            "/api/v1/models/credit-malformed/versions",
            content=b'--xx\r\nContent-Disposition: form-data; name="model"\r\n\r\nabc',  # never ends
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert broken.status_code == 400
    assert versions_of(app, "credit-malformed") == 0
    still_serving(app, keys)


def test_oversized_uploads_are_refused_before_they_are_read(
    app: InProcess, keys: Keys, skops_model: bytes, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload_module, "MAX_UPLOAD_BYTES", 4096)
    files = {"model": ("model.skops", skops_model), "sample": ("sample.parquet", parquet(frame))}
    declared = post(app, keys.publisher, "credit-big", files)
    assert declared.status_code == 413, declared.text
    with app.client(keys.publisher) as client:  # no Content-Length: counted as it streams

        def pieces() -> Iterator[bytes]:
            yield b'--b\r\nContent-Disposition: form-data; name="model"; filename="m.skops"\r\n\r\n'
            for _ in range(100):
                yield b"x" * 1024

        streamed = client.post(
            "/api/v1/models/credit-big/versions",
            content=pieces(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert streamed.status_code == 413, streamed.text
    assert versions_of(app, "credit-big") == 0
    still_serving(app, keys)


@pytest.mark.parametrize("kind", ["zip bomb", "traversal", "symlink", "encrypted"])
def test_hostile_archives_are_refused(
    app: InProcess, keys: Keys, skops_model: bytes, frame: pd.DataFrame, kind: str
) -> None:
    data, message = _hostile(skops_model)[kind]
    files = {"model": ("model.skops", data), "sample": ("sample.parquet", parquet(frame))}
    answer = post(app, keys.publisher, "credit-hostile", files)
    assert answer.status_code == 400, answer.text
    assert re.search(message, answer.json()["error"]), answer.text  # the archive check's own words
    assert versions_of(app, "credit-hostile") == 0
    still_serving(app, keys)


def test_pickles_are_never_registered_over_http(
    app: InProcess, keys: Keys, frame: pd.DataFrame, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    pickled = pickle.dumps(Canary(canary))
    sample = ("sample.parquet", parquet(frame))
    disguised = post(
        app, keys.publisher, "credit-pickled", {"model": ("model.skops", pickled), "sample": sample}
    )
    assert disguised.status_code == 400 and "not a zip archive" in disguised.text
    declared = post(
        app,
        keys.publisher,
        "credit-pickled",
        {"model": ("m.skops", pickled), "sample": sample},
        format="pickle",
    )
    assert declared.status_code == 400 and "never registered over HTTP" in declared.text
    named = post(app, keys.publisher, "credit-pickled", {"model": ("model.pkl", pickled), "sample": sample})
    assert named.status_code == 400 and "never registered over HTTP" in named.text
    assert not canary.exists()  # nothing, anywhere, unpickled it
    assert versions_of(app, "credit-pickled") == 0


def test_a_model_that_eats_memory_or_time_is_refused_and_nothing_stays(
    app: InProcess, keys: Keys, skops_model: bytes, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = ("sample.parquet", parquet(frame))
    bombed = post(
        app, keys.publisher, "credit-greedy", {"model": ("bomb.skops", _memory_bomb()), "sample": sample}
    )
    assert bombed.status_code == 400 and "memory" in bombed.text, bombed.text
    monkeypatch.setattr(upload_module, "LIMITS", RegistrationLimits(wall_seconds=0.5))  # any takes longer
    slow = post(
        app, keys.publisher, "credit-greedy", {"model": ("model.skops", skops_model), "sample": sample}
    )
    assert slow.status_code == 400 and "still running after 0.5 s" in slow.text, slow.text
    assert versions_of(app, "credit-greedy") == 0
    still_serving(app, keys)


def test_every_http_error_names_its_class(app: InProcess, keys: Keys, frame: pd.DataFrame) -> None:
    """``X-Modelport-Error``: the modelport.errors class behind an error answer, on every HTTP protocol
    (the bodies stay as each protocol fixes them), so a client raises exactly it."""
    with app.client(keys.admin) as client:
        answers = {
            "v2": client.post("/v2/models/nope/infer", json=INFER),
            "mlflow": client.post("/endpoints/nope/invocations", json={"inputs": [[0.0] * 6]}),
            "tfserving": client.post("/v1/models/nope:predict", json={"instances": [[0.0] * 6]}),
            "alias": client.post("/v2/models/credit/versions/nowhere/infer", json=INFER),
            "upload": client.post(
                "/api/v1/models/credit-x/versions",
                files={"model": ("m.pkl", b"x"), "sample": ("s.parquet", parquet(frame))},
            ),
        }
    expected = {
        "v2": "ModelNotFound",
        "mlflow": "ModelNotFound",
        "tfserving": "ModelNotFound",
        "alias": "AliasNotFound",
        "upload": "UnsafeFormat",
    }
    assert {k: r.headers.get("x-modelport-error") for k, r in answers.items()} == expected
    assert answers["v2"].json() == {"error": answers["v2"].json()["error"]}  # the V2 body unchanged
    assert set(answers["mlflow"].json()) == {"error_code", "message"}
