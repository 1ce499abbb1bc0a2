"""Autoscaling manifests, checked offline: prometheus-adapter's rule and API registration
(infra/k8s/monitoring), the Prefect workers and their KEDA ScaledObjects (infra/k8s/workers).

Core kinds are validated strictly against the Kubernetes schema kubernetes-validate bundles
(as test_serving_manifests.py does); ScaledObjects against KEDA's own CRD schema, vendored
in tests/unit/schemas, with unknown fields refused as the API server's strict field
validation refuses them. The queries run in promtool's rule unit tests on sample series,
and the metric names they use are the ones the service and the controller export.
"""

import copy
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infra.worker_settings import WORKER_QUERY_S
from mlops.fairshare.gauges import FairShareGauges
from mlops.fairshare.teams import load_teams
from mlops.serving.metrics import ServiceMetrics
from tests.conftest import promtool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
KEDA_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"
KUBERNETES_VERSION = "1.33"  # as in test_serving_manifests.py
CORE_FILES = ["monitoring/prometheus-adapter.yaml", "workers/rbac.yaml",
              "workers/worker-gpu.yaml", "workers/worker-cpu.yaml"]
QUERY = re.compile(r'sum\((?P<metric>\w+)\{pool="(?P<pool>\w+)"\}\)')


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def one(name: str, kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents(name) if d["kind"] == kind]
    return found


def adapter_rule() -> dict[str, Any]:
    config = yaml.safe_load(one("monitoring/prometheus-adapter.yaml", "ConfigMap")["data"][
        "config.yaml"])
    (rule,) = config["rules"]
    return rule


def scaled_objects() -> dict[str, dict[str, Any]]:
    """By the pool their query reads."""
    found = {}
    for scaled in documents("workers/keda-scaledobjects.yaml"):
        (trigger,) = scaled["spec"]["triggers"]
        found[QUERY.fullmatch(trigger["metadata"]["query"])["pool"]] = scaled
    return found


def exported(registry: Any) -> dict[str, Any]:
    """The families a registry exposes, parsed from its exposition text."""
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def strict(schema: Any) -> Any:
    """A CRD's schema as strict field validation applies it: an object with declared
    properties refuses any other, unless it preserves unknown fields."""
    schema = copy.deepcopy(schema)
    nodes = [schema]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get(
                    "x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return schema


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"]) == (
        "keda.sh", "v1alpha1", "ScaledObject")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))



@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("name", CORE_FILES)
def test_core_manifests_are_valid_kubernetes(name):
    for manifest in documents(name):
        assert kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.usefixtures("no_network")
