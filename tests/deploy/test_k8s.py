"""infra/k8s: every kustomization renders with the real kustomize, every object is
valid for the Kubernetes API, and the pods run what the code actually provides:
real `aimtp` commands, real settings, the right probe ports, enough drain time."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from aimtp.settings import (
    KafkaSettings,
    RelaySettings,
    ServerSettings,
    TriggerSettings,
    WatcherSettings,
)
from app.serve import GRACE_SECONDS as SERVER_GRACE_SECONDS
from tests.deploy.support import (
    ROOT,
    SECRET_SETTINGS,
    SETTINGS,
    aimtp_command_error,
    dockerfile_user,
    settings_errors,
)

K8S = ROOT / "infra" / "k8s"
KUSTOMIZE = ROOT / ".local" / "bin" / "kustomize"
#: The oldest Kubernetes minor the manifests must be valid for.
KUBERNETES_VERSION = "1.30"
SECRET_NAME = "aimtp-secrets"
MEMORY_LIMIT = 256 * 2**20  # the processes target <= 150 MB RSS
NAMESPACED_KINDS = {
    "ConfigMap",
    "CronJob",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "PodDisruptionBudget",
    "Service",
    "ServiceAccount",
}

Obj = dict[str, Any]
Config = Mapping[str, str]


@dataclass(frozen=True)
class Process:
    """What one container must run and get, as the code defines it."""

    argv: tuple[str, ...]
    secrets: frozenset[str]
    #: The port of its /healthz, /readyz and /metrics; None for run-to-completion pods.
    port: Callable[[Config], int] | None = None
    #: How long it drains after SIGTERM; None where nothing is drained.
    grace: Callable[[Config], float] | None = None


DB = "AIMTP_DATABASE_URL"
PROCESSES: dict[tuple[str, str], Process] = {
    ("Deployment", "server"): Process(
        ("server",),
        frozenset({DB, "AIMTP_API_TOKENS", "AIMTP_CONTROLLER_CALLBACK_TOKEN"}),
        port=lambda c: ServerSettings.from_env(c).http_port,
        grace=lambda c: float(SERVER_GRACE_SECONDS),
    ),
    ("Deployment", "relay"): Process(
        ("relay",),
        frozenset({DB}),
        port=lambda c: RelaySettings.from_env(c).relay_metrics_port,
        grace=lambda c: RelaySettings.from_env(c).relay_grace_seconds,
    ),
    ("Deployment", "trigger"): Process(
        ("trigger",),
        frozenset({DB, "AIMTP_CONTROLLER_TOKEN"}),
        port=lambda c: TriggerSettings.from_env(c).trigger_metrics_port,
        grace=lambda c: TriggerSettings.from_env(c).trigger_grace_seconds,
    ),
    ("CronJob", "watcher"): Process(
        ("watcher", "--once"),
        frozenset({DB, "AIMTP_CONTROLLER_TOKEN"}),
        grace=lambda c: WatcherSettings.from_env(c).watcher_grace_seconds,
    ),
    ("Deployment", "watcher"): Process(
        ("watcher",),
        frozenset({DB, "AIMTP_CONTROLLER_TOKEN"}),
        port=lambda c: WatcherSettings.from_env(c).watcher_metrics_port,
        grace=lambda c: WatcherSettings.from_env(c).watcher_grace_seconds,
    ),
    ("Job", "db-init"): Process(("db", "init"), frozenset({DB})),
    ("Job", "kafka-init"): Process(("kafka", "init"), frozenset()),
}
BASE_CONTAINERS = set(PROCESSES) - {("Deployment", "watcher")}


# --- rendering ----------------------------------------------------------------------


def kustomize_build(path: Path) -> list[Obj]:
    if not KUSTOMIZE.exists():
        pytest.fail(f"{KUSTOMIZE.relative_to(ROOT)} is missing: run `make kustomize`")
    result = subprocess.run(
        [str(KUSTOMIZE), "build", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"kustomize build {path}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def with_watcher_deployment(workdir: Path) -> Path:
    """The production overlay with the watcher-deployment component enabled, as
    docs/deployment.md says to do it; rendered from a copy so the tree stays as is."""
    tree = workdir / "k8s"
    shutil.copytree(K8S, tree)
    kustomization = tree / "overlays" / "production" / "kustomization.yaml"
    document = yaml.safe_load(kustomization.read_text())
    document["components"] = ["../../components/watcher-deployment"]
    kustomization.write_text(yaml.safe_dump(document))
    return kustomization.parent


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    overlays = sorted(p.parent for p in K8S.glob("overlays/*/kustomization.yaml"))
    assert overlays, "no overlays under infra/k8s/overlays"
    paths = {"base": K8S / "base"} | {f"overlays/{p.name}": p for p in overlays}
    paths["production+watcher-deployment"] = with_watcher_deployment(
        tmp_path_factory.mktemp("kustomize")
    )
    return {name: kustomize_build(path) for name, path in paths.items()}


RENDERS = ["base", "overlays/production", "production+watcher-deployment"]


def test_every_overlay_is_covered(renders: dict[str, list[Obj]]) -> None:
    assert set(renders) == set(RENDERS), "add the new overlay to RENDERS"


# --- reading the objects ------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    """A container with its pod template and the workload that runs it."""

    workload: Obj
    pod: Obj
    spec: Obj

    @property
    def key(self) -> tuple[str, str]:
        return (self.workload["kind"], self.spec["name"])

    @property
    def where(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}/{self.spec['name']}"


def pod_template(workload: Obj) -> Obj | None:
    kind = workload["kind"]
    if kind in {"Deployment", "Job"}:
        return cast(Obj, workload["spec"]["template"])
    if kind == "CronJob":
        return cast(Obj, workload["spec"]["jobTemplate"]["spec"]["template"])
    return None


def containers(objects: list[Obj]) -> Iterator[Container]:
    for workload in objects:
        template = pod_template(workload)
        if template is None:
            continue
        pod = template["spec"]
        for spec in pod.get("initContainers", []) + pod["containers"]:
            yield Container(workload, template, spec)


def find(objects: list[Obj], kind: str, name: str) -> Obj | None:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    return None


def config_of(objects: list[Obj]) -> dict[str, str]:
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert len(maps) == 1, "expected the one aimtp-config ConfigMap"
    data: dict[str, str] = maps[0]["data"]
    return data


def port_number(spec: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    assert numbers, f"{spec['name']} has no port named {port!r}"
    return int(numbers[0])


def quantity(text: str | int) -> float:
    """A Kubernetes quantity as a number (bytes, or cores for CPU)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match, f"not a quantity: {text!r}"
    suffixes = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20}
    suffixes |= {"Gi": 2**30}
    return float(match[1]) * suffixes[match[2]]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_every_object_is_valid_for_the_kubernetes_api(
    renders: dict[str, list[Obj]], name: str
) -> None:
    errors = []
    for obj in renders[name]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            # strict: unknown fields are errors, so a misspelt key cannot pass silently.
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_validation_catches_a_misspelt_field(renders: dict[str, list[Obj]]) -> None:
    server = find(renders["base"], "Deployment", "aimtp-server")
    assert server is not None
    broken = copy.deepcopy(server)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_base_runs_every_process_once(renders: dict[str, list[Obj]]) -> None:
    assert sorted(c.key for c in containers(renders["base"])) == sorted(BASE_CONTAINERS)


