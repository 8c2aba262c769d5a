"""How close to the hints a perfect network could get: the floor of the network-alone hint error.

Usage (from the repository root)::

    python benchmarks/hint_floor.py --data data/v2/test --limit 128 --strokes 2,4,8

The model card's "network alone" rows (``--no-hint-regions``) measure the CIEDE2000 between the
output and the hint colours at the hinted pixels. The network works at 64 px and the pipeline
carries its colours to full size with the sketch's lines on top, so even a network that
predicted the truth exactly at 64 px would miss a little. This script measures that floor: for
each held-out item (the first ``--limit`` in sorted order, the card's items) it draws the same
synthetic hints as ``sketchcolor eval`` (:func:`sketchcolor.evaluation.synthetic_hints`, seed
``derive_seed(seed, "hints/" + name)``), area-reduces the ground truth to the working size,
converts it to LAB as if the network had produced it, composes it exactly as the pipeline does
without hint regions (:func:`sketchcolor.compose.carry_to_full_size`, region snapping on) and
scores the hinted off-line pixels (:func:`sketchcolor.metrics.hint_error`). No model is run.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/v2/test"), help="folder of subsets")
    parser.add_argument("--subsets", default="openmoji,openclipart,fluent,twemoji,pencil")
    parser.add_argument("--limit", type=int, default=128, help="first N sorted items per subset (0: all)")
    parser.add_argument("--strokes", default="2,4,8", help="comma-separated stroke counts")
    parser.add_argument("--resolution", type=int, default=64, help="the model's working resolution")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sketchcolor.color import rgb_to_lab
    from sketchcolor.compose import carry_to_full_size, sketch_lightness
    from sketchcolor.conditioning import LINE_LEVEL
    from sketchcolor.config import HintConfig
    from sketchcolor.evaluation import find_pairs, find_test_set, synthetic_hints
    from sketchcolor.io import load_rgb
    from sketchcolor.metrics import hint_error
    from sketchcolor.pipeline import derive_seed, working_size

    strokes = [int(x) for x in args.strokes.split(",")]
    print(f"floor of the network-alone hint error (CIEDE2000 at hinted pixels), {args.resolution} px, "
          f"first {args.limit or 'all'} items, seed {args.seed}")  # fmt: skip
    print("| subset | " + " | ".join(f"{k} strokes" for k in strokes) + " |")
    print("| --- |" + " --- |" * len(strokes))
    for subset in args.subsets.split(","):
        sketch_dir, truth_dir = find_test_set(args.data / subset)
        pairs = list(find_pairs(sketch_dir, truth_dir).pairs)
        pairs = pairs[: args.limit] if args.limit else pairs
        errors: dict[int, list[float]] = {k: [] for k in strokes}
        for pair in pairs:
            sketch, truth = load_rgb(pair.pred), load_rgb(pair.truth)
            sketch_l = sketch_lightness(sketch)
            small = working_size(tuple(truth.shape[-2:]), args.resolution)
            lab_small = rgb_to_lab(F.interpolate(truth, size=small, mode="area"))
            picture, _ = carry_to_full_size(
                lab_small, F.interpolate(sketch_l, size=small, mode="area"), sketch_l,
                (sketch * 255).round().to(torch.uint8),
            )  # fmt: skip
            out = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255.0
            off_lines = (sketch_l >= LINE_LEVEL).float()
            for k in strokes:
                layer = synthetic_hints(
                    truth, sketch, HintConfig(), derive_seed(args.seed, f"hints/{pair.name}"),
                    resolution=args.resolution, num_strokes=k,
                )  # fmt: skip
                mask = layer.mask * off_lines
                if mask.sum() > 0:
                    errors[k].append(float(hint_error(out, layer.rgb * off_lines, mask)))
        cells = [f"{sum(v) / len(v):.2f}" if v else "—" for v in errors.values()]
        print(f"| {subset} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
