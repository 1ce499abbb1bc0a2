"""The utilisation report (the cpu pool, daily): each Grafana dashboard of infra/grafana
drawn from Prometheus' data, so a person sees the last day at a glance without Grafana."""

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from flows.worker_bound import end_with_worker
from mlops.config import Settings
from tasks.dashboard_report import render

DASHBOARDS = Path(__file__).resolve().parents[1] / "infra" / "grafana" / "dashboards"


class ReportParams(BaseModel):
    dashboards: list[str] = Field(default=["platform", "serving"],
                                  description="Dashboards of infra/grafana/dashboards.")
    hours: float = Field(default=24.0, gt=0, le=24 * 31, description="Hours drawn.")
    step_s: float = Field(default=60.0, gt=0, description="Seconds between points.")


@flow(name="utilisation-report", validate_parameters=True)
def utilisation_report(params: ReportParams | None = None) -> list[str]:
    """One PNG (and artifact) per dashboard; their paths."""
    end_with_worker()
    params, settings = params or ReportParams(), Settings()
    unknown = [name for name in params.dashboards if not (DASHBOARDS / f"{name}.json").exists()]
    if unknown:
        raise ValueError(f"no such dashboard in {DASHBOARDS}: {', '.join(unknown)}")
    return [str(render(DASHBOARDS / f"{name}.json", params.hours, params.step_s, settings))
            for name in params.dashboards]
