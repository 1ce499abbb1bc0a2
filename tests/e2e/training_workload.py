"""A workload of the monitoring tests: the platform's real train task (MLflow tracking, the
Prometheus textfile series) on a small synthetic panel, for as many epochs as asked, so a
test can throttle a run that is training."""

from pathlib import Path

from prefect import flow

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ModelSettings, Settings
from tasks.training import train


@flow(name="long-training", log_prints=False)
def long_training(team: str, epochs: int, folder: str) -> int:
    path = Path(folder) / "stall_panel.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_panel(n_entities=200, n_periods=6, seed=1).to_parquet(path, index=False)
    model = ModelSettings(epochs=epochs, patience=epochs, batch_size=64, hidden=[16],
                          device="cpu", seed=1)
    return train(str(path), synthetic_spec(str(path), name="stall_panel"), model, Settings(),
                 team).epochs_run
