"""The Kubernetes manifests (deploy/kubernetes) validate offline against the Kubernetes schemas and run what
the image can run: workers, the HTTP ingest and the GPU exporter, against a Kafka and a ClickHouse elsewhere."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from spendstream.pricing import load_overrides
from spendstream.pricing.deployments import load_deployments
from spendstream.settings import Settings, ops_address

KUBE = Path(__file__).parent.parent / "deploy" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
RESOURCES = [(name, doc) for name in KUSTOMIZATION["resources"]
             for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]
# The oldest Kubernetes still commonly run, and the newest the bundled schemas know.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Read by `spendstream ingest` (issue 19 item 4, built beside this): its settings join Settings there.
INGEST_SETTINGS = {"SPENDSTREAM_INGEST_HOST", "SPENDSTREAM_INGEST_PORT", "SPENDSTREAM_INGEST_TOKEN_FILE"}


def _resource(kind: str, name: str) -> dict:
    (found,) = [doc for _, doc in RESOURCES if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def _container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


WORKLOADS = [doc for _, doc in RESOURCES if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]


def test_the_kustomization_lists_every_manifest() -> None:
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == files


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("resource", [doc for _, doc in RESOURCES],
                         ids=[f"{doc['kind']}/{doc['metadata']['name']}" for _, doc in RESOURCES])
def test_every_resource_validates_against_the_kubernetes_schemas(resource: dict, version: str) -> None:
    kubernetes_validate.validate(resource, version, strict=True)


def test_the_validation_catches_a_broken_manifest() -> None:
    worker = _resource("Deployment", "spendstream-worker")
    wrong_type = copy.deepcopy(worker)
    wrong_type["spec"]["replicas"] = "two"
    unknown_field = copy.deepcopy(worker)
    _container(unknown_field)["readinessprobe"] = _container(unknown_field).pop("readinessProbe")  # a typo
    for broken in (wrong_type, unknown_field):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_workers_are_probed_and_scraped_on_their_ops_address() -> None:
    worker = _resource("Deployment", "spendstream-worker")
    container = _container(worker)
    assert container["args"] == ["worker"]
    host, port = ops_address(_env(container)["SPENDSTREAM_OPS_ADDRESS"])
    assert host == "0.0.0.0"  # probes come from the kubelet, scrapes from Prometheus: not loopback
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # the start-up probe outlasts the worker's own wait for Kafka and ClickHouse
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > Settings().startup_timeout_s
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
    service = _resource("Service", "spendstream-worker-metrics")
    assert service["spec"]["selector"] == worker["spec"]["selector"]["matchLabels"]


def test_ingest_serves_where_its_service_points_and_reads_its_token_from_a_secret_file() -> None:
    ingest = _resource("Deployment", "spendstream-ingest")
    container = _container(ingest)
    assert container["args"][0] == "ingest"
    env = _env(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(env["SPENDSTREAM_INGEST_PORT"]) and env["SPENDSTREAM_INGEST_HOST"] == "0.0.0.0"
    service = _resource("Service", "spendstream-ingest")
    assert service["spec"]["selector"] == ingest["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    token_dir = env["SPENDSTREAM_INGEST_TOKEN_FILE"].rsplit("/", 1)[0]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == token_dir]
    (volume,) = [v for v in ingest["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "spendstream-secrets"


def test_the_gpu_exporter_runs_on_every_gpu_node() -> None:
    exporter = _resource("DaemonSet", "spendstream-gpu-exporter")
    args = _container(exporter)["args"]
    assert args[0] == "gpu-exporter" and "--deployment" in args and "--url" in args
    assert "--no-nvml" in args  # the image carries no NVIDIA library; dcgm-exporter reads the GPUs
    assert exporter["spec"]["template"]["spec"]["nodeSelector"]


def test_nothing_here_runs_a_broker_or_the_embedded_store() -> None:
    env_map = _resource("ConfigMap", "spendstream-env")["data"]
    assert env_map["SPENDSTREAM_KAFKA_BOOTSTRAP"]  # unset would start the local broker, which the image lacks
    for workload in WORKLOADS:
        container = _container(workload)
        assert container["args"][0] in ("worker", "ingest", "gpu-exporter"), workload["metadata"]["name"]
        assert {"configMapRef": {"name": "spendstream-env"}} in container["envFrom"]
        assert "SPENDSTREAM_STORE_URL" not in _env(container)
    # a worker without a ClickHouse URL would open embedded chdb, which the image does not carry
    assert "SPENDSTREAM_CLICKHOUSE_URL" in _env(_container(_resource("Deployment", "spendstream-worker")))


def test_every_setting_named_is_one_spendstream_reads() -> None:
    known = {f"SPENDSTREAM_{name.upper()}" for name in Settings.model_fields} | INGEST_SETTINGS
    named = set(_resource("ConfigMap", "spendstream-env")["data"])
    named |= {name for w in WORKLOADS for name in _env(_container(w)) if name.startswith("SPENDSTREAM_")}
    assert named <= known, named - known


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w["metadata"]["name"] for w in WORKLOADS])
def test_every_pod_runs_unprivileged(workload: dict) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    container = _container(workload)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "limits" in container["resources"]


def test_the_mounted_config_files_load(tmp_path: Path) -> None:
    files = _resource("ConfigMap", "spendstream-files")["data"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    load_overrides(tmp_path / "overrides.yaml")
    load_deployments(tmp_path / "deployments.yaml")
    worker_env = _env(_container(_resource("Deployment", "spendstream-worker")))
    mounted = {worker_env[f"SPENDSTREAM_{key}_FILE"].rsplit("/", 1)[1] for key in ("OVERRIDES", "DEPLOYMENTS")}
    assert mounted <= files.keys()