@pytest.mark.parametrize("name", RENDERS)
def test_containers_run_real_aimtp_commands(renders: dict[str, list[Obj]], name: str) -> None:
    for container in containers(renders[name]):
        process = PROCESSES.get(container.key)
        assert process is not None, f"{container.where}: unknown process, add it to PROCESSES"
        assert container.spec["command"] == ["aimtp"], container.where
        args = container.spec.get("args", [])
        assert aimtp_command_error(args) is None, f"{container.where}: {aimtp_command_error(args)}"
        assert tuple(args) == process.argv, container.where


@pytest.mark.parametrize("name", RENDERS)
def test_configuration_is_made_of_real_settings(renders: dict[str, list[Obj]], name: str) -> None:
    objects = renders[name]
    config = config_of(objects)
    assert not settings_errors(config), settings_errors(config)
    assert not SECRET_SETTINGS & set(config), "credentials belong in the Secret"
    # The loopback defaults would make every probe and every Service fail.
    assert config["AIMTP_HTTP_HOST"] == config["AIMTP_OPS_HOST"] == "0.0.0.0"  # noqa: S104
    config_names = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for container in containers(objects):
        for source in container.spec.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_names, container.where
        for env in container.spec.get("env", []):
            assert env["name"] in SETTINGS, f"{container.where}: {env['name']} is no setting"


