"""A team's own network: the spec names a factory (``module:function``) and, optionally, a
loss; the platform keeps every guarantee around it (standardisation, device and mixed
precision, checkpoints and resume, ONNX export with parity, registration, serving).

The factory is called with a ``ModelInputs`` (the input width after encoding, the number
of outputs, the task, the feature and input column names, the classes, the spec's
``options``) and returns a ``torch.nn.Module`` that maps standardised inputs [batch,
n_inputs] to raw outputs: a logit or a standardised value per row ([batch] or [batch, 1]),
or one logit per class ([batch, classes]). Everything that can be known before training
is checked before it starts (``check_network``): the factory imports, returns a module,
gives outputs of that shape, and exports to ONNX; each refusal names the factory and why.
"""

from __future__ import annotations

import importlib
import io
import logging
import re
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from mlops.config import ConfigError, TaskType

log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the exporter colours its messages


class FactoryError(ConfigError):
    """A model or loss factory that cannot be used; the message names it and the reason."""


class ModelInputs(BaseModel):
    """What a factory is told about the network it builds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_inputs: int  # columns of the (encoded, standardised) input
    n_outputs: int  # 1, or the number of classes
    task: TaskType
    feature_names: list[str]  # the spec's features
    input_columns: list[str]  # the encoded columns ("continent=Asia", ...), n_inputs long
    classes: list[int | str] | None = None
    options: dict[str, Any] = {}


def resolve(reference: str, what: str) -> Callable[..., Any]:
    """The callable ``module:function`` names; FactoryError naming what cannot be found."""
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise FactoryError(f"{what} {reference!r} must be written module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs the module's code: any error may come
        raise FactoryError(f"{what} {reference!r}: module {module_name!r} cannot be "
                           f"imported: {type(exc).__name__}: {exc}") from None
    target = getattr(module, name, None)
    if not callable(target):
        raise FactoryError(f"{what} {reference!r}: module {module_name!r} has no callable "
                           f"{name!r}")
    return target


def build_body(reference: str, inputs: ModelInputs) -> nn.Module:
    """Call the factory; what it returns must be a torch module."""
    try:
        body = resolve(reference, "model factory")(inputs)
    except FactoryError:
        raise
    except Exception as exc:  # the team's code
        raise FactoryError(f"model factory {reference!r} failed: {type(exc).__name__}: "
                           f"{exc}") from None
    if not isinstance(body, nn.Module):
        raise FactoryError(f"model factory {reference!r} returned {type(body).__name__}, "
                           "not a torch.nn.Module")
    return body


def build_loss(reference: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The spec's loss: a factory called without arguments (``torch.nn:HuberLoss``) whose
    result takes (outputs, targets) and returns the batch's mean loss."""
    try:
        loss = resolve(reference, "loss")()
    except FactoryError:
        raise
    except Exception as exc:
        raise FactoryError(f"loss {reference!r} failed: {type(exc).__name__}: {exc}") from None
    if not callable(loss):
        raise FactoryError(f"loss {reference!r} returned {type(loss).__name__}, not a "
                           "callable of (outputs, targets)")
    return loss


def check_network(reference: str, predictor: nn.Module, n_inputs: int,
                  n_outputs: int) -> None:
    """Before training: the network's outputs have the contract's shape, and it exports to
    ONNX with a dynamic batch (the exporter's reason, when not)."""
    from mlops.training.export import export_program

    example = torch.zeros((4, n_inputs))
    try:
        with torch.no_grad():
            out = predictor.eval()(example)
    except Exception as exc:
        raise FactoryError(f"model factory {reference!r}: the network fails on a batch of "
                           f"shape [4, {n_inputs}]: {type(exc).__name__}: {exc}") from None
    expected = (4,) if n_outputs == 1 else (4, n_outputs)
    if tuple(out.shape) != expected:
        raise FactoryError(f"model factory {reference!r}: the network gives outputs of "
                           f"shape {list(out.shape)} for 4 rows; expected {list(expected)}")
    printed = io.StringIO()  # a failed export prints the traced graph; the reason is enough
    try:
        with redirect_stdout(printed), redirect_stderr(printed):
            export_program(predictor, np.zeros((4, n_inputs), dtype=np.float32), "features")
    except Exception as exc:  # the exporter raises many types
        raise FactoryError(f"model factory {reference!r}: the network cannot be exported "
                           f"to ONNX: {export_reason(exc)}") from None
    log.info("model factory %s: outputs %s, exports to ONNX", reference, list(expected))


def export_reason(exc: BaseException) -> str:
    """The innermost cause's first line: the exporter wraps what torch.export found (a
    data-dependent branch, an unsupported operator) in generic "step 1/3" errors."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")
