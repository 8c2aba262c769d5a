"""Quality against sampling steps, per sampler, on held-out pictures, with and without hints.

Usage:
    python benchmarks/quality_vs_steps.py --data data/openmoji128/test [--model PATH] [--limit 64]
        [--configs ddim:1,2,5,10,20,50 dpmpp2m:5,10,20,50 ddpm:100,1000] [--json out.json]

    # the v2 default sampler and steps: several subsets, any model
    python benchmarks/quality_vs_steps.py --model runs/v2/last.safetensors --limit 64 \\
        --data data/v2/test/openmoji data/v2/test/openclipart data/v2/test/fluent \\
               data/v2/test/twemoji data/v2/test/pencil \\
        --configs ddim:1,2,4,8,16 dpmpp2m:4,8,16 --json docs/quality-vs-steps-v2.json

For every ``--data`` folder (a test set with ``sketch/`` and ``color/``; give several for the v2
subsets) and every (sampler, steps), scores the model on the first ``--limit`` items in sorted
order with ``sketchcolor.evaluation.evaluate_model`` twice:

* **with hints**: synthetic hints with a fixed seed, ``HintConfig(max_strokes=8)`` (0 strokes for
  about 10 % of items, else 1 to 8), the same hints and noise for every row — mean CIEDE2000, PSNR,
  SSIM and ΔE at hinted pixels, and the sampling time per image, as before;
* **without hints** (``num_strokes=0``; ``--no-unhinted`` leaves it out): mean CIEDE2000, PSNR, and
  the colourfulness of the outputs (Hasler & Süsstrunk 2003) with its ratio to the truths'
  (``colourfulness_ratio``, mean over mean), so that a setting that scores well by staying pale
  shows up — the default sampler and steps are chosen from both.

The JSON has one row per (data, sampler, steps): the with-hints means under their metric names
(as before, plus ``data``) and the without-hints means prefixed ``no_hints_``. Not part of the
test suite.
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
    parser.add_argument(
        "--data", type=Path, nargs="+", action="extend", required=True, help="one or more test sets"
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--configs", nargs="+", default=["ddim:1,2,5,10,20,50", "dpmpp2m:5,10,20,50", "ddpm:100,1000"]
    )
    parser.add_argument(
        "--unhinted",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score without hints (error and colourfulness columns)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bundle = load_model(args.model, "cpu")
    several = len(args.data) > 1
    rows = []
    print(
        f"first {args.limit} held-out items of each set, batch {args.batch_size}, "
        f"hints HintConfig(max_strokes=8), seed {args.seed}, model {args.model or 'bundled'} ({bundle.digest})"
    )
    print()
    head = ["sampler", "steps", "CIEDE2000 ↓", "PSNR (dB) ↑", "SSIM ↑", "ΔE at hints ↓", "s / image"]
    if args.unhinted:
        head += ["no hints: CIEDE2000 ↓", "no hints: PSNR ↑", "no hints: colourfulness", "no hints: ratio"]
    if several:
        head.insert(0, "data")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for data in args.data:
        with tempfile.TemporaryDirectory() as tmp:
            test_dir = subset(data, args.limit, Path(tmp))
            for spec in args.configs:
                sampler, steps_text = spec.split(":")
                for steps in (int(s) for s in steps_text.split(",")):
                    sample_config = SampleConfig(sampler=sampler, steps=steps)
                    t0 = time.perf_counter()
                    report = evaluate_model(
                        bundle, test_dir, sample_config=sample_config, hint_config=HintConfig(max_strokes=8),
                        seed=args.seed, batch_size=args.batch_size,
                    )  # fmt: skip
                    seconds = (time.perf_counter() - t0) / max(1, report.n_scored)
                    m = report.means()
                    row = {
                        "data": str(data),
                        "sampler": sampler,
                        "steps": steps,
                        **m,
                        "seconds_per_image": seconds,
                        "n": report.n_scored,
                        "n_failed": report.n_failed,
                    }
                    cells = [
                        sampler, str(steps), f"{m['ciede2000']:.3f}", f"{m['psnr']:.2f}", f"{m['ssim']:.4f}",
                        f"{m.get('hint_ciede2000', float('nan')):.2f}", f"{seconds:.2f}",
                    ]  # fmt: skip
                    if args.unhinted:
                        t0 = time.perf_counter()
                        plain = evaluate_model(
                            bundle, test_dir, sample_config=sample_config, hint_config=HintConfig(max_strokes=8),
                            seed=args.seed, batch_size=args.batch_size, num_strokes=0,
                        )  # fmt: skip
                        p = plain.means()
                        row.update({f"no_hints_{k}": v for k, v in p.items() if k != "hint_ciede2000"})
                        row["no_hints_seconds_per_image"] = (time.perf_counter() - t0) / max(
                            1, plain.n_scored
                        )
                        row["no_hints_n"], row["no_hints_n_failed"] = plain.n_scored, plain.n_failed
                        cells += [
                            f"{p['ciede2000']:.3f}", f"{p['psnr']:.2f}", f"{p['colourfulness']:.1f}",
                            f"{p['colourfulness_ratio']:.3f}",
                        ]  # fmt: skip
                    if several:
                        cells.insert(0, data.name)
                    rows.append(row)
                    print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        finite = [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]
        args.json.write_text(json.dumps(finite, indent=2) + "\n")


if __name__ == "__main__":
    main()
