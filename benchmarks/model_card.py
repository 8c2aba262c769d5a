"""Held-out scores of a model against the baselines, and the model card's pictures.

Usage:
    python benchmarks/model_card.py --data data/openmoji128/test [--model PATH] [--run runs/default]
        [--json docs/model-card-scores.json] [--figures docs/images] [--limit N]

For every held-out pair (``sketch/STEM.png``, ``color/STEM.png``) it draws synthetic hints from the
truth with a fixed seed, exactly as ``sketchcolor eval --data DIR --max-strokes 8 --seed 0`` does
(``evaluation.synthetic_hints``, ``HintConfig(max_strokes=8)``: 0 strokes for about 10 % of items,
else 1 to 8; hint seed ``derive_seed(seed, "hints/" + stem)``, sampling seed
``derive_seed(seed, stem)``; the same hints for every method) and scores, against the truth:

* with hints: the model; (2) region fill — each line-enclosed region of the sketch takes the mean
  colour of the hints inside it, white where there are none, with the sketch's lines on top;
  (3) G'MIC "smart colouring" (``fx_colorize_lineart_smart``, benchmarks/gmic_baseline.py; skipped
  when the ``gmic`` package is missing);
* without hints: the model; (1) the sketch itself, uncoloured.

Metrics (sketchcolor.metrics): PSNR and SSIM on RGB, mean CIEDE2000, and CIEDE2000 at hinted
pixels. Means are over all items; nothing is dropped. Per-image PSNR is capped at 60 dB (an
output identical to its truth would count as +inf). Writes the scores as JSON, prints a Markdown
table, and with ``--figures`` writes ``results.png`` (rows of sketch | hints | model | region
fill | G'MIC | model without hints | truth) and, with ``--run``, ``loss.png`` from the run's
metrics.jsonl (needs matplotlib, the ``plot`` extra). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from sketchcolor import metrics  # noqa: E402
from sketchcolor.color import lab_to_rgb  # noqa: E402
from sketchcolor.compose import sketch_lightness  # noqa: E402
from sketchcolor.conditioning import HintLayer, hints_to_lab, region_fill  # noqa: E402
from sketchcolor.config import HintConfig, SampleConfig  # noqa: E402
from sketchcolor.data import find_items  # noqa: E402
from sketchcolor.evaluation import synthetic_hints  # noqa: E402
from sketchcolor.io import image_to_tensor, load_rgb, tensor_to_image  # noqa: E402
from sketchcolor.pipeline import colorize_batch, derive_seed, load_model  # noqa: E402

HINTS = HintConfig(max_strokes=8)  # as `sketchcolor eval --max-strokes 8`
#: Per-image PSNR is capped here: a prediction identical to its truth has infinite PSNR (some
#: held-out emoji are black and white, so the uncoloured sketch equals their truth exactly).
PSNR_CAP = 60.0


def region_fill_baseline(sketch_rgb: torch.Tensor, hints: HintLayer) -> torch.Tensor:
    """Baseline (2): the mean hint colour per line-enclosed region, white elsewhere, lines on top."""
    sketch_l = sketch_lightness(sketch_rgb)
    fill_lab, fill_mask = region_fill(sketch_l, hints_to_lab(hints.rgb, hints.mask), hints.mask)
    white = torch.tensor([100.0, 0.0, 0.0]).view(1, 3, 1, 1)
    lab = fill_lab * fill_mask + white * (1 - fill_mask)
    return lab_to_rgb(lab) * sketch_rgb


def gmic_baseline(sketch_rgb: torch.Tensor, hints: HintLayer) -> torch.Tensor | None:
    """Baseline (3): G'MIC smart colouring from the same hints (None when gmic is missing)."""
    try:
        from gmic_baseline import gmic_smart_colour
    except ImportError:
        return None
    sketch_u8 = (sketch_rgb[0].permute(1, 2, 0) * 255).round().byte().numpy()
    rgba_u8 = (hints.to_rgba()[0].permute(1, 2, 0) * 255).round().byte().numpy()
    try:
        out = gmic_smart_colour(sketch_u8, rgba_u8)
    except ImportError:
        return None
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None].float() / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, type=Path, help="held-out folder with sketch/ and color/")
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--pin-hints", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--flat", action="store_true", help="clean flats (pipeline flat=True)")
    parser.add_argument(
        "--no-hint-regions", action="store_true", help="ablation: the model colours hinted regions too"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N items (sorted)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--run", type=Path, default=None, help="training run folder for the loss curve")
    args = parser.parse_args()

    defaults = SampleConfig()
    sample_config = SampleConfig(
        sampler=args.sampler or defaults.sampler,
        steps=args.steps or defaults.steps,
        guidance=defaults.guidance if args.guidance is None else args.guidance,
        pin_hints=defaults.pin_hints if args.pin_hints is None else args.pin_hints,
    )
    bundle = load_model(args.model, "cpu")
    items, _ = find_items(args.data, "paired")
    if args.limit:
        items = items[: args.limit]
    started = time.perf_counter()
    methods = ["model", "region_fill", "gmic", "model_no_hints", "sketch"]
    scores: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    gallery: list[list[torch.Tensor]] = []
    gallery_every = max(1, len(items) // 6)
    have_gmic = True
    for start in range(0, len(items), args.batch_size):
        chunk = items[start : start + args.batch_size]
        sketches = [load_rgb(it.sketch) for it in chunk]
        truths = [load_rgb(it.colour) for it in chunk]
        layers = [
            synthetic_hints(
                t, s, HINTS, derive_seed(args.seed, f"hints/{it.name}"), resolution=bundle.config.resolution
            )
            for it, s, t in zip(chunk, sketches, truths, strict=True)
        ]
        seeds = [derive_seed(args.seed, it.name) for it in chunk]
        with_hints = colorize_batch(
            sketches,
            layers,
            bundle,
            sample_config,
            seeds,
            flat=args.flat,
            hint_regions=not args.no_hint_regions,
        )
        without = colorize_batch(sketches, [None] * len(chunk), bundle, sample_config, seeds, flat=args.flat)
        for k, (sketch, truth, layer) in enumerate(zip(sketches, truths, layers, strict=True)):
            outputs = {
                "model": image_to_tensor(with_hints[k].image),
                "region_fill": region_fill_baseline(sketch, layer),
                "gmic": gmic_baseline(sketch, layer) if have_gmic else None,
                "model_no_hints": image_to_tensor(without[k].image),
                "sketch": sketch,
            }
            if outputs["gmic"] is None:
                have_gmic = False
            for name, pred in outputs.items():
                if pred is None:
                    continue
                hinted = name not in ("model_no_hints", "sketch")
                s = metrics.score_images(
                    pred.clamp(0, 1), truth, layer.rgb if hinted else None, layer.mask if hinted else None
                )
                s["psnr"] = [min(v, PSNR_CAP) for v in s["psnr"]]
                for key, values in s.items():
                    scores[name].setdefault(key, []).extend(values)
            if (start + k) % gallery_every == 0 and len(gallery) < 6:
                hints_view = sketch * (1 - layer.mask) + layer.rgb * layer.mask
                blank = torch.ones_like(sketch)
                row = [sketch, hints_view, outputs["model"], outputs["region_fill"],
                       outputs["gmic"] if outputs["gmic"] is not None else blank, outputs["model_no_hints"], truth]  # fmt: skip
                gallery.append(row)
        print(f"{min(start + args.batch_size, len(items))}/{len(items)} items", file=sys.stderr)

    means = {
        m: {k: float(np.nanmean(v)) for k, v in s.items()} | {"n": len(next(iter(s.values()), []))}
        for m, s in scores.items()
        if s
    }
    result = {
        "data": args.data.as_posix().split("/data/", 1)[-1]
        if "/data/" in args.data.as_posix()
        else str(args.data),
        "items": len(items),
        "model_digest": bundle.digest,
        "sampler": sample_config.sampler,
        "steps": sample_config.steps,
        "guidance": sample_config.guidance,
        "pin_hints": sample_config.pin_hints,
        "flat": args.flat,
        "hint_regions": not args.no_hint_regions,
        "hints": "synthetic, 0-8 strokes (HintConfig(max_strokes=8)), seed derive_seed(seed, 'hints/' + stem)",
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "means": means,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    names = {
        "model": "sketchcolor (hints)", "region_fill": "region fill (hints)", "gmic": "G'MIC smart colouring (hints)",
        "model_no_hints": "sketchcolor (no hints)", "sketch": "sketch, uncoloured (no hints)",
    }  # fmt: skip
    print(
        f"{len(items)} held-out items, {sample_config.sampler} {sample_config.steps} steps, {result['seconds']} s"
    )
    print()
    print("| method | PSNR (dB) ↑ | SSIM ↑ | CIEDE2000 ↓ | ΔE at hints ↓ |")
    print("| --- | --- | --- | --- | --- |")
    for m, v in means.items():
        hint = f"{v['hint_ciede2000']:.2f}" if "hint_ciede2000" in v else "—"
        print(f"| {names[m]} | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['ciede2000']:.2f} | {hint} |")
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        grid = torch.cat([torch.cat(row, dim=3) for row in gallery], dim=2)
        tensor_to_image(grid.clamp(0, 1)).save(args.figures / "results.png")
        if args.run:
            plot_loss(args.run / "metrics.jsonl", args.figures / "loss.png")


def plot_loss(metrics_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(*zip(*train, strict=True), label="training loss (mean of 10 steps)", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss (EMA weights)", markersize=3)
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("v-prediction MSE")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
