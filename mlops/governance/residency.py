"""Data residency: the regions a run's data may live in, checked before it is read or written.

A policy has up to three layers: the platform's (``platform.residency`` in the teams file),
the team's (``data.regions``) and the dataset's (``regions`` in its spec). Each layer is a
constraint, so the allowed regions are their intersection: a spec, which whoever starts a
run writes, can narrow the policy but never widen it. No layer: nothing is checked and
nothing is looked up.

The region of an ``s3://`` location is its bucket's (``GetBucketLocation`` on the settings'
endpoint, cached per process); a local path (the data directory, quarantine, a local
dataset) and a ``builtin://`` dataset are in the platform's own region, ``MLOPS_REGION``
(default ``MLOPS_S3_REGION``), where its workers and their disks are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlops.config import ConfigError, DatasetSpec, Settings
from mlops.data import storage
from mlops.governance.identities import Governance

S3 = "s3://"
_REGIONS: dict[tuple[str | None, str], str] = {}  # (endpoint, bucket) -> region, per process
# GetBucketLocation's legacy answers: no constraint is us-east-1, "EU" is eu-west-1.
_LEGACY = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}


class ResidencyRefused(ConfigError):
    """A location outside the residency policy; nothing was read or written. Not retried."""


@dataclass(frozen=True)
class ResidencyPolicy:
    """The layers that constrain where data may live: (who, regions), e.g. ("platform",
    ("me-central-1",))."""

    layers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def regions(self) -> frozenset[str] | None:
        """The allowed regions (every layer's intersection); None when there is no layer."""
        if not self.layers:
            return None
        return frozenset.intersection(*(frozenset(regions) for _, regions in self.layers))

    def __str__(self) -> str:
        return "; ".join(f"{who}: {', '.join(regions)}" for who, regions in self.layers)


def residency_policy(governance: Governance | None, team: str | None,
                     spec: DatasetSpec) -> ResidencyPolicy:
    """The platform's, the team's (when known) and the dataset's layers."""
    layers: list[tuple[str, tuple[str, ...]]] = []
    if governance is not None and governance.residency is not None:
        layers.append(("platform", tuple(governance.residency.regions)))
    if governance is not None and team is not None:
        regions = governance.team(team).data.regions
        if regions:
            layers.append((f"team {team}", tuple(regions)))
    if spec.regions:
        layers.append((f"dataset {spec.name}", tuple(spec.regions)))
    return ResidencyPolicy(tuple(layers))


def check_residency(policy: ResidencyPolicy, locations: Mapping[str, str],
                    settings: Settings) -> None:
    """Refuse the first location (``what -> location``) outside the policy's regions, naming
    the policy, the location and its region; call it before anything is read or written."""
    allowed = policy.regions
    if allowed is None:
        return
    if not allowed:
        raise ResidencyRefused(f"data residency: the residency policy ({policy}) has no region "
                               "in common, so no location can satisfy it; nothing was read or "
                               "written")
    for what, location in locations.items():
        region = location_region(location, settings, policy)
        if region not in allowed:
            raise ResidencyRefused(
                f"data residency: {what} {location} is in region {region}, outside the "
                f"residency policy ({policy}) that allows {', '.join(sorted(allowed))}; "
                "nothing was read or written")


def platform_region(settings: Settings) -> str:
    """The region of the data directory and the workers' disks."""
    return settings.region or settings.s3_region


def location_region(location: str, settings: Settings,
                    policy: ResidencyPolicy | None = None) -> str:
    """An s3:// location's bucket region; the platform's region for anything local."""
    if not location.startswith(S3):
        return platform_region(settings)
    bucket = location[len(S3):].split("/", 1)[0]
    key = (settings.s3_endpoint_url, bucket)
    if key not in _REGIONS:
        _REGIONS[key] = _bucket_region(bucket, settings, location, policy)
    return _REGIONS[key]


def _bucket_region(bucket: str, settings: Settings, location: str,
                   policy: ResidencyPolicy | None) -> str:
    """GetBucketLocation; a bucket whose region cannot be read is refused, since the policy
    cannot be shown to hold (an endpoint that does not answer raises as an outage)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    options = storage.s3_options(settings)
    client = boto3.client("s3", endpoint_url=options.get("endpoint_url"),
                          config=Config(**options["config_kwargs"]), **options["client_kwargs"])
    try:
        constraint = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ResidencyRefused(
            f"data residency: the region of {location} cannot be read (GetBucketLocation on "
            f"bucket {bucket}: {code}), so the residency policy ({policy}) cannot be shown "
            "to hold; nothing was read or written") from None
    return _LEGACY.get(constraint, constraint)
