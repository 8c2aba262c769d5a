"""Where one ``pipeline.colorize`` call spends its time, function by function.

Usage (from the repository root)::

    python benchmarks/colorize_stages.py --size 4096 --model data/models/v1.safetensors

Wraps the pipeline's and the composition's stage functions (reading the sketch and the hints,
lightness, sampling, region labelling, the banded render) with timers, colourises
examples/fox.png with its hints resized to ``--size`` (one warm-up call, then ``--repeat`` calls,
each of ``--num-samples`` variations)
and prints each stage's mean wall and CPU time per call. Stages nest (``_prepare`` holds the
reading, ``_finish`` holds the composition), so the rows do not add up to the total. CPU time
above wall time means the stage used more than one core. Not part of the test suite.

To time an earlier commit, run this script with ``PYTHONPATH=TREE/src`` for a worktree ``TREE`` of
it: stages that tree lacks are left out of the table; the totals compare.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_STAGES = [
    "_prepare", "read_sketch_u8", "_as_layer", "is_colour_image", "sketch_lightness_u8",
    "make_conditioning", "sample", "_finish", "carry_to_full_size", "region_labels",
]  # fmt: skip
COMPOSE_STAGES = ["region_colours", "render_u8", "remove_lines"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096, help="long side of the page (px)")
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=1, help="variations per call (one batch)")
    args = parser.parse_args()

    from PIL import Image

    from sketchcolor import compose, pipeline
    from sketchcolor.config import SampleConfig

    totals: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                row = totals.setdefault(name, [0.0, 0.0])
                row[0] += time.perf_counter() - t0
                row[1] += time.process_time() - c0

        return wrapper

    for module, names in ((pipeline, PIPELINE_STAGES), (compose, COMPOSE_STAGES)):
        for name in names:
            if hasattr(module, name):  # an earlier tree (PYTHONPATH=TREE/src) may lack a stage
                setattr(module, name, timed(name, getattr(module, name)))
    bundle = pipeline.load_model(args.model, "cpu")
    size = (args.size, args.size)
    sketch = Image.open(ROOT / "examples" / "fox.png").resize(size, Image.Resampling.BICUBIC)
    hints = Image.open(ROOT / "examples" / "fox.hints.png").resize(size, Image.Resampling.NEAREST)
    config = SampleConfig(steps=args.steps)
    pipeline.colorize(sketch, hints, bundle, config, seed=0)  # warm-up
    totals.clear()
    wall = cpu = 0.0
    for i in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        pipeline.colorize(sketch, hints, bundle, config, seed=i, num_samples=args.num_samples)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    n = args.repeat
    print(f"{args.size} px (sketch mode {sketch.mode}), DDIM {args.steps} steps, "
          f"{args.num_samples} sample(s): "
          f"{wall / n:.3f} s wall, {cpu / n:.3f} s CPU per call")  # fmt: skip
    print(f"{'stage':24s} {'wall (s)':>9s} {'CPU (s)':>9s}")
    for name, (w, c) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:24s} {w / n:9.3f} {c / n:9.3f}")


if __name__ == "__main__":
    main()
