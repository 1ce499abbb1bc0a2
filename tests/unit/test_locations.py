"""Dataset locations (mlops/governance/locations.py): what a run may read, checked before
any read. Every refusal kind, with and without a teams file, and the allowed cases; the
pipeline's validate stage and run_stages refuse before reading or writing anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ConfigError, DatasetSpec, Settings
from mlops.data.loading import DataError, load_dataset
from mlops.governance.identities import parse_governance
from mlops.governance.locations import (
    LocationPolicy,
    LocationRefused,
    check_location,
    location_policy,
    platform_governance,
    team_folders,
)
from mlops.pipeline.stages import PipelineParams, run_stages, validate_stage
from tasks.retries import TRANSIENT

ALWAYS_REFUSED = {
    "http": ("http://169.254.169.254/latest/meta-data/x.csv", "http(s) URLs are never fetched"),
    "https": ("https://git.internal/team/x.parquet", "http(s) URLs are never fetched"),
    "upper-case http": ("HTTP://intranet/x.csv", "http(s) URLs are never fetched"),
    "file url": ("file:///etc/passwd.csv", "file:// URLs are refused"),
    "other scheme": ("gs://bucket/x.parquet", "the scheme gs: is not a dataset location"),
    "upper-case s3": ("S3://bucket/x.parquet", "the scheme S3: is not a dataset location"),
    "data url": ("data:text/csv,a,b", "the scheme data: is not a dataset location"),
    "chained": ("simplecache::s3://bucket/x.parquet", "it chains filesystems ('::')"),
    "nul byte": ("/tmp/x.csv\x00.parquet", "NUL byte or another control character"),
    "newline": ("/tmp/x\n.csv", "NUL byte or another control character"),
    "dot-dot": ("../secret.csv", "it contains '..'"),
    "inner dot-dot": ("/srv/data/../../etc/x.csv", "it contains '..'"),
    "s3 dot-dot": ("s3://lake/vision/../nlp/x.parquet", "it contains '..'"),
    "s3 dot": ("s3://lake/./x.parquet", "it contains '.' as an S3 key segment"),
    "no bucket": ("s3:///x.parquet", "an s3:// location needs a bucket"),
    "empty": ("", "it is empty"),
}


def governance(tmp_path: Path) -> dict:
    """A teams file's body: vision reads its bucket prefix and a shared folder; nlp the
    whole lake bucket and a folder relative to the data directory."""
    return {"platform": {"residency": {"regions": ["me-central-1"]}}, "teams": [
        {"name": "vision", "data": {"roots": ["s3://lake/vision/", str(tmp_path / "shared")]}},
        {"name": "nlp", "data": {"roots": ["s3://lake", "nlp-data"]}},
        {"name": "default"},
    ]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def policy(tmp_path: Path, settings: Settings, team: str | None) -> LocationPolicy:
    return location_policy(settings, parse_governance(governance(tmp_path)), team)


def refusal(path: str, policy: LocationPolicy) -> str:
    with pytest.raises(LocationRefused) as refused:
        check_location(path, policy)
    return str(refused.value)


@pytest.mark.parametrize("case", ALWAYS_REFUSED, ids=list(ALWAYS_REFUSED))
@pytest.mark.parametrize("governed", [False, True], ids=["no-teams-file", "teams-file"])
def test_always_refused(case: str, governed: bool, tmp_path: Path, settings: Settings) -> None:
    path, reason = ALWAYS_REFUSED[case]
    rules = policy(tmp_path, settings, "vision") if governed else LocationPolicy("default")
    message = refusal(path, rules)
    assert message.startswith(f"dataset location {path!r} refused for team "), message
    assert reason in message, message


def test_the_message_names_the_path_the_team_and_its_allowed_roots(
        tmp_path: Path, settings: Settings) -> None:
    message = refusal("/etc/hosts.csv", policy(tmp_path, settings, "vision"))
    data = settings.data_dir
    assert message == (
        "dataset location '/etc/hosts.csv' refused for team vision: it is under none of the "
        f"team's data roots; allowed: builtin://, s3://lake/vision/, {tmp_path}/shared/, "
        f"{data}/datasets-in/vision/"), message


def test_without_a_teams_file_any_local_path_or_bucket_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    anywhere = LocationPolicy("default")
    assert check_location("s3://any-bucket/x.parquet", anywhere) == "s3://any-bucket/x.parquet"
    assert check_location("builtin://wage_panel", anywhere) == "builtin://wage_panel"
    assert check_location(str(tmp_path / "x.csv"), anywhere) == str(tmp_path / "x.csv")
    # A relative path is read against the working directory, as pandas would; ~ is expanded.
    monkeypatch.chdir(tmp_path)
    assert check_location("data/x.csv", anywhere) == str(tmp_path / "data" / "x.csv")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert check_location("~/x.csv", anywhere) == str(tmp_path / "home" / "x.csv")


def test_a_team_reads_its_roots_its_own_folder_and_builtin(
        tmp_path: Path, settings: Settings) -> None:
    vision = policy(tmp_path, settings, "vision")
    own = settings.data_dir / "datasets-in" / "vision" / "x.csv"
    assert check_location(str(own), vision) == str(own)
    assert check_location(str(tmp_path / "shared" / "p"), vision) == str(tmp_path / "shared/p")
    assert check_location("s3://lake/vision/2026/x.parquet", vision).endswith("x.parquet")
    assert check_location("builtin://wage_panel", vision) == "builtin://wage_panel"
    # nlp's relative root is under the data directory; a team not in the file has its folder.
    nlp = policy(tmp_path, settings, "nlp")
    assert check_location(str(settings.data_dir / "nlp-data" / "x.csv"), nlp)
    ghost = policy(tmp_path, settings, "ghost")
    assert check_location(str(settings.data_dir / "datasets-in" / "ghost" / "x.csv"), ghost)
    assert "under team vision's data root" in refusal("s3://lake/vision/x.parquet", ghost)
    assert "none of the team's data roots" in refusal("s3://elsewhere/x.parquet", ghost)


@pytest.mark.parametrize(("team", "path", "reason"), [
    ("vision", "{data}/datasets-in/nlp/x.csv",
     "it lies under team nlp's data root {data}/datasets-in/nlp/"),
    ("vision", "s3://lake/visionary/x.parquet", "it lies under team nlp's data root s3://lake/"),
    ("nlp", "s3://lake/vision/x.parquet",
     "it lies under team vision's data root s3://lake/vision/"),
    ("nlp", "s3://lake/", "it holds team vision's data root s3://lake/vision/"),
    ("vision", "s3://other-bucket/x.parquet", "it is under none of the team's data roots"),
    ("vision", "{data}/datasets/x/abc.parquet", "it is under none of the team's data roots"),
], ids=["other-teams-folder", "prefix-is-not-a-folder", "nested-root-of-another",
        "folder-holding-another", "other-bucket", "the-platforms-own-files"])
def test_other_teams_data_and_locations_outside_the_roots_are_refused(
        team: str, path: str, reason: str, tmp_path: Path, settings: Settings) -> None:
    data = str(settings.data_dir)
    message = refusal(path.format(data=data), policy(tmp_path, settings, team))
    assert reason.format(data=data) in message, message


def test_a_symbolic_link_counts_where_it_leads(tmp_path: Path, settings: Settings) -> None:
    own = settings.data_dir / "datasets-in" / "vision"
    theirs = settings.data_dir / "datasets-in" / "nlp"
    own.mkdir(parents=True)
    theirs.mkdir(parents=True)
    (theirs / "secret.csv").write_text("a\n1\n")
    (own / "x.csv").symlink_to(theirs / "secret.csv")
    (own / "hosts.csv").symlink_to("/etc/hosts")
    vision = policy(tmp_path, settings, "vision")
    message = refusal(str(own / "x.csv"), vision)
    assert (f"it leads through a symbolic link to {theirs / 'secret.csv'}, which lies under "
            f"team nlp's data root {theirs}/") in message, message
    message = refusal(str(own / "hosts.csv"), vision)
    assert "link to /etc/hosts, which is under none of the team's data roots" in message
    # A link that stays inside the team's roots is fine, and is read where it leads.
    (own / "real.csv").write_text("a\n1\n")
    (own / "alias.csv").symlink_to(own / "real.csv")
    assert check_location(str(own / "alias.csv"), vision) == str(own / "real.csv")


def test_a_folder_of_partitions_with_a_link_out_is_refused(
        tmp_path: Path, settings: Settings) -> None:
    folder = settings.data_dir / "datasets-in" / "vision" / "panel"
    (folder / "2026").mkdir(parents=True)
    (folder / "part-0.parquet").write_bytes(b"")
    vision = policy(tmp_path, settings, "vision")
    assert check_location(str(folder), vision) == str(folder)
    (folder / "2026" / "part-1.parquet").symlink_to("/etc/hosts")
    message = refusal(str(folder), vision)
    assert (f"{folder / '2026' / 'part-1.parquet'} inside it links to /etc/hosts, which is "
            "under none of the team's data roots") in message, message


def test_a_stage_not_told_the_team_accepts_any_teams_root_only(
        tmp_path: Path, settings: Settings) -> None:
    anyone = policy(tmp_path, settings, None)
    assert check_location("s3://lake/vision/x.parquet", anyone)
    assert check_location(str(settings.data_dir / "datasets-in" / "nlp" / "x.csv"), anyone)
    message = refusal("/etc/hosts.csv", anyone)
    assert "refused for a run of any team: it is under no team's data root" in message


def test_on_production_the_teams_folder_is_in_the_bucket_too(tmp_path: Path) -> None:
    settings = Settings(profile="production", data_dir=tmp_path / "data", s3_bucket="platform")
    assert team_folders("vision", settings) == [
        f"{settings.data_dir}/datasets-in/vision/", "s3://platform/datasets-in/vision/"]
    vision = policy(tmp_path, settings, "vision")
    assert check_location("s3://platform/datasets-in/vision/x.parquet", vision)
    assert "team nlp's data root s3://platform/datasets-in/nlp/" in refusal(
        "s3://platform/datasets-in/nlp/x.parquet", vision)


def test_a_bad_root_in_the_teams_file_is_named(tmp_path: Path, settings: Settings) -> None:
    body = {"teams": [{"name": "vision", "data": {"roots": ["https://intranet/data/"]}}]}
    with pytest.raises(ConfigError, match=re.escape(
            "team vision's data root 'https://intranet/data/': http(s) URLs")):
        location_policy(settings, parse_governance(body), "vision")


def test_the_platform_reads_its_teams_file_from_the_settings(tmp_path: Path) -> None:
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump(governance(tmp_path)))
    assert platform_governance(Settings(data_dir=tmp_path)) is None
    loaded = platform_governance(Settings(data_dir=tmp_path, teams_file=teams))
    assert loaded is not None and loaded.team("vision").data.roots[0] == "s3://lake/vision/"


def _panel(path: Path) -> DatasetSpec:
    generate_panel(n_entities=10, n_periods=4, seed=1).to_csv(path, index=False)
    return synthetic_spec(str(path), name="panel")


def test_the_validate_stage_refuses_before_reading_or_writing(tmp_path: Path) -> None:
    """A valid file outside the team's roots: had it been read, validation would pass."""
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump(governance(tmp_path)))
    settings = Settings(data_dir=tmp_path / "data", teams_file=teams)
    spec = _panel(tmp_path / "elsewhere.csv")
    with pytest.raises(LocationRefused, match="under no team's data root") as refused:
        validate_stage(spec, settings)
    assert not isinstance(refused.value, TRANSIENT), "a refusal must not be retried"
    params = PipelineParams(spec=spec, team="vision", deploy=False)
    with pytest.raises(LocationRefused, match="refused for team vision: it is under none"):
        run_stages(params, settings)
    assert not settings.data_dir.exists(), list(settings.data_dir.rglob("*"))


def test_without_a_teams_file_a_url_to_a_valid_file_is_still_refused(tmp_path: Path) -> None:
    spec = _panel(tmp_path / "panel.csv")
    settings = Settings(data_dir=tmp_path / "data")
    url = spec.model_copy(update={"path": (tmp_path / "panel.csv").as_uri()})
    with pytest.raises(LocationRefused, match="file:// URLs are refused"):
        run_stages(PipelineParams(spec=url, deploy=False), settings)
    assert not settings.data_dir.exists()
    # The local path itself passes the check (and validates: the file is good).
    assert validate_stage(spec, settings).rows == 40


def test_the_loader_itself_reads_no_url_but_s3(tmp_path: Path) -> None:
    spec = _panel(tmp_path / "panel.csv")
    with pytest.raises(DataError, match="only local files and s3:// objects are read"):
        load_dataset(spec.model_copy(update={"path": (tmp_path / "panel.csv").as_uri()}))
