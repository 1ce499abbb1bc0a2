"""The run summary: a typed result and its markdown rendering (shown as a Prefect artifact)."""

from __future__ import annotations

from pydantic import BaseModel


class PipelineSummary(BaseModel):
    dataset: str
    team: str
    rows: int
    dataset_hash: str
    validation_report: str
    feature_service: str
    training_rows: int
    device: str
    precision: str
    metrics: dict[str, float]
    parity_max_abs_diff: float
    onnx_sha256: str
    model_name: str
    model_version: str
    aliases: list[str]
    champion_version: str
    endpoint: str | None
    held_back: bool = False  # it beat the champion but was not approved


BASELINE = "baseline_"  # the prefix of the baseline model's metrics


def _baseline(metrics: dict[str, float], name: str) -> str:
    value = metrics.get(BASELINE + name)
    return "" if value is None else f"{value:.4f}"


def render_markdown(summary: PipelineSummary) -> str:
    """A short report a person reads in the Prefect UI."""
    metrics = "\n".join(
        f"| {name} | {value:.4f} | {_baseline(summary.metrics, name)} |"
        for name, value in summary.metrics.items() if not name.startswith(BASELINE))
    promoted = ("yes" if "champion" in summary.aliases
                else "no (not approved: champion kept)" if summary.held_back
                else "no (champion kept)")
    return f"""# Training pipeline: {summary.dataset} (team {summary.team})

| stage | result |
|---|---|
| validation | passed: {summary.rows} rows, sha256 `{summary.dataset_hash[:16]}`, \
report `{summary.validation_report}` |
| features | `{summary.feature_service}`, {summary.training_rows} training rows, point in time |
| training | {summary.device} ({summary.precision}) |
| export | ONNX sha256 `{summary.onnx_sha256[:16]}`, parity max abs diff \
{summary.parity_max_abs_diff:.2e} |
| registry | `{summary.model_name}` v{summary.model_version}, aliases \
{", ".join(summary.aliases)}; promoted: {promoted} |
| serving | {summary.endpoint or "not deployed"} (champion v{summary.champion_version}) |

| metric (held-out test split) | network | baseline (same split) |
|---|---|---|
{metrics}
"""
