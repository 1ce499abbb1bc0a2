"""The Kubernetes work pools' base job templates, checked statically.

Nothing here talks to a cluster or to Docker: each template is rendered with Prefect's
own templating (infra.job_templates.render_job) and the resulting Job manifest is
validated offline, strictly (unknown fields refused), against the Kubernetes 1.33 Job
schema that kubernetes-validate bundles. The templates are never applied.
"""

import copy
import json
from pathlib import Path

import kubernetes_validate
import pytest
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.templating import find_placeholders

from infra.job_templates import JobVariablesError, load_template, render_job

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
GPU = K8S / "gpu-base-job-template.json"
CPU = K8S / "cpu-base-job-template.json"
KUBERNETES_VERSION = "1.33"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
REGION_LABEL = "topology.kubernetes.io/region"



pytestmark = pytest.mark.usefixtures("no_network")


def validate(manifest: dict) -> str:
    return kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def required_regions(manifest: dict) -> list[str]:
    """The regions of the pod's one required node affinity term (and nothing else in it)."""
    required = pod(manifest)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = required["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert (expression["key"], expression["operator"]) == (REGION_LABEL, "In"), expression
    return expression["values"]


@pytest.mark.parametrize("path", [GPU, CPU], ids=["gpu", "cpu"])
def test_prefect_accepts_the_template_and_every_variable_is_used(path):
    template = load_template(path)
    assert validate_base_job_template(template) is template
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used == set(template["variables"]["properties"])


@pytest.mark.parametrize("path", [GPU, CPU], ids=["gpu", "cpu"])
def test_defaults_render_a_valid_job(path):
    manifest = render_job(path, {})
    assert validate(manifest) == KUBERNETES_VERSION
    assert manifest["kind"] == "Job" and manifest["metadata"]["generateName"] == "demo-"
    assert container(manifest)["args"] == ["prefect", "flow-run", "execute"]


def test_gpu_defaults_request_one_gpu_on_a_gpu_node():
    manifest = render_job(GPU, {})
    resources = container(manifest)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert pod(manifest)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod(manifest)["tolerations"] == [GPU_TOLERATION]


def test_gpu_overrides_render_a_valid_job_with_them():
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    manifest = render_job(
        GPU,
        {"gpu_count": 2, "node_selector": selector, "memory_limit": "64Gi", "env": {"A": "1"}},
        flow_run_name="Train Wage Panel",
    )
    assert validate(manifest) == KUBERNETES_VERSION
    assert container(manifest)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container(manifest)["resources"]["limits"]["memory"] == "64Gi"
    # Prefect replaces a job variable as a whole: the default selector is not merged in.
    assert pod(manifest)["nodeSelector"] == selector
    assert pod(manifest)["tolerations"] == [GPU_TOLERATION]
    assert container(manifest)["env"] == [{"name": "A", "value": "1"}]
    assert manifest["metadata"]["generateName"] == "train-wage-panel-"


def test_cpu_job_requests_no_gpu_and_tolerates_no_gpu_taint():
    manifest = render_job(CPU, {"cpu_request": "500m", "memory_limit": "4Gi"})
    assert validate(manifest) == KUBERNETES_VERSION
    resources = container(manifest)["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "2Gi"}
    assert resources["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in json.dumps(manifest)
    assert pod(manifest)["tolerations"] == []


@pytest.mark.parametrize(
    ("path", "values", "named"),
    [
        (GPU, {"gpu_count": -1}, "gpu_count"),
        (GPU, {"gpu_count": "2"}, "gpu_count"),
        (GPU, {"gpu_cuont": 2}, "gpu_cuont"),
        (GPU, {"memory_request": "16 GB"}, "memory_request"),
        (GPU, {"tolerations": [{"key": "x", "operator": "Maybe"}]}, "tolerations"),
        (CPU, {"gpu_count": 1}, "gpu_count"),
        (GPU, {"regions": []}, "regions"),
        (CPU, {"regions": "me-central-1"}, "regions"),
        (CPU, {"regions": ["me central 1"]}, "regions"),
        (GPU, {"regions": ["me-central-1", "me-central-1"]}, "regions"),
    ],
    ids=["negative", "string-count", "unknown", "bad-quantity", "bad-toleration", "gpu-on-cpu",
         "no-region", "region-not-a-list", "bad-region-label", "duplicate-region"],
)
def test_bad_job_variables_are_refused_by_name(path, values, named):
    with pytest.raises(JobVariablesError, match=named):
        render_job(path, values)


def test_zero_gpus_is_allowed():
    manifest = render_job(GPU, {"gpu_count": 0})
    assert container(manifest)["resources"]["limits"]["nvidia.com/gpu"] == 0
    validate(manifest)


def test_a_string_where_kubernetes_wants_an_integer_fails_validation():
    broken = copy.deepcopy(render_job(GPU, {}))
    broken["spec"]["backoffLimit"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="three"):
        validate(broken)


def test_upstream_placement_of_completions_in_the_pod_spec_fails_strict_validation():
    """Prefect's default template puts completions/parallelism in the PodSpec; ours moves them
    to the JobSpec, where Kubernetes defines them."""
    broken = copy.deepcopy(render_job(CPU, {}))
    pod(broken)["completions"] = broken["spec"].pop("completions")
    with pytest.raises(kubernetes_validate.ValidationError, match="completions"):
        validate(broken)


@pytest.mark.parametrize("path", [GPU, CPU], ids=["gpu", "cpu"])
def test_pods_are_pinned_to_the_default_region(path):
    """Data residency: without a regions job variable, the platform's default region."""
    manifest = render_job(path, {})
    assert required_regions(manifest) == ["us-east-1"]


@pytest.mark.parametrize("path", [GPU, CPU], ids=["gpu", "cpu"])
def test_pods_are_pinned_to_the_allowed_regions(path):
    regions = ["me-central-1", "me-south-1"]
    manifest = render_job(path, {"regions": regions, "node_selector": {"pool": "uae"}})
    assert validate(manifest) == KUBERNETES_VERSION
    assert required_regions(manifest) == regions
    # The affinity and the node selector both apply: a node must satisfy both.
    assert pod(manifest)["nodeSelector"] == {"pool": "uae"}


def test_a_region_affinity_whose_values_are_not_a_list_fails_strict_validation():
    """The variable's schema refuses such a value first (above); the rendered Job's
    affinity is checked by the Kubernetes schema as well."""
    broken = copy.deepcopy(render_job(CPU, {}))
    required = pod(broken)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    required["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = "me-central-1"
    with pytest.raises(kubernetes_validate.ValidationError, match="me-central-1"):
        validate(broken)
