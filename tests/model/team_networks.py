"""Model factories a team might write, good and bad, named by the factory tests'
specs as ``team_networks:<function>`` (this folder is on the tests' import path)."""

from __future__ import annotations

import torch
from torch import nn

from mlops.training.factory import ModelInputs

CALLS: list[ModelInputs] = []  # what each factory call was told


def linear(inputs: ModelInputs) -> nn.Module:
    CALLS.append(inputs)
    return nn.Linear(inputs.n_inputs, inputs.n_outputs)


def returns_a_dict(inputs: ModelInputs) -> dict:
    return {"layers": [inputs.n_inputs, 1]}


def raises(inputs: ModelInputs) -> nn.Module:
    raise RuntimeError("no GPU kernels compiled for this shape")


def wrong_width(inputs: ModelInputs) -> nn.Module:
    return nn.Linear(inputs.n_inputs + 1, inputs.n_outputs)


def too_many_outputs(inputs: ModelInputs) -> nn.Module:
    return nn.Linear(inputs.n_inputs, inputs.n_outputs + 2)


class DataDependent(nn.Module):
    """Python control flow on a tensor's values: torch.export cannot trace it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if out.sum().item() > 0:  # a value known only at run time
            return out * 2
        return out


def not_exportable(inputs: ModelInputs) -> nn.Module:
    return DataDependent(inputs.n_inputs)


LOSS_CALLS: list[int] = []  # the batch size of each call of huber()'s loss


class CountedHuber(nn.HuberLoss):
    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        LOSS_CALLS.append(len(target))
        return super().forward(output, target)


def huber() -> nn.Module:
    return CountedHuber(delta=0.5)
