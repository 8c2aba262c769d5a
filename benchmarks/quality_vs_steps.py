"""Quality against sampling steps, per sampler, on held-out pictures.

Usage:
    python benchmarks/quality_vs_steps.py --data data/openmoji128/test [--model PATH] [--limit 64]
        [--configs ddim:1,2,5,10,20,50 dpmpp2m:5,10,20,50 ddpm:100,1000] [--json out.json]

Scores the model (``sketchcolor.evaluation.evaluate_model``: synthetic hints with a fixed seed,
``HintConfig(max_strokes=8)``, the same hints and noise for every row) on the first ``--limit``
held-out items in sorted order, and prints mean CIEDE2000, PSNR and SSIM per (sampler, steps),
with the sampling time per image. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from sketchcolor.config import HintConfig, SampleConfig
from sketchcolor.data import find_items
from sketchcolor.evaluation import evaluate_model
from sketchcolor.pipeline import load_model


def subset(data: Path, limit: int, tmp: Path) -> Path:
    """A folder of symbolic links to the first ``limit`` pairs (sorted by name)."""
    items, _ = find_items(data, "paired")
    for sub in ("sketch", "color"):
        (tmp / sub).mkdir(parents=True)
    for it in items[:limit]:
        os.symlink(Path(it.sketch).resolve(), tmp / "sketch" / Path(it.sketch).name)
        os.symlink(Path(it.colour).resolve(), tmp / "color" / Path(it.colour).name)
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--configs", nargs="+", default=["ddim:1,2,5,10,20,50", "dpmpp2m:5,10,20,50", "ddpm:100,1000"]
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bundle = load_model(args.model, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        test_dir = subset(args.data, args.limit, Path(tmp))
        print(
            f"{args.limit} held-out items, batch {args.batch_size}, hints HintConfig(max_strokes=8), seed {args.seed}"
        )
        print()
        print("| sampler | steps | CIEDE2000 ↓ | PSNR (dB) ↑ | SSIM ↑ | ΔE at hints ↓ | s / image |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for spec in args.configs:
            sampler, steps_text = spec.split(":")
            for steps in (int(s) for s in steps_text.split(",")):
                t0 = time.perf_counter()
                report = evaluate_model(
                    bundle, test_dir, sample_config=SampleConfig(sampler=sampler, steps=steps),
                    hint_config=HintConfig(max_strokes=8), seed=args.seed, batch_size=args.batch_size,
                )  # fmt: skip
                seconds = (time.perf_counter() - t0) / max(1, report.n_scored)
                m = report.means()
                row = {
                    "sampler": sampler,
                    "steps": steps,
                    **m,
                    "seconds_per_image": seconds,
                    "n": report.n_scored,
                }
                rows.append(row)
                print(
                    f"| {sampler} | {steps} | {m['ciede2000']:.3f} | {m['psnr']:.2f} | {m['ssim']:.4f} | "
                    f"{m.get('hint_ciede2000', float('nan')):.2f} | {seconds:.2f} |",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
