"""The PNG report of dashboard panels (mlops.monitoring.report), fed by a fetch that answers
as Prometheus's query_range does, over synthetic series: a real PNG with one subplot per
panel, Grafana's legends, "no data" where nothing came back, and a Markdown row per series.
"""

import json
import math
from pathlib import Path

import matplotlib
import pytest

from mlops.monitoring.report import (
    NO_DATA,
    Panel,
    Query,
    Series,
    draw_report,
    format_value,
    legend,
    panels_of,
    render_report,
    summary_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
START, STEP = 1_767_225_600.0, 60.0  # 2026-01-01 00:00 UTC
END = START + 3600
SERIES: dict[str, list[Series]] = {
    "pool:mlops_utilisation:ratio": [
        ({"pool": "gpu"}, [(START + i * STEP, 0.25 + 0.0125 * i) for i in range(61)]),
        ({"pool": "cpu"}, [(START + i * STEP, 0.5) for i in range(61)])],
    "mlops_training_memory_bytes": [
        ({"run": "r1", "model": "resnet"}, [(START + i * STEP, 2.0**30 * (1 + i / 60))
                                            for i in range(61)])],
    "rate(mlops_requests_total[5m])": [
        ({"route": "/v1/predict", "status": "200"},
         [(START + i * STEP, math.nan if i == 60 else 10.0 + i) for i in range(61)])],
}
PANELS = [
    Panel("Pool utilisation", (Query("pool:mlops_utilisation:ratio", "{{pool}} pool"),),
          "percentunit"),
    Panel("Training memory", (Query("mlops_training_memory_bytes", "{{ model }}/{{run}}"),),
          "bytes"),
    Panel("Requests", (Query("rate(mlops_requests_total[5m])", "{{route}} {{status}}"),),
          "reqps"),
    Panel("Queue wait", (Query("pool_team:mlops_queue_wait_seconds:max", "{{team}}"),), "s"),
]


def fetch(expr: str, start: float, end: float, step: float) -> list[Series]:
    """Synthetic query_range: the series stored for ``expr``, within [start, end]."""
    assert (start, end, step) == (START, END, STEP)
    return [(labels, [(time, value) for time, value in points if start <= time <= end])
            for labels, points in SERIES.get(expr, [])]


def test_the_png_is_written_whole(tmp_path: Path) -> None:
    out = render_report(PANELS, fetch, START, END, STEP, tmp_path / "report.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    assert [path.name for path in tmp_path.iterdir()] == ["report.png"]  # no temp file left
    image = pytest.importorskip("PIL.Image")
    with image.open(out) as png:
        png.verify()
        assert png.format == "PNG" and png.size[0] > 1000 and png.size[1] > 500


def test_one_subplot_per_panel_with_grafana_legends() -> None:
    figure = draw_report(PANELS, fetch, START, END, STEP)
    assert [axes.get_title() for axes in figure.axes] == [panel.title for panel in PANELS]
    legends = [[text.get_text() for text in box.get_texts()] if box else []
               for box in (axes.get_legend() for axes in figure.axes)]
    assert legends == [["gpu pool", "cpu pool"], ["resnet/r1"], ["/v1/predict 200"], []]


def test_an_empty_panel_says_no_data() -> None:
    figure = draw_report(PANELS, fetch, START, END, STEP)
    texts = [[text.get_text() for text in axes.texts] for axes in figure.axes]
    assert texts == [[], [], [], [NO_DATA]]
    assert not figure.axes[3].lines


def test_the_time_axis_spans_the_range_in_utc() -> None:
    """In UTC even where matplotlib's own default zone is another."""
    with matplotlib.rc_context({"timezone": "Asia/Tokyo"}):  # tick labels are formatted lazily
        axes = draw_report(PANELS[:1], fetch, START, END, STEP).axes[0]
        axes.figure.canvas.draw()
        ticks = [label.get_text() for label in axes.get_xticklabels()]
        offset = axes.xaxis.get_offset_text().get_text()
    low, high = axes.get_xlim()
    assert axes.get_xlabel() == "UTC"
    assert (high - low) * 86400 == pytest.approx(END - START)
    assert (ticks[0], ticks[-1], offset) == ("00:00", "01:00", "2026-Jan-01"), ticks


def test_the_markdown_has_a_row_per_series() -> None:
    lines = summary_markdown(PANELS, fetch, START, END, STEP).splitlines()
    assert lines[:2] == ["| Panel | Series | Last | Max |", "| --- | --- | --- | --- |"]
    assert lines[2:] == [
        "| Pool utilisation | gpu pool | 100.0% | 100.0% |",
        "| Pool utilisation | cpu pool | 50.0% | 50.0% |",
        "| Training memory | resnet/r1 | 2 GiB | 2 GiB |",
        "| Requests | /v1/predict 200 | 69 req/s | 69 req/s |",  # the NaN sample is skipped
        f"| Queue wait | {NO_DATA} | | |",
    ]


def test_legend_without_format_names_the_series() -> None:
    assert legend({"__name__": "up", "job": "node"}, "") == 'up{job="node"}'
    assert legend({"job": "node"}, "{{job}} {{missing}}!") == "node !"


def test_values_read_in_the_panel_unit() -> None:
    assert format_value(0.123, "percentunit") == "12.3%"
    assert format_value(3 * 2**20, "bytes") == "3 MiB"
    assert format_value(0.25, "s") == "0.25 s"
    assert format_value(math.inf, None) == "+Inf"


def test_panels_of_the_platform_dashboard_resolve_its_variables() -> None:
    dashboard = json.loads((ROOT / "infra/grafana/dashboards/platform.json").read_text())
    panels = panels_of(dashboard)
    titled = {panel.title: panel for panel in panels}
    assert len(panels) == len(dashboard["panels"])
    utilisation = titled["Pool utilisation"]
    assert utilisation.unit == "percentunit"
    assert utilisation.exprs == (Query('pool:mlops_utilisation:ratio{pool=~".*"}', "{{pool}}"),)
    chosen = {panel.title: panel for panel in panels_of(dashboard, {"pool": "gpu",
                                                                     "team": "vision"})}
    assert all("$" not in query.expr for panel in chosen.values() for query in panel.exprs)
    assert chosen["Team utilisation"].exprs[0].expr == (
        'pool_team:mlops_utilisation:ratio{pool=~"gpu",team=~"vision"}')


def test_panels_of_reads_rows_and_refuses_unknown_variables() -> None:
    dashboard = {"panels": [
        {"type": "row", "title": "collapsed", "panels": [
            {"type": "stat", "title": "inner", "targets": [{"expr": "up", "refId": "A"}]}]},
        {"type": "text", "title": "notes"},
        {"type": "timeseries", "title": "bad", "targets": [{"expr": "up{job=\"$job\"}"}]}]}
    with pytest.raises(ValueError, match=r"\$job"):
        panels_of(dashboard)
    assert panels_of(dashboard, {"job": "node"}) == [
        Panel("inner", (Query("up"),)), Panel("bad", (Query('up{job="node"}'),))]


def test_the_whole_platform_dashboard_renders(tmp_path: Path) -> None:
    panels = panels_of(json.loads((ROOT / "infra/grafana/dashboards/platform.json").read_text()))
    figure = draw_report(panels, lambda *_: [], START, END, STEP)
    assert len(figure.axes) == len(panels)
    assert all([text.get_text() for text in axes.texts] == [NO_DATA] for axes in figure.axes)
