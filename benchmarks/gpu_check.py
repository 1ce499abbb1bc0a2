"""GPU check: training throughput of a plain torch loop against the platform's loop.

Run as ``python -m benchmarks.gpu_check [--rows N]``. Needs torch and numpy plus the
platform's core modules. Prints the device and a table of samples/second: a plain torch
loop (the baseline, measured in the same run), the platform's loop in fp32, and the
platform's loop with autocast (bf16, or fp16 with a grad scaler), which runs only on CUDA.

Targets, on CUDA only (a CPU run reports its numbers and exits 0): the platform's loop
keeps at least 0.8x the plain loop's samples/s, in fp32 and with autocast (what its
normalisation buffers, grad scaler, history and best-weights copies may cost); judged
after the table, exit status 1 when one is missed. ``--quick``: 2048 rows, 2 epochs;
targets not checked.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn

from benchmarks.targets import Target, conclude
from mlops.config import ModelSettings, TaskType
from mlops.training.loop import (
    choose_precision,
    cpu_threads,
    fit,
    new_loop_state,
    resolve_device,
    seed_everything,
)
from mlops.training.model import ModelArch, build_mlp, column_stats

HIDDEN = [512, 256]
MIN_VS_PLAIN = 0.8  # platform loop / plain torch loop, samples/s, on CUDA
QUICK_ROWS, QUICK_EPOCHS = 2048, 2
Rate = tuple[str, str, float]  # (loop, precision, samples/s); the plain loop first


def make_data(rows: int, n_features: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A learnable binary task: label = sign of a fixed linear score plus noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, n_features)).astype(np.float32)
    y = ((x @ rng.normal(size=n_features) + 0.3 * rng.normal(size=rows)) > 0)
    return (torch.as_tensor(x, device=device),
            torch.as_tensor(y.astype(np.float32), device=device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(x: torch.Tensor, y: torch.Tensor, settings: ModelSettings) -> float:
    """Baseline: the same MLP shape, AdamW and loss, in the simplest loop; samples/second."""
    torch.manual_seed(settings.seed)
    layers: list[nn.Module] = []
    width = x.shape[1]
    for size in settings.hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(settings.dropout)]
        width = size
    model = nn.Sequential(*layers, nn.Linear(width, 1)).to(x.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    seconds = 0.0
    for epoch in range(settings.epochs):
        _sync(x.device)
        started = time.perf_counter()
        order = torch.randperm(len(x), device=x.device)
        for start in range(0, len(x), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            loss = loss_fn(model(x[idx]).squeeze(-1), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(x.device)
        if epoch > 0 or settings.epochs == 1:  # the first epoch warms up
            seconds += time.perf_counter() - started
    measured = max(settings.epochs - 1, 1)
    return measured * len(x) / seconds


def platform_loop(x: torch.Tensor, y: torch.Tensor, settings: ModelSettings,
                  precision: str) -> float:
    """The platform's ``fit`` (normalisation buffers, autocast, scaler); samples/second."""
    arch = ModelArch(n_features=x.shape[1], hidden=settings.hidden, dropout=settings.dropout,
                     task=TaskType.classification, feature_names=[], label="y", dataset="bench")
    torch.manual_seed(settings.seed)
    mlp = build_mlp(arch)
    mlp.set_normalisation(*column_stats(x[:10_000].cpu().numpy()))
    state = new_loop_state(mlp, settings, x.device, precision)
    val = (x[:2048], y[:2048])
    fit(state, (x, y), val, settings, TaskType.classification, precision)
    timed = state.history[1:] or state.history
    return sum(h["samples"] for h in timed) / sum(h["seconds"] for h in timed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu}, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores"


def check_targets(results: list[Rate]) -> list[Target]:
    baseline = results[0][2]
    return [Target(f"{name}, {precision} >= {MIN_VS_PLAIN}x the plain torch loop",
                   rate / baseline >= MIN_VS_PLAIN, f"{rate / baseline:.2f}x")
            for name, precision, rate in results[1:]]


def verdict(results: list[Rate], device: torch.device, quick: bool) -> int:
    """The exit status: targets are judged on CUDA only, where autocast runs."""
    if quick or device.type == "cuda":
        return conclude(check_targets(results), quick, "Targets (CUDA only):")
    print(f"\nTargets (CUDA only): not checked on {device.type}")
    return 0


def print_table(results: list[Rate], device: torch.device) -> None:
    baseline = results[0][2]
    print(f"{'loop':<30} {'precision':<10} {'samples/s':>12} {'vs baseline':>12}")
    for name, precision, rate in results:
        print(f"{name:<30} {precision:<10} {rate:>12,.0f} {rate / baseline:>11.2f}x")
    if device.type != "cuda":
        print(f"{'platform loop + autocast':<30} {'n/a':<10} {'n/a (no CUDA)':>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="training rows (default 200000 on CUDA, 10000 on CPU)")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per row (first warms up)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows, "
                        f"{QUICK_EPOCHS} epochs (overrides both); targets not checked")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs = QUICK_ROWS, QUICK_EPOCHS
    settings = ModelSettings(hidden=HIDDEN, epochs=args.epochs, patience=args.epochs + 1,
                             batch_size=args.batch_size, device=args.device)
    device = resolve_device(settings)
    seed_everything(settings.seed)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(settings, args.features))
    rows = args.rows or (200_000 if device.type == "cuda" else 10_000)
    x, y = make_data(rows, args.features, device)
    print(f"device   {device_name(device)}")
    print(f"torch    {torch.__version__}")
    print(f"data     {rows} rows x {args.features} features, MLP {HIDDEN}, "
          f"batch {args.batch_size}, {args.epochs} epochs (first is warm-up)\n")
    results: list[Rate] = [("plain torch loop (baseline)", "fp32", plain_loop(x, y, settings)),
                           ("platform loop", "fp32", platform_loop(x, y, settings, "fp32"))]
    amp = choose_precision(device)
    if device.type == "cuda":
        results.append(("platform loop + autocast", amp, platform_loop(x, y, settings, amp)))
    print_table(results, device)
    return verdict(results, device, args.quick)


if __name__ == "__main__":
    sys.exit(main())
