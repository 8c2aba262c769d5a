"""fp32 against bfloat16 sampling: held-out scores (is bf16 as good?) and speed (how much faster?).

The scores part runs ``sketchcolor eval`` on each subset of a test set for fp32 and bf16 at the
same seed, and for fp32 at a second seed: the seed-to-seed change is the noise the precision's
change is compared with. Each run's JSON report is kept in ``--cache`` (a rerun skips what is
there). The speed part times ``sample_batch`` (reading, conditioning, the network) and
``colorize_batch`` (everything) on synthetic 512 px pages in this process, per precision. The
checks part counts, per precision, the pixels where a page coloured in a batch of four differs
from the same page coloured alone, and sweeps working sizes from 4 to 128 px per side for the
largest bf16-against-fp32 difference of the network's output where the pipeline uses bf16 (and
where it falls back to fp32: pages so thin that a feature map would be one pixel wide).

Usage::

    python benchmarks/inference_precision.py --data data/v2/test --limit 128 \
        --cache runs/precision --markdown docs/inference-precision.md
    python benchmarks/inference_precision.py --speed-only
    python benchmarks/inference_precision.py --checks-only

Prints the tables (and writes them with ``--markdown``); the figures of docs/performance.md
("Inference precision") come from this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("ciede2000", "psnr", "hint_ciede2000", "colourfulness_ratio")
LOWER_IS_BETTER = {"ciede2000": True, "psnr": False, "hint_ciede2000": True, "colourfulness_ratio": False}


def limited_copy(src: Path, dst: Path, limit: int | None) -> Path:
    """``src`` (sketch/ and color/) with only its first ``limit`` sorted pairs, as symlinks."""
    if limit is None:
        return src
    for role in ("sketch", "color"):
        (dst / role).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / role).iterdir())[:limit]:
            link = dst / role / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return dst


def run_eval(data: Path, precision: str, seed: int, out: Path, model: str | None) -> dict:
    if not out.exists():
        cmd = [sys.executable, "-m", "sketchcolor", "eval", "--data", str(data), "--hints-sweep", "0,4",
               "--precision", precision, "--seed", str(seed), "--no-lpips", "--quiet", "--json", str(out),
               "--format", "json"]  # fmt: skip
        if model:
            cmd += ["--model", model]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def rows_by_strokes(report: dict) -> dict[int, dict]:
    return {row["strokes"]: row for row in report["rows"]}


def paired_change(a: dict, b: dict, strokes: int, metric: str) -> float:
    """Mean over items of |a - b| for one metric (items matched by name)."""
    left = {i["name"]: i[metric] for i in a["items"] if i["strokes"] == strokes and i.get(metric) is not None}
    right = {
        i["name"]: i[metric] for i in b["items"] if i["strokes"] == strokes and i.get(metric) is not None
    }
    common = sorted(set(left) & set(right))
    return statistics.fmean(abs(left[n] - right[n]) for n in common) if common else float("nan")


def scores_table(args: argparse.Namespace) -> list[str]:
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    lines = [
        "| subset | strokes | metric | fp32 (seed 0) | bf16 (seed 0) | fp32 (seed 1) | bf16 − fp32 | seed 1 − seed 0 | per item: bf16 vs fp32 | per item: seed 1 vs 0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for subset in args.subsets.split(","):
            data = limited_copy(Path(args.data) / subset, Path(tmp) / subset, args.limit)
            fp32 = run_eval(data, "fp32", 0, cache / f"{subset}-fp32-seed0.json", args.model)
            bf16 = run_eval(data, "bf16", 0, cache / f"{subset}-bf16-seed0.json", args.model)
            other = run_eval(data, "fp32", 1, cache / f"{subset}-fp32-seed1.json", args.model)
            r32, r16, rs = rows_by_strokes(fp32), rows_by_strokes(bf16), rows_by_strokes(other)
            for strokes in sorted(r32):
                for metric in METRICS:
                    a, b, c = r32[strokes][metric], r16[strokes][metric], rs[strokes][metric]
                    if a is None:
                        continue
                    # The ratio is of means; per item, the change of the colourfulness itself.
                    per_item = "colourfulness" if metric == "colourfulness_ratio" else metric
                    lines.append(
                        f"| {subset} | {strokes} | {metric} | {a:.3f} | {b:.3f} | {c:.3f} | {b - a:+.3f} | {c - a:+.3f} "
                        f"| {paired_change(fp32, bf16, strokes, per_item):.3f} | {paired_change(fp32, other, strokes, per_item):.3f} |"
                    )
    return lines


def _pages(count: int) -> tuple[list, list]:
    """The first ``count`` of compare_speed.py's synthetic 512 px pages and their hints, in memory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_speed import make_pages  # the same pages as the speed comparison
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        pages = Path(tmp) / "pages"
        make_pages(pages, count)
        sketches = [Image.open(pages / f"page-{k:03d}.png") for k in range(count)]
        hints = [Image.open(pages / f"page-{k:03d}.hints.png") for k in range(count)]
        for im in [*sketches, *hints]:
            im.load()
    return sketches, hints


