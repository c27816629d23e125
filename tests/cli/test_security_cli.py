"""`modelport init` (first admin key), `keys`, `usage` and `audit`: results, exit codes and clear
messages for bad input, with nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelport.app import open_registry
from modelport.security.keys import KeyRing
from modelport.security.store import KeyStore
from modelport.settings import Settings
from tests.cli.test_main import run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPORT_HOME", str(home))
    return home


def _keys(home: Path) -> KeyStore:
    return KeyStore(open_registry(Settings(home=home)).store)


def test_init_prints_the_first_admin_key_once(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "init")
    assert code == 0
    token = next(line for line in out.splitlines() if line.startswith("mpk_"))
    assert "shown only once" in out and "Bearer" in err
    store = _keys(home)
    (admin,) = store.list_keys()
    assert admin.role == "admin" and token.split("_", 2)[2] not in repr(admin)
    assert KeyRing(store.list_keys()).authenticate(token).role == "admin"
    code, out, _ = run(capsys, "init")
    assert code == 0 and "mpk_" not in out and len(store.list_keys()) == 1
    code, out, _ = run(capsys, "init", "--json")
    assert "admin_key" not in json.loads(out)


_GIVEN = "mpk_k8sadmin0001_" + "S3cr3t-from-a-Kubernetes-Secret_0123456789"


def test_init_adopts_an_admin_key_from_a_file_and_never_prints_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(_GIVEN + "\n")  # as a mounted Secret often ends
    code, out, err = run(capsys, "init", "--admin-key-file", str(secret_file), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["admin_key"]["key"]["id"] == "k8sadmin0001" and "token" not in info["admin_key"]
    assert _GIVEN.split("_", 2)[2] not in out + err
    store = _keys(home)
    (admin,) = store.list_keys()
    assert admin.role == "admin" and KeyRing([admin]).authenticate(_GIVEN).role == "admin"
    # a second init (every rollout runs the Job) changes nothing and says so
    code, out, _ = run(capsys, "init", "--admin-key-file", str(secret_file))
    assert code == 0 and "not used" in out and _GIVEN not in out and len(store.list_keys()) == 1


@pytest.mark.parametrize(
    "content",
    [
        "",  # an empty Secret
        "mpk_short_secret",  # not the format
        "mpk_k8sadmin0001_" + "x" * 20,  # a secret too short to be a key
        "mpk_K8SADMIN0001_" + "y" * 40,  # an id out of the alphabet
        "mpk_k8sadmin0001_" + "z" * 40 + "\nsecond line",  # two things in one file
        "mpk_k8sadmin0001_" + "a" * 39 + "\x00",  # a control character
    ],
)
def test_a_bad_admin_key_file_is_refused_before_anything_is_created(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(content)
    code, out, err = run(capsys, "init", "--admin-key-file", str(secret_file))
    assert code == 2, (code, out, err)
    assert "admin key must be one token" in err and "Traceback" not in err
    assert content.strip() == "" or content.strip()[:30] not in err  # the token is never repeated
    assert not home.exists()  # nothing created: no registry, no key


def test_a_missing_or_unreadable_admin_key_file_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "init", "--admin-key-file", str(tmp_path / "absent"))
    assert code == 2 and "cannot read --admin-key-file" in err and not home.exists()
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00mpk")
    code, _, err = run(capsys, "init", "--admin-key-file", str(binary))
    assert code == 2 and "cannot read --admin-key-file" in err and not home.exists()
    # a wrong mount: a folder, a device that never ends, a huge file — refused without reading them
    huge = tmp_path / "huge"
    huge.write_bytes(_GIVEN.encode() + b" " * (64 << 20))
    for path, message in (
        (tmp_path, "cannot read"),
        (Path("/dev/zero"), "cannot read"),
        (huge, "over 4096 bytes"),
    ):
        code, _, err = run(capsys, "init", "--admin-key-file", str(path))
        assert code == 2 and message in err and not home.exists(), (path, err)


def test_keys_lifecycle(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init")
    code, out, _ = run(
        capsys,
        "keys",
        "create",
        "--name",
        "app",
        "--role",
        "consumer",
        "--models",
        "credit-*",
        "--expires",
        "30d",
        "--rate",
        "50/s",
        "--quota",
        "1000/month",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    key_id, token = created["key"]["id"], created["token"]
    assert created["key"]["models"] == ["credit-*"] and created["key"]["rate_per_second"] == 50.0
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0 and key_id in out and "credit-*" in out and token not in out
    code, out, _ = run(capsys, "keys", "update", key_id, "--models", "fraud", "--clear", "rate", "--json")
    assert code == 0 and json.loads(out)["models"] == ["fraud"] and json.loads(out)["rate_per_second"] is None
    code, out, err = run(capsys, "keys", "rotate", key_id, "--grace", "1h")
    assert code == 0 and "old secret works until" in err
    new_token = next(line for line in out.splitlines() if line.startswith("mpk_"))
    ring = KeyRing(_keys(home).list_keys(include_revoked=False))
    assert ring.authenticate(token).key_id == ring.authenticate(new_token).key_id == key_id
    code, out, _ = run(capsys, "keys", "revoke", key_id)
    assert code == 0 and "revoked" in out
    code, out, _ = run(capsys, "audit", "--json")
    actions = [r["action"] for r in json.loads(out)]
    assert actions == ["key.create", "key.create", "key.update", "key.rotate", "key.revoke"]
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "5 record(s)" in out
    code, out, _ = run(capsys, "usage", "--json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--name", "x", "--role", "root"], "role must be one of"),
        (["keys", "create", "--name", "x", "--role", "admin", "--rate", "fast"], "rate 'fast'"),
        (["keys", "create", "--name", "x", "--role", "admin", "--rate", "0/s"], "rate '0/s'"),
        (["keys", "create", "--name", "x", "--role", "admin", "--expires", "soon"], "duration 'soon'"),
        (["keys", "create", "--name", "x", "--role", "admin", "--quota", "5/year"], "quota '5/year'"),
        (["keys", "create", "--name", "x", "--role", "admin", "--models", "../etc"], "model pattern"),
        (["keys", "create", "--name", "", "--role", "admin"], "key name"),
        (["keys", "create", "--name", "a\x01b", "--role", "admin"], "key name"),
        (["keys", "revoke", "zzzzzzzzzzzz"], "no key with id"),
        (["keys", "rotate", "zzzzzzzzzzzz"], "no key with id"),
        (["keys", "rotate", "zzzzzzzzzzzz", "--grace", "90d"], "grace period"),
        (["keys", "update", "zzzzzzzzzzzz", "--rate", "1/s"], "no key with id"),
        (["keys", "update", "zzzzzzzzzzzz"], "nothing to change"),
        (["keys", "update", "zzzzzzzzzzzz", "--clear", "role"], "can be cleared"),
        (["usage", "--since", "yesterday"], "--since"),
    ],
)
def test_bad_input_is_refused_clearly_and_changes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run(capsys, "init")
    before = len(_keys(home).list_keys())
    code, out, err = run(capsys, *args)
    assert code in (2, 3), (code, out, err)
    assert message in err and "Traceback" not in err
    assert len(_keys(home).list_keys()) == before


def test_usage_formats(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import date

    from modelport.security.store import UsageRow

    run(capsys, "init")
    store = _keys(home)
    store.add_usage([UsageRow("abcdefghijkl", "credit", date(2026, 11, 1), 10, 12, 1, 1000, 2000)])
    store.add_usage([UsageRow("abcdefghijkl", "credit", date(2026, 11, 1), 5, 5, 0, 500, 900)])
    code, out, _ = run(capsys, "usage", "--json")
    assert json.loads(out) == [
        {
            "key_id": "abcdefghijkl",
            "model": "credit",
            "day": "2026-11-01",
            "requests": 15,
            "rows": 17,
            "errors": 1,
            "bytes_in": 1500,
            "bytes_out": 2900,
        }
    ]
    code, out, _ = run(capsys, "usage", "--csv", "--since", "2026-11-01")
    assert out.splitlines()[1] == "2026-11-01,abcdefghijkl,credit,15,17,1,1500,2900"
    code, out, _ = run(capsys, "usage", "--model", "other", "--json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, "usage")
    assert code == 0 and "abcdefghijkl" in out