@pytest.mark.parametrize("name", RENDERS)
def test_each_process_gets_exactly_its_credentials_from_the_secret(
    renders: dict[str, list[Obj]], name: str
) -> None:
    for container in containers(renders[name]):
        secrets = set()
        for env in container.spec.get("env", []):
            assert "value" not in env, f"{container.where}: {env['name']} set in plain text"
            ref = env["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (SECRET_NAME, env["name"]), container.where
            secrets.add(env["name"])
        assert secrets == PROCESSES[container.key].secrets, container.where


def test_no_secret_manifest_holds_data(renders: dict[str, list[Obj]]) -> None:
    # Every YAML file, not only the rendered ones: a stray file is committed all the same.
    documents = [
        doc
        for path in K8S.rglob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict)
    ]
    documents += [obj for objects in renders.values() for obj in objects]
    for doc in documents:
        if doc.get("kind") == "Secret":
            assert not doc.get("data"), doc["metadata"]
            assert not doc.get("stringData"), doc["metadata"]


@pytest.mark.parametrize("name", RENDERS)
def test_probes_services_and_scraping_use_each_process_port(
    renders: dict[str, list[Obj]], name: str
) -> None:
    objects = renders[name]
    config = config_of(objects)
    services = [o for o in objects if o["kind"] == "Service"]
    for container in containers(objects):
        process = PROCESSES[container.key]
        spec = container.spec
        if process.port is None:
            assert "livenessProbe" not in spec, container.where
            assert "readinessProbe" not in spec, container.where
            continue
        port = process.port(config)
        expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        if "startupProbe" in spec:
            expected["startupProbe"] = "/healthz"
        for probe, path in expected.items():
            get = spec[probe]["httpGet"]
            assert (get["path"], port_number(spec, get["port"])) == (path, port), (
                f"{container.where} {probe}"
            )
        annotations = container.pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", container.where
        assert annotations["prometheus.io/path"] == "/metrics", container.where
        assert int(annotations["prometheus.io/port"]) == port, container.where
        labels = container.pod["metadata"]["labels"]
        matching = [s for s in services if selects(s["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{container.where}: expected one Service"
        target = matching[0]["spec"]["ports"][0]["targetPort"]
        assert port_number(spec, target) == port, container.where


@pytest.mark.parametrize("name", RENDERS)
def test_the_server_service_exposes_the_grpc_port(renders: dict[str, list[Obj]], name: str) -> None:
    objects = renders[name]
    grpc_port = ServerSettings.from_env(config_of(objects)).grpc_port
    assert grpc_port > 0, "the gRPC API is switched off"
    [server] = [c for c in containers(objects) if c.key == ("Deployment", "server")]
    service = find(objects, "Service", "aimtp-server")
    assert service is not None
    [grpc] = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert port_number(server.spec, grpc["targetPort"]) == grpc_port
    assert grpc["appProtocol"] == "grpc"


@pytest.mark.parametrize("name", RENDERS)
def test_termination_grace_covers_each_drain(renders: dict[str, list[Obj]], name: str) -> None:
    config = config_of(renders[name])
    for container in containers(renders[name]):
        process = PROCESSES[container.key]
        if process.grace is None:
            continue
        pre_stop = container.spec.get("lifecycle", {}).get("preStop", {})
        sleep = pre_stop.get("exec", {}).get("command", ["sleep", "0"])
        assert sleep[0] == "sleep", f"{container.where}: preStop is not a sleep"
        needed = float(sleep[1]) + process.grace(config)
        granted = container.pod["spec"]["terminationGracePeriodSeconds"]
        # Kubernetes sends SIGKILL at the deadline: leave a margin over the drain.
        assert granted >= needed + 5, f"{container.where}: {granted} s < {needed} s + 5 s"


@pytest.mark.parametrize("name", RENDERS)
def test_pods_are_unprivileged_and_bounded(renders: dict[str, list[Obj]], name: str) -> None:
    uid = int(dockerfile_user().split(":")[0])
    for container in containers(renders[name]):
        pod = container.pod["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, container.where
        assert pod["securityContext"]["runAsUser"] == uid, "the Dockerfile's USER"
        assert pod["automountServiceAccountToken"] is False, container.where
        security = container.spec["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container.where
        assert security["allowPrivilegeEscalation"] is False, container.where
        assert security["capabilities"]["drop"] == ["ALL"], container.where
        resources = container.spec["resources"]
        for kind in ("cpu", "memory"):
            request = quantity(resources["requests"][kind])
            assert 0 < request <= quantity(resources["limits"][kind]), container.where
        assert quantity(resources["limits"]["memory"]) <= MEMORY_LIMIT, container.where


@pytest.mark.parametrize("name", RENDERS)
def test_the_watcher_never_runs_twice_at_once(renders: dict[str, list[Obj]], name: str) -> None:
    objects = renders[name]
    cronjob = find(objects, "CronJob", "aimtp-watcher")
    deployment = find(objects, "Deployment", "aimtp-watcher")
    assert (cronjob is None) != (deployment is None), "exactly one watcher form"
    if cronjob is not None:
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        # Without a deadline, one hung sweep would block every later one under Forbid.
        assert cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    if deployment is not None:
        # Leader-elected: the second replica is the standby.
        assert deployment["spec"]["replicas"] >= 2


@pytest.mark.parametrize("name", RENDERS)
def test_autoscalers_and_disruption_budgets_cover_the_deployments(
    renders: dict[str, list[Obj]], name: str
) -> None:
    objects = renders[name]
    config = config_of(objects)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    hpas = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert set(hpas) == {"aimtp-server", "aimtp-trigger"}
    for target, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # A replica count in the Deployment would undo the HPA's choice on every apply.
        assert "replicas" not in deployments[target]["spec"], target
    # One consumer per partition at most: more triggers would idle.
    partitions = KafkaSettings.from_env(config).kafka_partitions
    assert hpas["aimtp-trigger"]["spec"]["maxReplicas"] <= partitions
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for deployment_name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, f"{deployment_name}: expected one PodDisruptionBudget"


@pytest.mark.parametrize("name", RENDERS)
def test_the_relay_keeps_a_hot_standby(renders: dict[str, list[Obj]], name: str) -> None:
    relay = find(renders[name], "Deployment", "aimtp-relay")
    assert relay is not None
    assert relay["spec"]["replicas"] >= 2
    assert relay["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_init_job_applies_the_schema_before_creating_topics(
    renders: dict[str, list[Obj]],
) -> None:
    job = find(renders["base"], "Job", "aimtp-init")
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["db", "init"]]
    assert [c["args"] for c in pod["containers"]] == [["kafka", "init"]]


@pytest.mark.parametrize("name", ["overlays/production", "production+watcher-deployment"])
def test_production_pins_one_release_in_its_namespace(
    renders: dict[str, list[Obj]], name: str
) -> None:
    objects = renders[name]
    for obj in objects:
        assert obj["kind"] in NAMESPACED_KINDS, f"classify {obj['kind']}"
        assert obj["metadata"].get("namespace") == "aimtp", obj["metadata"]["name"]
    images = {c.spec["image"] for c in containers(objects)}
    assert len(images) == 1, f"every process must run the same release: {images}"
    (image,) = images
    # A tag or a digest after the repository (a registry host may carry a port).
    assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], image
    assert not image.endswith(":latest"), image


def test_production_is_larger_than_the_base(renders: dict[str, list[Obj]]) -> None:
    base, production = renders["base"], renders["overlays/production"]
    base_containers = {c.key: c for c in containers(base)}
    for container in containers(production):
        for kind in ("cpu", "memory"):
            before = quantity(base_containers[container.key].spec["resources"]["requests"][kind])
            assert quantity(container.spec["resources"]["requests"][kind]) >= before
    for kind, name, field in [
        ("Deployment", "aimtp-relay", "replicas"),
        ("HorizontalPodAutoscaler", "aimtp-server", "minReplicas"),
        ("HorizontalPodAutoscaler", "aimtp-trigger", "minReplicas"),
    ]:
        before_obj, after_obj = find(base, kind, name), find(production, kind, name)
        assert before_obj is not None
        assert after_obj is not None
        assert after_obj["spec"][field] > before_obj["spec"][field], name
