"""Data residency's policy logic (mlops/governance/residency.py) and the stages' checks on
local locations, which are in the platform's own region: no S3 server here (the bucket
regions are tests/e2e/test_residency.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.synthetic import synthetic_spec
from mlops.config import DatasetSpec, Settings
from mlops.data.snapshot import ValidatedData
from mlops.governance.identities import parse_governance
from mlops.governance.residency import (
    ResidencyPolicy,
    ResidencyRefused,
    check_residency,
    location_region,
    residency_policy,
)
from mlops.pipeline.run_checks import register_locations
from mlops.pipeline.stages import (
    PipelineParams,
    features_stage,
    register_stage,
    run_stages,
    validate_stage,
)

UAE = "me-central-1"
TEAMS = {"platform": {"residency": {"regions": [UAE, "eu-west-1"]}}, "teams": [
    {"name": "vision", "data": {"regions": [UAE]}}, {"name": "nlp"}]}


def spec(regions: list[str] | None = None, path: str = "builtin://wage_panel") -> DatasetSpec:
    return synthetic_spec(path, name="panel").model_copy(update={"regions": regions})


def test_the_layers_intersect_and_the_dataset_can_only_narrow() -> None:
    governance = parse_governance(TEAMS)
    policy = residency_policy(governance, "vision", spec())
    assert policy.regions == {UAE}
    assert str(policy) == f"platform: {UAE}, eu-west-1; team vision: {UAE}"
    # nlp has no regions of its own: the platform's apply; a dataset narrows them.
    assert residency_policy(governance, "nlp", spec()).regions == {UAE, "eu-west-1"}
    narrowed = residency_policy(governance, "nlp", spec(["eu-west-1"]))
    assert narrowed.regions == {"eu-west-1"}
    assert str(narrowed).endswith("; dataset panel: eu-west-1")
    # A dataset that names another region does not widen the policy: nothing is left.
    assert residency_policy(governance, "vision", spec(["us-east-1"])).regions == set()
    # A stage not told the team applies the platform's and the dataset's layers.
    assert residency_policy(governance, None, spec()).regions == {UAE, "eu-west-1"}


def test_without_any_layer_nothing_is_checked_or_looked_up() -> None:
    policy = residency_policy(None, "vision", spec())
    assert policy == ResidencyPolicy() and policy.regions is None
    # The bucket's region would need an endpoint that is not there: it is never asked.
    nowhere = Settings(profile="production", s3_endpoint_url="http://127.0.0.1:9")
    check_residency(policy, {"the dataset": "s3://lake/x.parquet"}, nowhere)
    # A dataset's own regions apply without a teams file too.
    assert residency_policy(None, None, spec([UAE])).regions == {UAE}


def test_local_locations_are_in_the_platforms_region(tmp_path: Path) -> None:
    assert location_region(str(tmp_path), Settings()) == "us-east-1"  # MLOPS_S3_REGION's
    assert location_region(str(tmp_path), Settings(s3_region="eu-west-1")) == "eu-west-1"
    assert location_region("builtin://wage_panel", Settings(region=UAE)) == UAE


def test_a_location_outside_the_policy_is_refused_naming_policy_location_and_region(
        tmp_path: Path) -> None:
    policy = residency_policy(parse_governance(TEAMS), "vision", spec())
    settings = Settings(data_dir=tmp_path, region="eu-west-1")
    with pytest.raises(ResidencyRefused) as refused:
        check_residency(policy, {"quarantine": str(tmp_path / "quarantine")}, settings)
    assert str(refused.value) == (
        f"data residency: quarantine {tmp_path}/quarantine is in region eu-west-1, outside "
        f"the residency policy (platform: {UAE}, eu-west-1; team vision: {UAE}) that allows "
        f"{UAE}; nothing was read or written")
    check_residency(policy, {"quarantine": str(tmp_path)}, Settings(region=UAE))


def test_layers_with_no_region_in_common_are_refused_naming_them() -> None:
    policy = residency_policy(parse_governance(TEAMS), "vision", spec(["us-east-1"]))
    with pytest.raises(ResidencyRefused) as refused:
        check_residency(policy, {"the dataset": "builtin://wage_panel"}, Settings(region=UAE))
    assert str(refused.value) == (
        f"data residency: the residency policy (platform: {UAE}, eu-west-1; team vision: "
        f"{UAE}; dataset panel: us-east-1) has no region in common, so no location can "
        "satisfy it; nothing was read or written")


def test_mlflows_artifact_root_is_the_tracking_servers_bucket_on_production(
        tmp_path: Path) -> None:
    local = Settings(data_dir=tmp_path)
    assert register_locations(local) == {"MLflow's artifact root": str(tmp_path / "mlartifacts")}
    production = Settings(profile="production", data_dir=tmp_path, s3_bucket="platform")
    assert register_locations(production) == {"MLflow's artifact root": "s3://platform/mlflow"}
    with_sqlite = production.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path}/m.db"})
    assert register_locations(with_sqlite)["MLflow's artifact root"].endswith("mlartifacts")


@pytest.fixture
def outside(tmp_path: Path) -> Settings:
    """A platform in us-east-1 whose teams file allows only me-central-1 for vision."""
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump({"teams": [{"name": "vision", "data": {"regions": [UAE]}}]}))
    return Settings(data_dir=tmp_path / "data", teams_file=teams, region="us-east-1")


def test_every_stage_that_writes_checks_before_writing(outside: Settings) -> None:
    dataset = spec([UAE])
    with pytest.raises(ResidencyRefused, match=r"the dataset builtin://wage_panel is in region "
                       r"us-east-1, outside the residency policy \(dataset panel: me-central-1\)"):
        validate_stage(dataset, outside)
    data = ValidatedData(snapshot_path="never-read.parquet", dataset_hash="0" * 64, rows=1,
                         report_path="r.json", docs_path=None)
    with pytest.raises(ResidencyRefused, match="Feast's offline source .* is in region us-east"):
        features_stage(data, dataset, outside)
    params = PipelineParams(spec=spec(), team="vision", deploy=False)
    with pytest.raises(ResidencyRefused, match=r"MLflow's artifact root .*mlartifacts is in "
                       r"region us-east-1, outside the residency policy \(team vision"):
        register_stage(params, data, *(None,) * 3, outside)  # refused before they are used
    assert not outside.data_dir.exists(), list(outside.data_dir.rglob("*"))


def test_the_run_checks_the_teams_policy_before_the_first_stage(outside: Settings) -> None:
    with pytest.raises(ResidencyRefused, match=r"\(team vision: me-central-1\)"):
        run_stages(PipelineParams(spec=spec(), team="vision", deploy=False), outside)
    assert not outside.data_dir.exists()
