"""Networks a spec can name as its model factory, beside the default MLP; also the example
of what a team's own factory looks like (``mlops.training.factory``).

``residual_mlp``: a projection to ``width``, then ``blocks`` residual blocks (LayerNorm,
Linear, GELU, Dropout, Linear, added back to their input), then a LayerNorm and the
output layer. The skip connections let it grow deeper than the plain MLP without its
gradients fading, the usual first step up from an MLP on tabular data.

Spec: ``model: {factory: "mlops.training.architectures:residual_mlp",
options: {width: 64, blocks: 2, dropout: 0.1}}``.
"""

from __future__ import annotations

import torch
from torch import nn

from mlops.training.factory import ModelInputs


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def residual_mlp(inputs: ModelInputs) -> nn.Module:
    """The residual MLP for ``inputs`` (options: width 64, blocks 2, dropout 0.1)."""
    options = {"width": 64, "blocks": 2, "dropout": 0.1, **inputs.options}
    unknown = sorted(set(options) - {"width", "blocks", "dropout"})
    if unknown:
        raise ValueError(f"residual_mlp takes the options width, blocks and dropout, not "
                         f"{unknown}")
    width, blocks = int(options["width"]), int(options["blocks"])
    if width < 1 or blocks < 0 or not 0 <= float(options["dropout"]) < 1:
        raise ValueError(f"residual_mlp needs width >= 1, blocks >= 0 and 0 <= dropout < 1, "
                         f"got {options}")
    return nn.Sequential(
        nn.Linear(inputs.n_inputs, width),
        *(ResidualBlock(width, float(options["dropout"])) for _ in range(blocks)),
        nn.LayerNorm(width), nn.Linear(width, inputs.n_outputs))
