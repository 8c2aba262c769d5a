"""Training throughput (images/s) of a recipe on this machine.

Usage:
    python benchmarks/train_throughput.py --config configs/default.toml --data data/openmoji128/train \
        [--steps 30] [--compare-layouts]

Runs ``--steps`` optimiser steps of the recipe in a temporary run folder (data preparation is
cached and excluded) and prints the median images/s over the steps after the first five. With
``--compare-layouts`` it also runs with ``run.channels_last = false``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

from sketchcolor.config import TrainConfig, apply_overrides, load_config_file
from sketchcolor.training import train


def measure(config: TrainConfig, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stamps = []
        for info in train(config, tmp):
            stamps.append(time.perf_counter())
            if info.step >= steps:
                break
    per_step = [b - a for a, b in zip(stamps[5:], stamps[6:], strict=False)]
    return config.optim.batch_size / statistics.median(per_step)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compare-layouts", action="store_true")
    args = parser.parse_args()
    base = load_config_file(TrainConfig, args.config)
    base = apply_overrides(
        base,
        {"data.path": args.data, "optim.steps": 10_000, "run.checkpoint_every": 10_000, "run.sample_every": 0,
         "data.val_count": 0},
    )  # fmt: skip
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    variants = [("channels_last", True)] + ([("contiguous (NCHW)", False)] if args.compare_layouts else [])
    for name, flag in variants:
        cfg = apply_overrides(base, {"run.channels_last": flag})
        print(
            f"{name:20s} {measure(cfg, args.steps):6.1f} images/s  (batch {cfg.optim.batch_size}, {cfg.model.resolution} px)"
        )


if __name__ == "__main__":
    main()
