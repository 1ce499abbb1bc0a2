"""Grafana dashboard panels rendered to one PNG, and a Markdown summary of their series,
without Grafana: what a scheduled report or a benchmark attaches, from Prometheus alone.

``panels_of`` reads the panels of a dashboard JSON (infra/grafana/dashboards); the series
come from a ``fetch(expr, start, end, step)`` that answers as a Prometheus query_range does
(labels and (unix time, value) points per series), so this module does no I/O beyond
writing the image. Times are unix seconds and are drawn in UTC. The figure is drawn on
matplotlib's Agg canvas directly, never through pyplot, so no display and no global figure
state is involved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib import dates, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlops.atomic_files import write_atomic

Labels = dict[str, str]
Points = list[tuple[float, float]]
Series = tuple[Labels, Points]
Fetch = Callable[[str, float, float, float], list[Series]]

NO_DATA = "no data"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LEGEND = re.compile(r"\{\{\s*([\w:]+)\s*\}\}")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class Query:
    """One target of a panel: its PromQL (variables resolved) and Grafana legend format."""

    expr: str
    legend_format: str = ""


@dataclass(frozen=True)
class Panel:
    """A panel as the report draws it: title, queries and Grafana unit (None: plain)."""

    title: str
    exprs: tuple[Query, ...]
    unit: str | None = None


def panels_of(dashboard: Mapping[str, Any],
              variables: Mapping[str, str] | None = None) -> list[Panel]:
    """The dashboard's panels that query something, in order (those in collapsed rows too).

    Template variables in queries take ``variables`` first, else the dashboard's own
    choice: a variable that includes All takes its all value (``.*`` unless it names one),
    as the dashboard opens; any other its current value.
    """
    values = {**_default_values(dashboard), **(variables or {})}
    panels = []
    for panel in _flatten(dashboard.get("panels", [])):
        queries = tuple(Query(_resolve(target["expr"], values), target.get("legendFormat", ""))
                        for target in panel.get("targets", []) if target.get("expr"))
        if queries:
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            panels.append(Panel(panel.get("title", ""), queries, unit))
    return panels


def _flatten(panels: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    flat: list[Mapping[str, Any]] = []
    for panel in panels:
        flat += _flatten(panel.get("panels", [])) if panel.get("type") == "row" else [panel]
    return flat


def _default_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        current = variable.get("current", {}).get("value")
        if variable.get("includeAll") and (not current or "$__all" in current):
            values[variable["name"]] = variable.get("allValue") or ".*"
        elif isinstance(current, str):
            values[variable["name"]] = current
        elif current:
            values[variable["name"]] = "|".join(current)
    return values


def _resolve(expr: str, values: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise ValueError(f"variable ${name} of {expr!r} has no value")
        return values[name]

    return _VARIABLE.sub(value, expr)


def legend(labels: Mapping[str, str], legend_format: str) -> str:
    """A series' name as Grafana shows it: ``{{label}}`` replaced by the label's value (empty
    when absent); without a format, the metric and its labels."""
    if legend_format:
        return _LEGEND.sub(lambda match: labels.get(match.group(1), ""), legend_format)
    pairs = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())
                      if key != "__name__")
    return f"{labels.get('__name__', '')}{{{pairs}}}"


def fetch_panel(panel: Panel, fetch: Fetch, start: float, end: float,
                step: float) -> list[tuple[str, Points]]:
    """Every series of a panel's queries, named by its query's legend format."""
    return [(legend(labels, query.legend_format), points) for query in panel.exprs
            for labels, points in fetch(query.expr, start, end, step)]


def draw_report(panels: Sequence[Panel], fetch: Fetch, start: float, end: float,
                step: float) -> Figure:
    """One figure, one subplot per panel (two columns), each with its own legend."""
    columns = 1 if len(panels) < 2 else 2
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(8 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    span = (_day_number(start), _day_number(end))
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        _draw_panel(axes, panel, fetch_panel(panel, fetch, start, end, step), span)
    return figure


def _day_number(time: float) -> float:
    """Unix seconds as matplotlib's date numbers (days), which the UTC locator reads."""
    return float(dates.date2num(datetime.fromtimestamp(time, UTC)))


def _draw_panel(axes: Axes, panel: Panel, series: list[tuple[str, Points]],
                span: tuple[float, float]) -> None:
    axes.set_title(panel.title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.set_xlim(*span)
    locator = dates.AutoDateLocator(tz=UTC)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=UTC))
    axes.set_xlabel("UTC", fontsize=8)
    axes.tick_params(labelsize=8)
    _format_axis(axes, panel.unit)
    drawn = [(name, points) for name, points in series if points]
    if not drawn:
        axes.text(0.5, 0.5, NO_DATA, transform=axes.transAxes, ha="center", va="center",
                  fontsize=12, color="grey")
        return
    for name, points in drawn:
        times = [_day_number(time) for time, _ in points]
        axes.plot(times, [value for _, value in points], label=name, linewidth=1.2)
    axes.legend(fontsize=7, loc="upper left", ncols=2 if len(drawn) > 6 else 1)


def _format_axis(axes: Axes, unit: str | None) -> None:
    if unit == "percentunit":
        axes.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    elif unit == "bytes":
        axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: _bytes(value)))
    elif unit and unit not in {"short", "none"}:
        axes.set_ylabel(unit, fontsize=8)


def render_report(panels: Sequence[Panel], fetch: Fetch, start: float, end: float,
                  step: float, out: Path) -> Path:
    """Draw the panels between ``start`` and ``end`` and write them to ``out`` as a PNG,
    atomically (a reader never sees half an image)."""
    figure = draw_report(panels, fetch, start, end, step)
    write_atomic(out, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return out


def summary_markdown(panels: Sequence[Panel], fetch: Fetch, start: float, end: float,
                     step: float) -> str:
    """A Markdown table with a row per series: its panel, name, last value and maximum over
    the range (NaN samples ignored); a panel without series gets one "no data" row."""
    rows = ["| Panel | Series | Last | Max |", "| --- | --- | --- | --- |"]
    for panel in panels:
        series = fetch_panel(panel, fetch, start, end, step)
        if not series:
            rows.append(f"| {_cell(panel.title)} | {NO_DATA} | | |")
        for name, points in series:
            values = [value for _, value in points if not math.isnan(value)]
            last, peak = ((format_value(values[-1], panel.unit),
                           format_value(max(values), panel.unit)) if values else ("", ""))
            rows.append(f"| {_cell(panel.title)} | {_cell(name)} | {last} | {peak} |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_value(value: float, unit: str | None) -> str:
    """A value as the panel's unit reads: percent, binary bytes, seconds, else 4 digits."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "bytes":
        return _bytes(value)
    suffix = {"s": " s", "h": " h", "reqps": " req/s"}.get(unit or "", "")
    return f"{value:.4g}{suffix}"


def _bytes(value: float) -> str:
    power = 0
    while abs(value) >= 1024 and power < len(_BINARY) - 1:
        value, power = value / 1024, power + 1
    return f"{value:.3g} {_BINARY[power]}"