def test_scaled_objects_are_valid_against_kedas_crd(keda_validator):
    scaled = documents("workers/keda-scaledobjects.yaml")
    assert len(scaled) == 2
    for manifest in scaled:
        assert (manifest["apiVersion"], manifest["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
        errors = [e.message for e in keda_validator.iter_errors(manifest)]
        assert not errors, errors


@pytest.mark.parametrize(("path", "value", "complaint"), [
    (("spec", "minReplicas"), 1, "minReplicas"),  # the HPA's name, not KEDA's
    (("spec", "triggers", 0, "metadata", "threshold"), 4, "not of type 'string'"),
    (("spec", "triggers"), [], "should be non-empty"),
])
def test_the_crd_validation_refuses_mistakes(keda_validator, path, value, complaint):
    broken = copy.deepcopy(documents("workers/keda-scaledobjects.yaml")[0])
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    messages = " ".join(e.message for e in keda_validator.iter_errors(broken))
    assert complaint in messages


def test_the_adapter_exposes_the_metric_the_hpa_reads_and_the_service_exports():
    rule = adapter_rule()
    hpa = yaml.safe_load((K8S / "serving" / "hpa.yaml").read_text())
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert rule["name"]["as"] == name
    assert re.fullmatch(rule["name"]["matches"], name)
    assert rule["seriesQuery"].startswith(name + "{")
    assert exported(ServiceMetrics().registry)[name].type == "gauge"
    overrides = rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_the_api_service_registers_the_adapter_as_the_custom_metrics_api():
    service = one("monitoring/prometheus-adapter.yaml", "APIService")
    spec = service["spec"]
    # The API server requires the name <version>.<group>; the HPA's Pods metrics come
    # from custom.metrics.k8s.io.
    assert service["metadata"]["name"] == f"{spec['version']}.{spec['group']}"
    assert (spec["group"], spec["version"]) == ("custom.metrics.k8s.io", "v1beta1")
    configmap = one("monitoring/prometheus-adapter.yaml", "ConfigMap")
    assert spec["service"]["namespace"] == configmap["metadata"]["namespace"] == "monitoring"
    assert spec["service"]["name"] == "prometheus-adapter"


def test_keda_queries_read_a_series_the_controller_exports():
    gauges = FairShareGauges()
    gauges.queued.labels(pool="gpu", team="vision").set(3)
    family = exported(gauges.registry)
    for scaled in scaled_objects().values():
        (trigger,) = scaled["spec"]["triggers"]
        match = QUERY.fullmatch(trigger["metadata"]["query"])
        assert match["metric"] == "mlops_fairshare_queued"
        assert "pool" in family[match["metric"]].samples[0].labels
        assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0



def query_test(series: dict[str, float], expr: str, expected: dict[str, float]
               ) -> dict[str, Any]:
    return {"interval": "1m",
            "input_series": [{"series": s, "values": str(v)} for s, v in series.items()],
            "promql_expr_test": [{"expr": expr, "eval_time": "0m", "exp_samples": [
                {"labels": labels, "value": value} for labels, value in expected.items()]}]}


def test_the_queries_give_per_pod_and_per_pool_values_in_promtool(tmp_path):
    """The adapter's metricsQuery as the adapter renders it for the pods of the mlops
    namespace, and each KEDA query, on series as Prometheus scrapes them."""
    rule = adapter_rule()
    pods = 'namespace="mlops",pod=~"inference-a|inference-b"'
    rendered = (rule["metricsQuery"].replace("<<.Series>>", "mlops_requests_in_flight")
                .replace("<<.LabelMatchers>>", pods).replace("<<.GroupBy>>", "pod"))
    in_flight = {f'mlops_requests_in_flight{{job="serving",namespace="{ns}",pod="{pod}"}}': v
                 for ns, pod, v in [("mlops", "inference-a", 3), ("mlops", "inference-b", 9),
                                    ("other", "inference-a", 50)]}
    tests = [query_test(in_flight, rendered, {'{pod="inference-a"}': 3,
                                              '{pod="inference-b"}': 9})]
    queued = {f'mlops_fairshare_queued{{job="fairshare-controller",pool="{pool}",'
              f'team="{team}"}}': v
              for pool, team, v in [("gpu", "vision", 3), ("gpu", "nlp", 2), ("cpu", "nlp", 7)]}
    sums = {"gpu": 5, "cpu": 7}
    for pool, scaled in scaled_objects().items():
        (trigger,) = scaled["spec"]["triggers"]
        tests.append(query_test(queued, trigger["metadata"]["query"], {"{}": sums[pool]}))
    path = tmp_path / "queries_test.yml"
    path.write_text(yaml.safe_dump({"evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_pool_has_a_worker_and_a_scaled_object_within_its_capacity():
    pools = load_teams(ROOT / "infra" / "teams.yaml").pools
    scaled = scaled_objects()
    assert set(scaled) == set(pools)
    for pool, config in pools.items():
        deployment = one(f"workers/worker-{pool}.yaml", "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:3] == ["prefect", "worker", "start"]
        assert args[args.index("--pool") + 1] == pool
        assert args[args.index("--type") + 1] == "kubernetes"
        assert "--no-create-pool-if-not-found" in args  # pools are provisioned with templates
        spec = scaled[pool]["spec"]
        target = spec["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert scaled[pool]["metadata"]["namespace"] == deployment["metadata"]["namespace"]
        assert 1 <= spec["minReplicaCount"] == deployment["spec"]["replicas"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= config.capacity
        assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
            "stabilizationWindowSeconds"] >= spec["pollingInterval"]
    addresses = {s["spec"]["triggers"][0]["metadata"]["serverAddress"] for s in scaled.values()}
    assert len(addresses) == 1
    assert re.fullmatch(r"http://[a-z0-9-]+\.[a-z0-9-]+\.svc(\.cluster\.local)?:\d+",
                        addresses.pop())


@pytest.mark.parametrize("pool", ["gpu", "cpu"])
def test_worker_runs_prefects_pinned_version_with_the_platforms_settings(pool):
    deployment = one(f"workers/worker-{pool}.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d.split("==")[1] for d in project["dependencies"] if d.startswith("prefect==")]
    assert container["image"] == f"docker.io/prefecthq/prefect:{pin}-python3.11-kubernetes"
    env = {e["name"]: e for e in container["env"]}
    assert float(env["PREFECT_WORKER_QUERY_SECONDS"]["value"]) == WORKER_QUERY_S
    assert env["PREFECT_API_URL"]["value"].endswith("/api")
    assert "value" not in env["PREFECT_API_AUTH_STRING"]  # from a Secret, never a literal
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert "--with-healthcheck" in container["args"] and probe["path"] == "/health"
    assert ports[probe["port"]] == int(env["PREFECT_WORKER_WEBSERVER_PORT"]["value"])
    context = container["securityContext"]
    assert (context["runAsNonRoot"], context["readOnlyRootFilesystem"]) == (True, True)
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def test_workers_may_create_jobs_in_their_namespace():
    account = one("workers/rbac.yaml", "ServiceAccount")
    role, binding = one("workers/rbac.yaml", "Role"), one("workers/rbac.yaml", "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"]} in binding["subjects"]
    assert any("batch" in r["apiGroups"] and "jobs" in r["resources"] and "create" in r["verbs"]
               for r in role["rules"])
    for pool in ("gpu", "cpu"):
        deployment = one(f"workers/worker-{pool}.yaml", "Deployment")
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account[
            "metadata"]["name"]
        assert deployment["metadata"]["namespace"] == account["metadata"]["namespace"]
