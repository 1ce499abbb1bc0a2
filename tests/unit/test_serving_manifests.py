"""The inference service's image and Kubernetes manifests, checked statically.

Docker does not run here and no cluster is reached: the manifests are validated offline,
strictly, against the Kubernetes schema kubernetes-validate bundles (the version
test_job_templates.py uses); the Dockerfile and requirements are parsed as text.
"""

import copy
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops.serving.metrics import ServiceMetrics
from mlops.serving.middleware import NOT_IN_FLIGHT

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s" / "serving"
IMAGE = ROOT / "infra" / "serving"
KUBERNETES_VERSION = "1.33"  # as in test_job_templates.py
# Not read from mlops.serving.app (being rewritten): tests/serving checks the app serves these.
ROUTES = ["/v2/health/live", "/v2/health/ready", "/metrics"]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY")
IN_FLIGHT = "mlops_requests_in_flight"


def load(name: str) -> dict:
    return yaml.safe_load((K8S / f"{name}.yaml").read_text())


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (IMAGE / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]



@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("name", ["deployment", "service", "hpa"])
def test_manifest_is_valid_kubernetes_in_the_mlops_namespace(name):
    manifest = load(name)
    assert kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert manifest["metadata"]["namespace"] == "mlops"
    assert manifest["metadata"]["labels"]["app"] == "mlops-inference"


