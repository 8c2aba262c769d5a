"""Training throughput (images/s) of a recipe on this machine, one speed option per row.

Usage (the command behind docs/performance.md, "Training throughput (issue 14)"):

    python benchmarks/train_throughput.py --config configs/default.toml --data data/v2/train \\
        --steps 30 --json docs/train-throughput.json

    # a subset, in this order; any recipe key can be overridden with --set
    python benchmarks/train_throughput.py --config configs/v1.toml --data data/openmoji128/train \\
        --variants baseline,bf16,auto --set run.threads=2

Every variant runs ``--steps`` optimiser steps of the recipe in a temporary run folder, one after
the other in this process (data preparation is cached and excluded; no validation, samples or
checkpoints), and reports the median images/s over the steps after the first ``--warmup`` (which
also absorb torch.compile's compilation). The variants:

    baseline        the recipe as written, but fp32, torch's default AdamW kernel, no
                    torch.compile and 0 data workers: what training did before issue 14
    bf16            baseline + bfloat16 autocast (optim.precision = "bf16")
    nchw            baseline in contiguous NCHW layout (run.channels_last = false)
    channels_last   baseline in channels-last layout (run.channels_last = true); the default list
                    has whichever of nchw / channels_last is not the recipe's layout
    fused           baseline + fused AdamW (optim.fused = true)
    compile         baseline + torch.compile of the training forward (run.compile = true)
    workers1        baseline + one data-loading process (run.num_workers = 1)
    auto            the recipe with optim.precision and optim.fused = "auto": what a run picks here

The ``data`` columns are the median time a step waited for its batch; with 0 workers that is the
whole sample synthesis (crop, line styles, hints, region fill, references), and the script says so
when it is a large part of the step. ``--json PATH`` writes every figure. About 10-15 minutes for
the v2 recipe on 2 cores (compilation included). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from sketchcolor.config import TrainConfig, apply_overrides, load_config_file
from sketchcolor.device import fused_adamw_ok, resolve_device, train_autocast_dtype
from sketchcolor.errors import SketchcolorError
from sketchcolor.training import train

#: name -> (overrides on top of the baseline, what the row is)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "baseline": ({}, "recipe, fp32, default AdamW, eager, 0 workers"),
    "bf16": ({"optim.precision": "bf16"}, "baseline + bf16 autocast"),
    "nchw": ({"run.channels_last": False}, "baseline, contiguous NCHW layout"),
    "channels_last": ({"run.channels_last": True}, "baseline, channels-last layout"),
    "fused": ({"optim.fused": True}, "baseline + fused AdamW"),
    "compile": ({"run.compile": True}, "baseline + torch.compile (inductor)"),
    "workers1": ({"run.num_workers": 1}, "baseline + 1 data worker"),
    "auto": ({}, "recipe with precision and fused = auto"),
}
BASELINE = {"optim.precision": "fp32", "optim.fused": False, "run.compile": False, "run.num_workers": 0}
#: Say so when sample synthesis (with 0 workers) takes more than this share of a step.
DATA_BOUND = 0.25


@dataclasses.dataclass
class Result:
    variant: str
    what: str
    settings: dict[str, Any]
    images_per_s: float | None = None
    step_s: float | None = None
    data_s: float | None = None
    data_share: float | None = None
    error: str | None = None


def settings_of(config: TrainConfig) -> dict[str, Any]:
    """What the run actually uses (``auto`` resolved as training resolves it)."""
    device = resolve_device(config.run.device)
    dtype = train_autocast_dtype(config.optim.precision, device)
    fused = fused_adamw_ok(device) if config.optim.fused == "auto" else config.optim.fused
    return {
        "device": str(device),
        "autocast": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "fused_adamw": bool(fused),
        "compile": config.run.compile,
        "channels_last": config.run.channels_last,
        "num_workers": config.run.num_workers,
    }


def measure(config: TrainConfig, steps: int, warmup: int) -> tuple[float, float, float]:
    """(images/s, median step seconds, median data-wait seconds) over the steps after ``warmup``."""
    elapsed: list[float] = []
    waits: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = train(config, Path(tmp) / "run")
        try:
            for info in run:
                elapsed.append(info.elapsed)
                waits.append(info.data_wait)
                if info.step >= steps:
                    break
        finally:
            run.close()  # ends the loader (and its workers) before the folder goes
    per_step = [b - a for a, b in zip(elapsed[warmup:], elapsed[warmup + 1 :], strict=False)]
    step_s = statistics.median(per_step)
    data_s = statistics.median(waits[warmup + 1 :])
    return config.optim.batch_size / step_s, step_s, data_s


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="recipe TOML (configs/*.toml)")
    parser.add_argument("--data", required=True, help="training pictures (as sketchcolor train --data)")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the median")
    parser.add_argument("--variants", default="", help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE recipe override")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args()
    if args.steps < args.warmup + 2:
        parser.error(f"--steps must be at least --warmup + 2 = {args.warmup + 2}")

    recipe = load_config_file(TrainConfig, args.config)
    recipe = apply_overrides(recipe, {"data.path": args.data, **parse_sets(args.sets)})
    recipe = apply_overrides(
        recipe,
        {"optim.steps": 10_000, "run.checkpoint_every": 10_000, "run.eval_every": 0, "run.sample_every": 0,
         "run.log_every": 1000, "data.val_count": 0},
    )  # fmt: skip
    layout = "nchw" if recipe.run.channels_last else "channels_last"
    default = ["baseline", "bf16", layout, "fused", "compile", "workers1", "auto"]
    names = [v.strip() for v in args.variants.split(",") if v.strip()] or default
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if recipe.run.threads:
        torch.set_num_threads(recipe.run.threads)
    machine = platform.processor() or platform.machine()
    print(
        f"machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{args.config}: batch {recipe.optim.batch_size}, {recipe.model.resolution} px; "
        f"median of steps {args.warmup + 2}-{args.steps}"
    )

    results: list[Result] = []
    for name in names:
        overrides, what = VARIANTS[name]
        if name == "auto":
            config = apply_overrides(recipe, {"optim.precision": "auto", "optim.fused": "auto"})
        else:
            config = apply_overrides(apply_overrides(recipe, BASELINE), overrides)
        result = Result(name, what, settings_of(config))
        try:
            result.images_per_s, result.step_s, result.data_s = measure(config, args.steps, args.warmup)
            result.data_share = result.data_s / result.step_s
        except SketchcolorError as exc:
            result.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        results.append(result)
        print(row(result, results[0]), flush=True)

    notes = [
        f"{r.variant}: sample synthesis is {r.data_share:.0%} of a step with 0 workers; "
        "run.num_workers >= 1 overlaps it with the network"
        for r in results
        if r.data_share is not None and r.settings["num_workers"] == 0 and r.data_share > DATA_BOUND
    ]
    print(
        "\n".join(notes)
        if notes
        else f"data: synthesis under {DATA_BOUND:.0%} of every step (not the bottleneck)"
    )
    print("\n" + markdown(results))
    if args.json:
        record = {
            "machine": machine, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "config": args.config, "data": args.data, "steps": args.steps, "warmup": args.warmup,
            "batch_size": recipe.optim.batch_size, "resolution": recipe.model.resolution,
            "results": [dataclasses.asdict(r) for r in results],
        }  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


def markdown(results: list[Result]) -> str:
    """The results as the table of docs/performance.md."""
    base = results[0].images_per_s
    lines = [
        "| variant | what | images/s | vs first row | data wait (ms) | data share |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if r.error is not None or r.images_per_s is None or r.data_s is None or r.data_share is None:
            lines.append(f"| {r.variant} | {r.what} | failed: {r.error} | | | |")
            continue
        ratio = f"{r.images_per_s / base:.2f} x" if base else "-"
        lines.append(
            f"| {r.variant} | {r.what} | {r.images_per_s:.1f} | {ratio} | {r.data_s * 1000:.1f} | {r.data_share:.0%} |"
        )
    return "\n".join(lines)


def row(r: Result, base: Result) -> str:
    s = r.settings
    how = (
        f"[{s['autocast']}, {'fused' if s['fused_adamw'] else 'default'} AdamW, "
        f"{'compiled' if s['compile'] else 'eager'}, {'channels-last' if s['channels_last'] else 'NCHW'}, "
        f"{s['num_workers']} workers]"
    )
    if r.error is not None:
        return f"{r.variant:14s} failed: {r.error}  {how}"
    assert r.images_per_s is not None and r.step_s is not None and r.data_s is not None
    speedup = f"{r.images_per_s / base.images_per_s:5.2f}x" if base.images_per_s else "    -"
    return (
        f"{r.variant:14s} {r.images_per_s:7.1f} images/s {speedup}  step {r.step_s * 1000:7.0f} ms  "
        f"data {r.data_s * 1000:6.1f} ms ({r.data_share:4.0%})  {r.what} {how}"
    )


if __name__ == "__main__":
    main()
