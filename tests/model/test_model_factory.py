"""A team's own network named in the spec: built by its factory with the model's inputs,
trained with the platform's loop (and the spec's loss), checkpointed and resumed, exported
with parity; a factory that cannot serve is refused, by name and reason, before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import team_networks
import torch

from benchmarks.synthetic import generate_mixed_panel, mixed_spec
from mlops.config import ConfigError, CustomModel, DatasetSpec, ModelSettings, TaskType
from mlops.training.architectures import residual_mlp
from mlops.training.export import export_onnx
from mlops.training.factory import FactoryError, ModelInputs
from mlops.training.train import train_model

SETTINGS = ModelSettings(epochs=6, batch_size=64, learning_rate=0.01)


def _spec(folder: Path, task: TaskType, factory: str, loss: str | None = None,
          **options: object) -> DatasetSpec:
    path = folder / f"{task}.parquet"
    if not path.exists():
        generate_mixed_panel(n_entities=100, task=task).to_parquet(path, index=False)
    return mixed_spec(str(path), task).model_copy(update={
        "model": CustomModel(factory=factory, loss=loss, options=options)})


@pytest.mark.parametrize("task", [TaskType.classification, TaskType.multiclass])
def test_the_residual_mlp_trains_exports_and_matches(tmp_path: Path, task: TaskType) -> None:
    spec = _spec(tmp_path, task, "mlops.training.architectures:residual_mlp", width=32,
                 blocks=2)
    trained = train_model(spec.path, spec, SETTINGS, tmp_path / "out")
    metric = trained.primary_metric
    assert trained.metrics[metric] > 0.75
    exported = export_onnx(trained.model_path, trained.test_path, tmp_path / "onnx")
    assert exported.max_abs_diff <= 1e-4
    session = ort.InferenceSession(exported.onnx_path, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(exported.onnx_path).graph.node}
    assert "LayerNormalization" in ops and "LabelEncoder" in ops  # its body, our encoding
    assert session.get_inputs()[1].name == "categories"


def test_the_factory_is_told_the_models_inputs_and_the_spec_loss_is_used(tmp_path) -> None:
    team_networks.CALLS.clear()
    team_networks.LOSS_CALLS.clear()
    spec = _spec(tmp_path, TaskType.regression, "team_networks:linear",
                 loss="team_networks:huber", scale=3)
    trained = train_model(spec.path, spec, SETTINGS, tmp_path / "out")
    told = team_networks.CALLS[0]
    assert (told.n_inputs, told.n_outputs, told.task) == (20, 1, TaskType.regression)
    assert told.input_columns[:3] == ["hours", "f0", "f1"] and "continent=?" in told.input_columns
    assert told.feature_names == spec.features and told.options == {"scale": 3}
    # The spec's loss trained every batch and scored the validation split.
    train_rows = trained.train_rows * trained.epochs_run
    assert sum(team_networks.LOSS_CALLS) == train_rows + trained.val_rows * trained.epochs_run
    again = train_model(spec.path, spec, SETTINGS, tmp_path / "out")  # same run key
    assert again.resumed_from_epoch == trained.epochs_run
    assert again.metrics["test_rmse"] == pytest.approx(trained.metrics["test_rmse"])


@pytest.mark.parametrize(("factory", "loss", "message"), [
    ("no_such_team_module:build", None,
     "module 'no_such_team_module' cannot be imported: ModuleNotFoundError"),
    ("team_networks:missing", None, "module 'team_networks' has no callable 'missing'"),
    ("team_networks:returns_a_dict", None, "returned dict, not a torch.nn.Module"),
    ("team_networks:raises", None,
     "failed: RuntimeError: no GPU kernels compiled for this shape"),
    ("team_networks:wrong_width", None, "the network fails on a batch of shape [4, 20]"),
    ("team_networks:too_many_outputs", None, "gives outputs of shape [12] for 4 rows"),
    ("team_networks:not_exportable", None,
     "cannot be exported to ONNX: GuardOnDataDependentSymNode: Could not guard on "
     "data-dependent expression"),
    ("team_networks:linear", "team_networks:nowhere",
     "loss 'team_networks:nowhere': module 'team_networks' has no callable 'nowhere'"),
])
def test_a_factory_that_cannot_serve_is_refused_before_training(tmp_path, factory, loss,
                                                                message) -> None:
    spec = _spec(tmp_path, TaskType.classification, factory, loss=loss)
    with pytest.raises(FactoryError) as raised:
        train_model(spec.path, spec, SETTINGS, tmp_path / "out")
    assert message in str(raised.value)
    assert isinstance(raised.value, ConfigError)
    assert not (tmp_path / "out" / "checkpoints").exists(), "refused before any epoch"


@pytest.mark.parametrize("factory", ["residual_mlp", "a.b:", "a b:c", "a:b:c"])
def test_a_factory_is_written_module_colon_function(factory) -> None:
    with pytest.raises(ValueError, match="factory"):
        CustomModel(factory=factory)


def test_residual_mlp_options_are_checked() -> None:
    inputs = ModelInputs(n_inputs=5, n_outputs=3, task=TaskType.multiclass,
                         feature_names=["a"], input_columns=list("abcde"),
                         options={"depth": 3})
    with pytest.raises(ValueError, match=r"not \['depth'\]"):
        residual_mlp(inputs)
    net = residual_mlp(inputs.model_copy(update={"options": {"width": 8, "blocks": 3}}))
    assert net(torch.zeros(2, 5)).shape == (2, 3)
    assert sum(isinstance(m, type(net[1])) for m in net) == 3
    assert np.isfinite(sum(p.sum().item() for p in net.parameters()))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_factory_network_trains_under_each_precision_the_loop_uses(precision: str) -> None:
    """The loop's mixed precision (autocast, and fp16's grad scaler) around a team's own
    network. On CUDA the loop picks bf16 or fp16; here autocast runs on the CPU (no GPU is
    lent to these tests), the same code path with the CPU's kernels."""
    from mlops.training.loop import evaluate_loss, fit, new_loop_state
    from mlops.training.model import MLP

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 6, generator=generator)
    y = (x[:, 0] - x[:, 1] > 0).float()
    inputs = ModelInputs(n_inputs=6, n_outputs=1, task=TaskType.classification,
                         feature_names=[f"f{i}" for i in range(6)],
                         input_columns=[f"f{i}" for i in range(6)], options={"width": 16})
    mlp = MLP(6, [], 0.0, body=residual_mlp(inputs))
    settings = ModelSettings(epochs=8, batch_size=64, learning_rate=0.01, patience=8)
    state = new_loop_state(mlp, settings, torch.device("cpu"), precision)
    assert state.scaler.is_enabled() == (precision == "fp16")
    before = evaluate_loss(mlp, x, y, TaskType.classification, precision)
    fit(state, (x, y), (x, y), settings, TaskType.classification, precision)
    after = evaluate_loss(mlp, x, y, TaskType.classification, precision)
    assert np.isfinite(after) and after < 0.6 * before, (before, after)
