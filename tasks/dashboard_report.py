"""The utilisation report as a Prefect task: the Grafana dashboards' panels drawn from
Prometheus' data as a PNG file, and a Prefect artifact with the image and its table."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.config import Settings
from mlops.monitoring.prometheus import Prometheus
from mlops.monitoring.report import panels_of, render_report, summary_markdown
from tasks.retries import IO_RETRIES


@task(name="render-report", cache_policy=NONE, **IO_RETRIES)
def render(dashboard: Path, hours: float, step_s: float, settings: Settings) -> Path:
    """The dashboard's panels over the last ``hours`` as
    ``<data>/monitoring/reports/<dashboard>-<UTC time>.png``; the artifact shows it."""
    end = time.time()
    start = end - hours * 3600
    prometheus = Prometheus(settings.prometheus)

    @cache  # the image and the table read the same series once
    def fetch(expr: str, start: float, end: float, step: float) -> tuple:
        return tuple(prometheus.query_range(expr, start, end, step))

    panels = panels_of(json.loads(dashboard.read_text()))
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y%m%dT%H%M%SZ")
    out = settings.stage_dir("monitoring/reports") / f"{dashboard.stem}-{stamp}.png"
    render_report(panels, lambda *a: list(fetch(*a)), start, end, step_s, out)
    table = summary_markdown(panels, lambda *a: list(fetch(*a)), start, end, step_s)
    image = base64.b64encode(out.read_bytes()).decode()
    create_markdown_artifact(
        f"# {dashboard.stem}: the last {hours:g} h\n\nFile: `{out}`\n\n"
        f"![{dashboard.stem}](data:image/png;base64,{image})\n\n{table}",
        key=f"report-{dashboard.stem}", description=f"{dashboard.stem} dashboard, last "
                                                    f"{hours:g} h, from {settings.prometheus}")
    get_run_logger().info("report %s: %d panels, %s", dashboard.stem, len(panels), out)
    return out
