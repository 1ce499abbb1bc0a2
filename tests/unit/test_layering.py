"""The layering: import-linter's contracts in pyproject.toml ([tool.importlinter]).

The real ``lint-imports`` keeps every contract on this tree; and each leak the contracts
exist to stop, injected into a copy of the packages, breaks the contract that names it.
Each run is a subprocess in its own folder, without import-linter's cache (``--no-cache``),
so a copy is never judged by a graph of the real tree.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mlops", "tasks", "flows", "infra", "feature_repo", "benchmarks")
CONTRACTS = {contract["id"]: contract["name"] for contract in tomllib.loads(
    (ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def lint_imports(root: Path) -> tuple[int, str]:
    """Run the console script that `make lint` runs, from ``root``, on ``root``'s packages."""
    script = Path(sys.executable).with_name("lint-imports")
    entry_point = "from importlinter.cli import lint_imports_command as main; main()"
    command = [str(script)] if script.exists() else [sys.executable, "-c", entry_point]
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "1000", "NO_COLOR": "1"}
    done = subprocess.run([*command, "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    # One line per contract; any wrapping is undone by collapsing the whitespace.
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def verdicts(output: str) -> dict[str, str]:
    """Contract id -> "KEPT" or "BROKEN", as lint-imports reported it."""
    found = {}
    for contract_id, name in CONTRACTS.items():
        verdict = re.search(re.escape(name) + r" (KEPT|BROKEN)\b", output)
        assert verdict, f"no verdict for {name!r} in:\n{output}"
        found[contract_id] = verdict.group(1)
    return found


def copy_packages(destination: Path) -> None:
    """The six packages' .py files and pyproject.toml: all that lint-imports reads."""
    def not_python(folder: str, names: list[str]) -> list[str]:
        return [name for name in names if name == "__pycache__"
                or (not name.endswith(".py") and not (Path(folder) / name).is_dir())]

    for package in PACKAGES:
        shutil.copytree(ROOT / package, destination / package, ignore=not_python)
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")


def test_the_tree_keeps_every_contract() -> None:
    returncode, output = lint_imports(ROOT)
    assert returncode == 0, output
    assert set(verdicts(output).values()) == {"KEPT"}, output
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output, output


def test_a_copy_of_the_packages_keeps_every_contract(tmp_path: Path) -> None:
    """The control for the leaks below: the copy alone breaks nothing."""
    copy_packages(tmp_path)
    returncode, output = lint_imports(tmp_path)
    assert returncode == 0, output
    assert set(verdicts(output).values()) == {"KEPT"}, output


# (contract that must break, {file: line appended to it (a new file if absent)}).
LEAKS = {
    # The leaks of the issue.
    "core-reaches-flows": ("core-no-prefect", {
        "mlops/pipeline/stages.py": "import flows.training_pipeline"}),
    "core-imports-prefect": ("core-no-prefect", {
        "mlops/data/validation.py": "from prefect import task"}),
    "feature-repo-imports-mlops": ("feature-repo-standalone", {
        "feature_repo/entities.py": "from mlops.config import DatasetSpec"}),
    "controller-imports-provision-cli": ("infra-cli-not-imported", {
        "infra/fairshare_tick.py": "import infra.provision"}),
    "preparation-imports-validation": ("partitioned-layers", {
        "mlops/partitioned/preparation.py":
            "from mlops.partitioned.validation import validate_partitions"}),
    "model-manager-imports-mlflow": ("mlflow-only-registry", {
        "mlops/serving/model_manager.py": "import mlflow"}),
    "stage-imports-dask": ("dask-only-partitioned", {
        "mlops/pipeline/stages.py": "import distributed"}),
    "task-imports-flows": ("tasks-no-flows", {"tasks/training.py": "import flows"}),
    "sibling-private-module": ("private-modules", {
        "mlops/data/_secret.py": "TOKEN = 'not for training'",
        "mlops/training/train.py": "from mlops.data._secret import TOKEN"}),
    "core-imports-matplotlib": ("matplotlib-only-report", {
        "mlops/fairshare/policy.py": "import matplotlib"}),
    "core-imports-pytest": ("no-dev-dependencies", {
        "mlops/fairshare/policy.py": "import pytest"}),
    "cycle-between-mlops-packages": ("mlops-layers", {
        "mlops/registry.py": "from mlops.serving.deploy import stop_service"}),
    "gateway-imports-casbin": ("casbin-only-policy", {
        "infra/gateway/routes.py": "import casbin"}),
    "serving-imports-evidently": ("evidently-only-monitoring", {
        "mlops/serving/metrics.py": "import evidently"}),
    "task-imports-feast": ("feast-only-features", {
        "tasks/features.py": "from feast import FeatureStore"}),
    # What each package's docstring allows it to import.
    "task-imports-infra": ("top-level-layers", {"tasks/report.py": "import infra.prefect_api"}),
    "data-imports-registry": ("data-imports", {
        "mlops/data/storage.py": "from mlops.registry import CHAMPION"}),
    "governance-imports-registry": ("governance-imports", {
        "mlops/governance/identities.py": "from mlops.registry import CHAMPION"}),
    "fairshare-imports-atomic-files": ("fairshare-imports", {
        "mlops/fairshare/teams.py": "from mlops.atomic_files import write_atomic"}),
    "features-imports-loading": ("features-imports", {
        "mlops/features/store.py": "from mlops.data.loading import load_dataset"}),
    "partitioned-imports-processes": ("partitioned-imports", {
        "mlops/partitioned/cluster.py": "import mlops.processes"}),
    "training-imports-snapshot": ("training-imports", {
        "mlops/training/train.py": "from mlops.data.snapshot import ValidatedData"}),
    "serving-reaches-features-stage": ("serving-imports", {
        "mlops/serving/client.py": "from mlops.features.training_set import prepare_features"}),
    "serving-imports-feature-store": ("serving-direct-imports", {
        "mlops/serving/server.py": "import mlops.features.store"}),
    "serving-imports-torch": ("serving-image", {"mlops/serving/predictor.py": "import torch"}),
}


def test_every_contract_has_a_leak_that_breaks_it() -> None:
    assert {contract for contract, _ in LEAKS.values()} == set(CONTRACTS)


@pytest.mark.parametrize("leak", LEAKS)
def test_a_leak_breaks_its_contract(leak: str, tmp_path: Path) -> None:
    contract, edits = LEAKS[leak]
    copy_packages(tmp_path)
    for relative, line in edits.items():
        path = tmp_path / relative
        text = path.read_text() if path.exists() else ""
        path.write_text(f"{text}\n{line}\n")
    returncode, output = lint_imports(tmp_path)
    assert returncode != 0, output
    assert verdicts(output)[contract] == "BROKEN", output
