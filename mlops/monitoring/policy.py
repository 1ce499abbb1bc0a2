"""Each team's drift policy, from the ``drift`` key of its entry in the teams file.

```yaml
teams:
  - name: default
    drift:
      feature_share: 0.5     # share of drifted features that is drift (Evidently's tests)
      prediction: true       # prediction drift alone is drift
      min_rows: 1000         # fewer sampled rows in the window: no verdict
      window_s: 86400        # the window of sampled requests compared with the reference
      cooldown_s: 86400      # at most one retraining per model in this time
      retrain: training-pipeline/default   # the deployment drift starts (none: report only)
```
A team without the key gets the defaults and no retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from mlops.config import ConfigError
from mlops.monitoring.drift import DriftThresholds

DRIFT_KEY = "drift"
# The Prefect event a drift check emits on the model's resource (``model_resource``); the
# team's retraining automation (infra.automations) reacts to it.
DRIFT_EVENT = "mlops.model.drift-detected"
RETRAINING_ROLE = "retraining"  # the related deployment the automation starts


def model_resource(model: str) -> str:
    return f"mlops.model.{model}"


class DriftPolicy(DriftThresholds):
    """What counts as drift for a team, the window it is judged on, and what it starts."""

    window_s: float = Field(86_400.0, gt=0)
    cooldown_s: float = Field(86_400.0, ge=10)  # Prefect's shortest trigger window
    retrain: str | None = Field(None, pattern=r"^[^/\s]+/[^/\s]+$",
                                description="<flow name>/<deployment name>")


def drift_policies(teams_file: str | Path) -> dict[str, DriftPolicy]:
    """Every team's policy (the defaults where a team sets none); ConfigError names the
    team and the key of every problem."""
    try:
        raw = yaml.safe_load(Path(teams_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"teams file {teams_file}: cannot read it: {exc}") from exc
    policies, problems = {}, []
    for body in raw.get("teams") or []:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue  # the teams parser reports malformed entries
        try:
            policies[body["name"]] = DriftPolicy.model_validate(body.get(DRIFT_KEY) or {})
        except ValidationError as exc:
            problems += [_problem(body["name"], error) for error in exc.errors()]
    if problems:
        raise ConfigError(f"teams file {teams_file}: " + "; ".join(problems))
    return policies


def drift_policy(teams_file: str | Path | None, team: str) -> DriftPolicy:
    """The team's policy; the defaults without a teams file or for a team not in it."""
    if teams_file is None:
        return DriftPolicy()
    return drift_policies(teams_file).get(team, DriftPolicy())


def _problem(team: str, error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"team {team}: {DRIFT_KEY}.{where}: {error['msg']}"