@pytest.mark.usefixtures("no_network")
def test_strict_validation_refuses_a_misplaced_field():
    """The validation above can fail: a probe field one level too high is refused."""
    broken = copy.deepcopy(load("deployment"))
    container(broken)["path"] = "/v2/health/live"
    with pytest.raises(kubernetes_validate.ValidationError, match="path"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.usefixtures("no_network")
def test_strict_validation_refuses_a_misplaced_hpa_target():
    """The HPA's metric block can fail validation too: a target inside ``metric``."""
    broken = copy.deepcopy(load("hpa"))
    broken["spec"]["metrics"][0]["pods"]["metric"]["averageValue"] = "8"
    with pytest.raises(kubernetes_validate.ValidationError, match="averageValue"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_hpa_scales_on_the_in_flight_gauge_the_service_exports():
    """A Pods metric averaged per pod, named as the service's gauge (the adapter rule that
    serves it is checked in test_autoscaling_manifests.py)."""
    (metric,) = load("hpa")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == IN_FLIGHT
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue" and float(target["averageValue"]) >= 1
    text = generate_latest(ServiceMetrics().registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families[IN_FLIGHT].type == "gauge"
    assert [sample.value for sample in families[IN_FLIGHT].samples] == [0]


def test_hpa_scales_up_fast_and_down_slowly():
    """A new pod pays model download and warm-up: no pod dropped on a short lull."""
    behavior = load("hpa")["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300 and down["selectPolicy"] == "Min"
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])


def test_probes_and_scrapes_are_not_counted_as_load():
    """A probe or scrape counted in flight would read as load to the HPA."""
    deployment = load("deployment")
    paths = {container(deployment)[f"{k}Probe"]["httpGet"]["path"]
             for k in ("startup", "liveness", "readiness")}
    paths.add(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    assert paths <= NOT_IN_FLIGHT


def test_probes_and_scrape_target_use_a_declared_port_and_served_paths():
    """A probe on a path the app does not serve keeps every pod unready (or restarting)."""
    deployment = load("deployment")
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    probes = {k: container(deployment)[f"{k}Probe"]["httpGet"]
              for k in ("startup", "liveness", "readiness")}
    for probe in probes.values():
        assert probe["path"] in ROUTES
        assert probe["port"] in ports or probe["port"] in ports.values()
    assert probes["readiness"]["path"] == "/v2/health/ready"
    assert probes["liveness"]["path"] == probes["startup"]["path"] == "/v2/health/live"
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/scrape"] == "true" and scrape["prometheus.io/path"] in ROUTES
    assert int(scrape["prometheus.io/port"]) in ports.values()


def test_args_serve_the_champion_on_the_declared_port_within_the_cpu_limit():
    """args replace the image's CMD: without --host 0.0.0.0 the service binds 127.0.0.1.
    ONNX Runtime's threads plus the event loop's must fit the CPU limit."""
    spec = container(load("deployment"))
    args = spec["args"]
    assert re.fullmatch(r"models:/[a-z][a-z0-9-]*\.\w+@champion", option(args, "--model-uri"))
    assert option(args, "--host") == "0.0.0.0"
    assert int(option(args, "--port")) == spec["ports"][0]["containerPort"] == 8080
    assert int(option(args, "--threads")) + 1 <= int(spec["resources"]["limits"]["cpu"])


def test_selectors_target_port_and_hpa_reference_agree():
    deployment, service, hpa = load("deployment"), load("service"), load("hpa")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container(deployment)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]


def test_admin_token_and_credentials_come_from_secrets_never_literals():
    deployment = load("deployment")
    env = {e["name"]: e for e in container(deployment)["env"]}
    for name, entry in env.items():
        if SECRET_NAME.search(name) and not name.endswith("_FILE"):
            assert "value" not in entry, f"{name} has a literal value"
            assert "secretKeyRef" in entry["valueFrom"], name
    token_file = Path(env["MLOPS_ADMIN_TOKEN_FILE"]["value"])
    mount = next(m for m in container(deployment)["volumeMounts"]
                 if Path(m["mountPath"]) == token_file.parent)
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "mlops-inference-admin"
    assert {"key": "admin-token", "path": token_file.name} in secret["items"]


def test_pod_runs_non_root_read_only_with_a_writable_tmp():
    """The service downloads the model to a temporary directory: /tmp must be writable."""
    deployment = load("deployment")
    spec = container(deployment)
    context = spec["securityContext"]
    assert (context["runAsNonRoot"], context["runAsUser"]) == (True, 10001)
    assert (context["readOnlyRootFilesystem"], context["allowPrivilegeEscalation"]) == (True, False)
    assert (context["capabilities"]["drop"], context["seccompProfile"]["type"]) == (
        ["ALL"], "RuntimeDefault")
    tmp = next(m for m in spec["volumeMounts"] if m["mountPath"] == "/tmp")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[tmp["name"]]


def test_requirements_pin_exactly_what_pyproject_pins_and_no_training_stack():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        pins[canonicalize_name(requirement.name)] = exact[0] if exact else None
    text = (IMAGE / "requirements.txt").read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]
    names = set()
    for line in lines:
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{line!r} is not pinned with =="
        name = canonicalize_name(requirement.name)
        names.add(name)
        project_name = "mlflow" if name == "mlflow-skinny" else name
        assert pins.get(project_name) == specs[0].version, f"{line!r} differs from pyproject"
    assert not names & {"torch", "prefect", "mlflow"}
    assert {"onnxruntime", "fastapi", "uvicorn", "mlflow-skinny", "feast"} <= names
    assert any(Requirement(ln).extras == {"redis"} for ln in lines if ln.startswith("feast"))


def test_dockerfile_builds_a_non_root_python_311_slim_image_of_the_service():
    instructions = dockerfile()
    bases = [rest.split()[0] for op, rest in instructions if op == "FROM"]
    assert len(bases) >= 2 and all(re.fullmatch(r"python:3\.11[.\d]*-slim(-\w+)?", b)
                                   for b in bases)
    user = [rest for op, rest in instructions if op == "USER"][-1]
    assert int(user.split(":")[0]) == container(load("deployment"))["securityContext"][
        "runAsUser"] == 10001
    assert "8080" in [rest for op, rest in instructions if op == "EXPOSE"][-1].split()
    runtime = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    env = dict(w.split("=", 1) for op, r in runtime if op == "ENV" for w in shlex.split(r))
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    entrypoint = [json.loads(rest) for op, rest in instructions if op == "ENTRYPOINT"][-1]
    assert entrypoint == ["python", "-m", "mlops.serving"]
    healthcheck = [rest for op, rest in instructions if op == "HEALTHCHECK"][-1]
    assert "http://127.0.0.1:8080/v2/health/live" in healthcheck


def test_dockerfile_copies_only_files_that_exist_and_are_not_dockerignored():
    ignored = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith(("#", "!"))]
    assert {".git", ".venv", "data", "tests"} <= set(ignored)
    copies = [shlex.split(rest) for op, rest in dockerfile() if op == "COPY"]
    sources = [s for c in copies if not any(w.startswith("--from") for w in c)
               for s in [w for w in c if not w.startswith("--")][:-1]]
    assert "infra/serving/requirements.txt" in sources and "mlops" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        hits = [p for p in ignored
                if fnmatch.fnmatch(source, p) or fnmatch.fnmatch(source, p.removeprefix("**/"))]
        assert not hits, f"COPY {source} is excluded by .dockerignore {hits}"


def test_service_imports_neither_torch_nor_prefect():
    """The image has neither: importing either at service start-up would crash the pod."""
    code = ("import mlops.serving.server, sys; "
            "print(sorted(m for m in ('torch','prefect') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
