"""deploy/k8s: each overlay rendered with kustomize (kubectl's built-in), validated offline against the
Kubernetes API schemas with `kubernetes-validate --strict` (a broken manifest fails it), then read for
what the schemas cannot know — probes on the real probe routes, a drain that outlasts endpoint
propagation, a non-root read-only pod, Secrets for every credential, an autoscaler on the in-flight
gauge modelport exports, a budget and policies that select the pods they mean."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.monitoring.metrics import exported_names
from modelport.serving.rest import RestApp
from modelport.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
ADAPTER = K8S / "extras" / "prometheus-adapter.yaml"
# The oldest release whose preStop `sleep` action is on by default (1.30), and kubectl's here (1.32).
KUBERNETES = ("1.30.0", "1.32.0")
UID = 10001  # deploy/Containerfile's user
IN_FLIGHT = "modelport_requests_in_flight"
MARGIN_SECONDS = 5  # between the server's last possible moment and SIGKILL
# Which env values may be plain text although their names look like credentials: URLs with no secret.
NOT_SECRET = {"MODELPORT_ARTIFACT_URL", "MODELPORT_S3_ENDPOINT_URL"}
CREDENTIAL = re.compile(r"DATABASE_URL|REDIS_URL|SECRET|PASSWORD|TOKEN|ACCESS_KEY")
ADMIN_KEY_DIR = "/run/secrets/modelport-admin"

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is missing: `make tools` installs it (Debian package kubectl, kustomize built in)"
        )
    return found


def render(folder: Path) -> list[Doc]:
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def rendered(overlay: str) -> tuple[Doc, ...]:
    return tuple(render(K8S / "overlays" / overlay))


def kinds(overlay: str, kind: str) -> list[Doc]:
    return [copy.deepcopy(doc) for doc in rendered(overlay) if doc["kind"] == kind]


def single(overlay: str, kind: str) -> Doc:
    found = kinds(overlay, kind)
    assert len(found) == 1, f"{overlay}: {len(found)} {kind}"
    return found[0]


def validate(
    tmp_path: Path, docs: list[Doc] | tuple[Doc, ...], version: str
) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / f"manifest-{version}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    binary = Path(sys.executable).parent / "kubernetes-validate"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: it comes with the dev extra (`make test` installs it)")
    command = [str(binary), "--strict", "--quiet", "--kubernetes-version", version, str(manifest)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# -- the schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_validates_strictly(overlay: str, version: str, tmp_path: Path) -> None:
    done = validate(tmp_path, rendered(overlay), version)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_adapter_example_validates(tmp_path: Path) -> None:
    done = validate(tmp_path, list(yaml.safe_load_all(ADAPTER.read_text())), KUBERNETES[-1])
    assert done.returncode == 0, done.stdout + done.stderr


def broken(mutate: str) -> list[Doc]:
    docs = [copy.deepcopy(doc) for doc in rendered("prod")]
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if mutate == "unknown field":
        container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    elif mutate == "wrong type":
        deployment["spec"]["replicas"] = "three"
    elif mutate == "misplaced field":
        deployment["spec"]["template"]["spec"]["readOnlyRootFilesystem"] = True  # belongs to a container
    elif mutate == "missing required field":
        del container["name"]
    return docs


@pytest.mark.parametrize(
    "mutate", ["unknown field", "wrong type", "misplaced field", "missing required field"]
)
def test_a_broken_manifest_fails_validation(mutate: str, tmp_path: Path) -> None:
    done = validate(tmp_path, broken(mutate), KUBERNETES[-1])
    assert done.returncode != 0, f"{mutate} passed"
    assert "deployment/modelport" in done.stdout + done.stderr


def test_a_broken_kustomization_fails_to_render(tmp_path: Path) -> None:
    copy_of = tmp_path / "k8s"
    shutil.copytree(K8S, copy_of)
    overlay = copy_of / "overlays" / "prod" / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("  - pdb.yaml\n", "  - pdb.yaml\n  - missing.yaml\n"))
    assert "missing.yaml" in overlay.read_text()
    with pytest.raises(AssertionError, match=r"missing\.yaml"):
        render(copy_of / "overlays" / "prod")


# -- what the schemas cannot know -----------------------------------------------------------------


def pods(overlay: str) -> Iterator[tuple[str, Doc]]:
    """(kind, pod spec) of every workload."""
    for doc in rendered(overlay):
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc["kind"], copy.deepcopy(doc["spec"]["template"]["spec"])


def server(overlay: str) -> Doc:
    [container] = single(overlay, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def config(overlay: str) -> dict[str, str]:
    data = single(overlay, "ConfigMap")["data"]
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_a_modelport_setting(overlay: str) -> None:
    """A misspelt MODELPORT_ variable would be ignored without a word: each must name a setting."""
    settings = {f"MODELPORT_{name.upper()}" for name in Settings.model_fields}
    names = set(config(overlay))
    for _, spec in pods(overlay):
        for container in spec["containers"]:
            names |= {variable["name"] for variable in container.get("env", [])}
    assert names and names <= settings, names - settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_links_are_off(overlay: str) -> None:
    """With them on, a Service named modelport sets MODELPORT_PORT=tcp://… in every pod — which the
    settings refuse, so the server would not start."""
    for _, spec in pods(overlay):
        assert spec["enableServiceLinks"] is False
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODELPORT_PORT", "tcp://10.96.0.10:8080")
        with pytest.raises(ValueError, match="port"):
            Settings()


def route(path: str) -> str:
    """The handler answering GET ``path`` without a key (a probe), by name."""
    for method, pattern, handler, _, permission in RestApp.ROUTES:
        if method == "GET" and pattern.fullmatch(path):
            assert permission is None, f"{path} needs a key: a probe cannot send one"
            return handler.__name__
    raise AssertionError(f"no route for {path}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_probe_routes(overlay: str) -> None:
    container = server(overlay)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080, "grpc": 8081}
    args = container["args"]
    assert args[:3] == ["serve", "--host", "0.0.0.0"]
    assert args[args.index("--port") + 1] == "8080" and args[args.index("--grpc-port") + 1] == "8081"
    handlers = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "http"
        handlers[probe] = route(get["path"])
    # readiness is the route that fails on SIGTERM (the drain); liveness only says the loop answers
    assert handlers == {"startupProbe": "ready", "readinessProbe": "ready", "livenessProbe": "live"}


def uvicorn_graceful_seconds() -> int:
    """How long `modelport serve` lets requests in flight finish once the socket closed."""
    from modelport.cli.main import GRACEFUL_SHUTDOWN_SECONDS

    return GRACEFUL_SHUTDOWN_SECONDS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_drain_outlasts_endpoint_propagation_and_fits_the_grace_period(overlay: str) -> None:
    spec = single(overlay, "Deployment")["spec"]["template"]["spec"]
    container = server(overlay)
    drain = float(
        config(overlay).get("MODELPORT_DRAIN_SECONDS", Settings.model_fields["drain_seconds"].default)
    )
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # preStop covers the endpoints' propagation (the pod is terminating but not yet signalled); the
    # drain then covers load balancers that watch readiness: they see 503 within the drain
    assert pre_stop >= drain > 0
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + drain + uvicorn_graceful_seconds() + MARGIN_SECONDS, grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_image_user_on_a_read_only_root(overlay: str) -> None:
    account = single(overlay, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for kind, spec in pods(overlay):
        context = spec["securityContext"]
        assert (
            context["runAsNonRoot"] is True and context["runAsUser"] == UID and context["runAsGroup"] == UID
        )
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert (
            spec["automountServiceAccountToken"] is False
            and spec["serviceAccountName"] == account["metadata"]["name"]
        )
        assert "hostNetwork" not in spec and "hostPID" not in spec
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in spec["containers"]:
            own = container["securityContext"]
            assert own["readOnlyRootFilesystem"] is True, kind
            assert own["allowPrivilegeEscalation"] is False and own["privileged"] is False
            assert own["capabilities"] == {"drop": ["ALL"]}
            # every place the server writes is a bounded emptyDir: the home (run/, cache/) and /tmp
            # (and the init Job reads the admin token from a read-only Secret volume)
            mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
            secrets = {path for path, mount in mounts.items() if "secret" in volumes[mount["name"]]}
            env = {variable["name"]: variable.get("value") for variable in container["env"]}
            assert set(mounts) - secrets == {env["MODELPORT_HOME"], "/tmp"}
            assert secrets == ({ADMIN_KEY_DIR} if kind == "Job" else set()), kind
            for path, mount in mounts.items():
                if path in secrets:
                    assert (
                        mount["readOnly"] is True and volumes[mount["name"]]["secret"]["defaultMode"] == 0o440
                    )
                else:
                    assert volumes[mount["name"]]["emptyDir"]["sizeLimit"], path
            assert container["resources"]["limits"]["memory"], kind


def quantity(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(text))
    assert match, text
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_memory_limit_holds_every_worker_s_models(overlay: str) -> None:
    """Each worker keeps up to MODELPORT_MAX_LOADED_BYTES of models besides its ~400 MiB runtime; a
    limit below the sum gets the pod OOM-killed under a wide model mix, not at start."""
    container = server(overlay)
    workers = int(container["args"][container["args"].index("--workers") + 1])
    per_worker = int(config(overlay)["MODELPORT_MAX_LOADED_BYTES"])
    needed = workers * (per_worker + (400 << 20)) + (200 << 20)
    assert quantity(container["resources"]["limits"]["memory"]) >= needed
    home = next(
        v for v in single(overlay, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "home"
    )
    assert quantity(home["emptyDir"]["sizeLimit"]) > int(config(overlay)["MODELPORT_ARTIFACT_CACHE_BYTES"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_secrets(overlay: str) -> None:
    assert not [doc for doc in rendered(overlay) if doc["kind"] == "Secret"], "Secrets are never committed"
    assert not [name for name in config(overlay) if CREDENTIAL.search(name) and name not in NOT_SECRET]
    expected = {
        "MODELPORT_DATABASE_URL": ("modelport-database", "url"),
        "MODELPORT_S3_ACCESS_KEY_ID": ("modelport-s3", "access-key-id"),
        "MODELPORT_S3_SECRET_ACCESS_KEY": ("modelport-s3", "secret-access-key"),
    }
    for kind, spec in pods(overlay):
        for container in spec["containers"]:
            refs = {}
            for variable in container["env"]:
                if "value" in variable:
                    assert not CREDENTIAL.search(variable["name"]) or variable["name"] in NOT_SECRET, variable
                else:
                    secret = variable["valueFrom"]["secretKeyRef"]
                    refs[variable["name"]] = (secret["name"], secret["key"])
            assert expected.items() <= refs.items(), (kind, refs)
    redis = next(v for v in server(overlay)["env"] if v["name"] == "MODELPORT_REDIS_URL")
    # prod needs its rate limits shared by every replica; dev may run without Redis
    assert redis["valueFrom"]["secretKeyRef"].get("optional", False) is (overlay == "dev")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(overlay: str) -> None:
    for _, spec in pods(overlay):
        for container in spec["containers"]:
            image = container["image"]
            tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or tag not in {"", "latest"}, image
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_replicas_autoscaler_and_budget_per_overlay() -> None:
    assert single("dev", "Deployment")["spec"]["replicas"] == 1
    assert not kinds("dev", "HorizontalPodAutoscaler") and not kinds("dev", "PodDisruptionBudget")
    assert single("prod", "Deployment")["spec"]["replicas"] == 3
    assert single("prod", "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    strategy = single("prod", "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_autoscaler_scales_the_deployment_on_requests_in_flight() -> None:
    deployment = single("prod", "Deployment")
    spec = single("prod", "HorizontalPodAutoscaler")["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    by_type = {metric["type"]: metric for metric in spec["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}
    pods_metric = by_type["Pods"]["pods"]
    assert pods_metric["metric"]["name"] == IN_FLIGHT and pods_metric["target"]["type"] == "AverageValue"
    assert float(pods_metric["target"]["averageValue"]) > 0
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert IN_FLIGHT in exported_names(), "the server must export the gauge the autoscaler reads"
    assert spec["maxReplicas"] > spec["minReplicas"]


def test_the_adapter_rule_serves_the_autoscaler_s_metric() -> None:
    [configmap] = yaml.safe_load_all(ADAPTER.read_text())
    [rule] = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith(IN_FLIGHT + "{") and rule["name"]["as"] == IN_FLIGHT
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
    # the scrape job in its comment keeps the pods the Deployment annotates, on its http port
    annotations = single("prod", "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8080"
    assert "__meta_kubernetes_pod_annotation_prometheus_io_scrape" in ADAPTER.read_text()


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_pick_the_pods_they_mean(overlay: str) -> None:
    deployment = single(overlay, "Deployment")
    server_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = single(overlay, "Job")["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], server_labels)
    assert not selects(deployment["spec"]["selector"]["matchLabels"], job_labels), "the Job is not a replica"
    for service in kinds(overlay, "Service"):
        assert selects(service["spec"]["selector"], server_labels)
        assert not selects(service["spec"]["selector"], job_labels), "no traffic to the init Job"
        named = {port["name"] for port in server(overlay)["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= named
    for budget in kinds(overlay, "PodDisruptionBudget"):
        assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert budget["spec"]["maxUnavailable"] == 1
    for constraint in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], server_labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_policy_opens_only_the_serving_ports(overlay: str) -> None:
    policy = single(overlay, "NetworkPolicy")["spec"]
    for workload in ("Deployment", "Job"):
        assert selects(
            policy["podSelector"]["matchLabels"],
            single(overlay, workload)["spec"]["template"]["metadata"]["labels"],
        )
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"], "both directions default-deny"
    for rule in policy["ingress"]:
        assert rule["from"], "an ingress rule without `from` admits every source"
        assert {(p["port"], p["protocol"]) for p in rule["ports"]} == {("http", "TCP"), ("grpc", "TCP")}
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    needed = {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP"), (443, "TCP")}
    assert needed | ({(9000, "TCP")} if overlay == "dev" else set()) == egress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_init_job_migrates_with_the_server_s_image_and_settings(overlay: str) -> None:
    job = single(overlay, "Job")["spec"]
    [container] = job["template"]["spec"]["containers"]
    # the first admin key is the operator's token from the Secret, never a token printed to the log
    assert container["args"] == ["init", "--admin-key-file", f"{ADMIN_KEY_DIR}/token"]
    [volume] = [v for v in job["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "modelport-admin" and "optional" not in volume["secret"]
    assert container["image"] == server(overlay)["image"]
    assert container["envFrom"] == server(overlay)["envFrom"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert (
        job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_overlay_s_namespace(overlay: str) -> None:
    namespaces = {doc["metadata"].get("namespace") for doc in rendered(overlay)}
    assert namespaces == {"modelport" if overlay == "prod" else "modelport-dev"}