def speed_table(args: argparse.Namespace) -> list[str]:
    import torch

    from sketchcolor.config import SampleConfig
    from sketchcolor.device import cpu_bf16_native
    from sketchcolor.pipeline import colorize_batch, load_model, sample_batch

    bundle = load_model(args.model, "cpu")
    sketches, hints = _pages(4)
    lines = [
        f"CPU with native bfloat16: {cpu_bf16_native()}; {torch.get_num_threads()} threads; "
        f"median of {args.repeat} runs after one warm-up; 4 pages of 512 px, DDIM {args.steps} steps.",
        "",
        "| precision | `sample_batch` (s per 4 pages) | `colorize_batch` (images/s) |",
        "| --- | --- | --- |",
    ]

    def timed(fn, config) -> float:
        fn(sketches, hints, bundle, config, [0, 1, 2, 3])
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn(sketches, hints, bundle, config, [0, 1, 2, 3])
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    for precision in ("fp32", "bf16"):
        config = SampleConfig(steps=args.steps, precision=precision)
        t_sample = timed(sample_batch, config)
        t_all = timed(colorize_batch, config)
        lines.append(f"| {precision} | {t_sample:.3f} | {4 / t_all:.2f} |")
    return lines


def checks_table(args: argparse.Namespace) -> list[str]:
    import numpy as np
    import torch

    from sketchcolor.config import SampleConfig
    from sketchcolor.models.unet import narrowest_feature_map
    from sketchcolor.pipeline import BF16_MIN_FEATURE_MAP, colorize, colorize_batch, load_model

    bundle = load_model(args.model, "cpu")
    sketches, hints = _pages(4)
    lines = [
        "| precision | pixels differing, batch of 4 against alone (of 4 × 512 × 512) | largest difference (levels) |",
        "| --- | --- | --- |",
    ]
    for precision in ("fp32", "bf16"):
        config = SampleConfig(steps=args.steps, precision=precision)
        together = colorize_batch(sketches, hints, bundle, config, [10, 11, 12, 13])
        differing, largest = 0, 0
        for k in range(4):
            alone = np.asarray(colorize(sketches[k], hints[k], bundle, config, seed=10 + k).image, dtype=int)
            diff = np.abs(np.asarray(together[k].image, dtype=int) - alone)
            differing += int(diff.any(axis=-1).sum())
            largest = max(largest, int(diff.max()))
        lines.append(f"| {precision} | {differing} ({100 * differing / (4 * 512 * 512):.2f} %) | {largest} |")
    model, cfg = bundle.model, bundle.config.model
    gen = torch.Generator().manual_seed(0)
    worst_used, worst_avoided = 0.0, 0.0
    sides = (4, 8, 12, 16, 20, 24, 32, 64, 128)
    for h in sides:
        for w in sides:
            x = torch.randn(2, cfg.in_channels, h, w, generator=gen).contiguous(
                memory_format=torch.channels_last
            )
            c = torch.randn(2, cfg.cond_channels, h, w, generator=gen).contiguous(
                memory_format=torch.channels_last
            )
            t = torch.tensor([900, 300])
            with torch.inference_mode():
                ref = model(x, t, c)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    low = model(x, t, c).float()
            err = float(((low - ref).abs().max() / ref.abs().max()).nan_to_num(float("inf")))
            if narrowest_feature_map(cfg, (h, w)) >= BF16_MIN_FEATURE_MAP:
                worst_used = max(worst_used, err)
            else:
                worst_avoided = max(worst_avoided, err)
    lines += [
        "",
        f"Network output, bf16 against fp32, working sizes {sides[0]}–{sides[-1]} px per side: largest relative "
        f"difference {100 * worst_used:.2f} % where the pipeline uses bf16, {100 * worst_avoided:.1f} % "
        "(inf: NaN) where it falls back to fp32.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/v2/test", help="test set with one folder per subset")
    parser.add_argument("--subsets", default="openmoji,pencil,twemoji,openclipart,fluent")
    parser.add_argument("--limit", type=int, default=None, help="first N sorted items of each subset")
    parser.add_argument("--model", default=None, help="model file (default: the bundled one)")
    parser.add_argument("--cache", default="runs/precision", help="folder for the eval reports")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps of the speed part")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the speed part")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--scores-only", action="store_true")
    parser.add_argument("--checks-only", action="store_true")
    parser.add_argument("--markdown", default=None, help="also write the tables here")
    args = parser.parse_args()
    only = [name for name in ("speed", "scores", "checks") if getattr(args, f"{name}_only")]
    lines: list[str] = []
    if not only or "scores" in only:
        lines += ["### Held-out scores", "", *scores_table(args), ""]
    if not only or "speed" in only:
        lines += ["### Speed", "", *speed_table(args), ""]
    if not only or "checks" in only:
        lines += ["### Batch companions and thin pages", "", *checks_table(args), ""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
