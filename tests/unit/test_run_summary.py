"""The run summary shows each test metric of the network beside the baseline's."""

from __future__ import annotations

from mlops.pipeline.summary import PipelineSummary, render_markdown


def _summary(metrics: dict[str, float]) -> PipelineSummary:
    return PipelineSummary(
        dataset="people", team="alpha", rows=10, dataset_hash="0" * 64, validation_report="r",
        feature_service="people_v1", training_rows=8, device="cpu", precision="fp32",
        metrics=metrics, parity_max_abs_diff=1e-7, onnx_sha256="1" * 64,
        model_name="alpha.people", model_version="1", aliases=["challenger", "champion"],
        champion_version="1", endpoint=None)


def test_baseline_metrics_sit_beside_the_networks() -> None:
    text = render_markdown(_summary({"val_loss": 0.5, "test_auc": 0.81, "test_accuracy": 0.7,
                                     "baseline_test_auc": 0.84,
                                     "baseline_test_accuracy": 0.72}))
    assert "| metric (held-out test split) | network | baseline (same split) |" in text
    assert "| test_auc | 0.8100 | 0.8400 |" in text
    assert "| test_accuracy | 0.7000 | 0.7200 |" in text
    assert "| val_loss | 0.5000 |  |" in text  # the baseline has no validation loss
    assert "| baseline_test_auc |" not in text
