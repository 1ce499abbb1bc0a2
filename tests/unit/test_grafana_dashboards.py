"""The Grafana dashboards (infra/grafana/dashboards): well-formed dashboard JSON whose every
panel queries something, every query parses as PromQL (promtool), and every metric a query
names is one the platform exports: what the real registries render, the training runs'
names, the recording rules, and a few series of node exporter and Prometheus itself.
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops.fairshare.gauges import FairShareGauges
from mlops.fairshare.policy import RunningRun, TeamPolicy, plan_pool
from mlops.serving.metrics import ServiceMetrics
from tests.conftest import promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = {name: ROOT / "infra" / "grafana" / "dashboards" / f"{name}.json"
              for name in ("platform", "serving")}
# Series not exported by the platform's code: node exporter's, Prometheus's own.
ALLOW = {"up", "ALERTS", "node_cpu_seconds_total", "node_memory_MemAvailable_bytes",
         "node_memory_MemTotal_bytes", "node_filesystem_avail_bytes"}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10",
    "log2", "max_over_time", "min_over_time", "minute", "month", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
    # aggregation operators
    "avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile", "stddev",
    "stdvar", "sum", "topk",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "atan2", "inf", "nan"}
CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")


def load(name: str) -> dict[str, Any]:
    return json.loads(DASHBOARDS[name].read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves excluded)."""
    found = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, grouping clauses, variables, functions and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = CLAUSE.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for name, call in IDENTIFIER.findall(text):
        if call:
            assert name in FUNCTIONS, f"unknown PromQL function {name!r} in {expr!r}"
        elif name.lower() not in KEYWORDS:
            names.add(name)
    return names


def test_metric_names_sees_through_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{route=~"x|y",le!="1"}'
            '[5m]))) / on (job) group_left max by (job) (b:c:d offset 1h) > bool 1e3 '
            'and time() - c_seconds{pool=~"$pool"} unless ALERTS')
    assert metric_names(expr) == {"a_bucket", "b:c:d", "c_seconds", "ALERTS"}


def exported_names(text: str) -> set[str]:
    """Sample names a Prometheus scrape of ``text`` stores. A family without samples yet (a
    labelled counter no one has incremented) has them from its declared type; the parser
    gives a counter's family name without its ``_total``."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count"), "info": ("_info",)}
    names = set()
    for family in text_string_to_metric_families(text):
        if family.samples:
            names |= {sample.name for sample in family.samples}
        else:
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def fairshare_names() -> set[str]:
    gauges = FairShareGauges()
    teams = [TeamPolicy("vision", weight=2, quota=2), TeamPolicy("nlp", quota=1)]
    running = [RunningRun("r1", "vision", 1.0), RunningRun("r2", "nlp", 2.0)]
    queued = {"vision": {"normal": 2}}
    plan = plan_pool(4, teams, running, queued)
    gauges.update("gpu", teams, running, queued, plan, capacity=4, waited={"vision": 30.0})
    gauges.update_budgets({"vision": 10.0}, {"vision": 100.0, "nlp": None})
    return exported_names(generate_latest(gauges.registry).decode())


def serving_names() -> set[str]:
    metrics = ServiceMetrics()
    metrics.observe_request("/v2/models/{name}/infer", "POST", 200, 0.004, version="3")
    metrics.observe_request("/v2/models/{name}/infer", "POST", 503, 0.2, version="3")
    metrics.observe_grpc("ModelInfer", "OK", 0.003)
    metrics.observe_inference(8, 0.002)
    return exported_names(generate_latest(metrics.registry).decode())


def training_names() -> set[str]:
    from mlops.training.telemetry import METRIC_NAMES

    return set(METRIC_NAMES)


def recorded_names() -> set[str]:
    groups = yaml.safe_load((ROOT / "infra/prometheus/rules/recording.yml").read_text())
    return {rule["record"] for group in groups["groups"] for rule in group["rules"]}


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_is_grafana_json(name: str) -> None:
    dashboard = load(name)
    assert dashboard["schemaVersion"] == 39 and dashboard["uid"] and dashboard["title"]
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_has_a_title_and_queries(name: str) -> None:
    for panel in panels(load(name)):
        assert panel.get("title"), panel
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("targets"), f"{panel['title']}: no target"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]



def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """Each query, its variables given their All value, as a recording rule for promtool."""
    queries = [re.sub(r"\$\{?\w+\}?", ".*", expr) for name in DASHBOARDS
               for expr in exprs(load(name))]
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{index}", "expr": query}
        for index, query in enumerate(queries)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool(), "check", "rules", str(tmp_path / "queries.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_queried_is_exported() -> None:
    known = fairshare_names() | serving_names() | training_names() | recorded_names() | ALLOW
    used: dict[str, set[str]] = {}
    for name in DASHBOARDS:
        dashboard = load(name)
        queries = exprs(dashboard) + [
            re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", var["definition"])
            for var in dashboard["templating"]["list"] if var["type"] == "query"]
        for query in queries:
            for metric in metric_names(query):
                used.setdefault(metric, set()).add(name)
    unknown = {metric: sorted(where) for metric, where in used.items() if metric not in known}
    assert unknown == {}, f"queried but exported by nothing: {unknown}"


def test_the_registries_render_the_names_the_contract_gives() -> None:
    """The names the dashboards build on, checked at their source."""
    assert {"mlops_fairshare_capacity", "mlops_fairshare_oldest_queued_seconds",
            "mlops_fairshare_period_seconds", "mlops_fairshare_last_tick_timestamp_seconds",
            "mlops_fairshare_preemptions_total"} <= fairshare_names()
    assert {"mlops_requests_in_flight", "mlops_requests_total",
            "mlops_request_duration_seconds_bucket",
            "mlops_model_request_duration_seconds_bucket"} <= serving_names()
