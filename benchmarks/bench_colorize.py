"""Colourising speed and memory on this machine: latency per size, network vs overhead, batches.

Usage:
    python benchmarks/bench_colorize.py [--model PATH] [--sampler ddim] [--steps 20]
        [--sizes 256,512,1024,2048,4096] [--batch-sizes 1,4,16] [--repeat 3]

Each size runs in its own process, so its peak resident memory (ru_maxrss) is its own. Reported:

* ``total``: wall time of ``pipeline.colorize`` (read from memory, hints included, default
  settings), median of ``--repeat`` runs after one warm-up run;
* ``sampling``: time inside ``pipeline.sample`` (the sampler loop);
* ``network``: time inside the U-Net's forward calls; ``per step`` = network / steps;
* ``overhead``: sampling minus network (the sampler's own work), also as % of network time;
* ``compose``: total minus sampling (reading, resizing, carrying colours to full size, lines);
* ``peak RSS``: the process's peak resident memory;
* batch throughput: images/s of ``pipeline.colorize_batch`` on 512 px copies of the example.

The sketch is examples/fox.png (with its hints) resized to each size. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import torch
    from PIL import Image

    from sketchcolor import pipeline
    from sketchcolor.config import SampleConfig

    bundle = pipeline.load_model(args.model, "cpu")
    sketch = Image.open(ROOT / "examples" / "fox.png")
    hints = Image.open(ROOT / "examples" / "fox.hints.png")
    cfg = SampleConfig(sampler=args.sampler, steps=args.steps)
    net = {"t": 0.0}
    samp = {"t": 0.0}

    def pre(module, inputs):  # noqa: ANN001
        net["start"] = time.perf_counter()

    def post(module, inputs, output):  # noqa: ANN001
        net["t"] += time.perf_counter() - net["start"]

    bundle.model.register_forward_pre_hook(pre)
    bundle.model.register_forward_hook(post)
    original = pipeline.sample

    def timed_sample(*a, **k):  # noqa: ANN002, ANN003
        t0 = time.perf_counter()
        out = original(*a, **k)
        samp["t"] += time.perf_counter() - t0
        return out

    pipeline.sample = timed_sample
    if args.child_size:
        s = args.child_size
        sk, hi = (
            sketch.resize((s, s), Image.Resampling.BICUBIC),
            hints.resize((s, s), Image.Resampling.NEAREST),
        )
        rows = []
        for i in range(args.repeat + 1):
            net["t"] = samp["t"] = 0.0
            t0 = time.perf_counter()
            pipeline.colorize(sk, hi, bundle, cfg, seed=i)
            total = time.perf_counter() - t0
            if i:  # the first run is a warm-up
                rows.append((total, samp["t"], net["t"]))
        total, sampling, network = (statistics.median(r[k] for r in rows) for k in range(3))
        result = {
            "size": s, "total": total, "sampling": sampling, "network": network,
            "per_step": network / args.steps, "overhead": sampling - network,
            "overhead_pct": 100 * (sampling - network) / network, "compose": total - sampling,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }  # fmt: skip
    else:
        b = args.child_batch
        sk = sketch.resize((512, 512), Image.Resampling.BICUBIC)
        hi = hints.resize((512, 512), Image.Resampling.NEAREST)
        pipeline.colorize_batch([sk] * b, [hi] * b, bundle, cfg, list(range(b)))  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            pipeline.colorize_batch([sk] * b, [hi] * b, bundle, cfg, list(range(b)))
            times.append(time.perf_counter() - t0)
        result = {"batch": b, "images_per_s": b / statistics.median(times)}
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=None, help="default: SampleConfig's default")
    parser.add_argument("--sizes", default="256,512,1024,2048,4096")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child-size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps is None:
        from sketchcolor.config import SampleConfig

        args.steps = SampleConfig().steps
    if args.child_size or args.child_batch:
        child(args)
        return
    base = [
        sys.executable,
        __file__,
        "--sampler",
        args.sampler,
        "--steps",
        str(args.steps),
        "--repeat",
        str(args.repeat),
    ]
    if args.model:
        base += ["--model", args.model]

    def run(extra: list[str]) -> dict:
        out = subprocess.run(base + extra, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    print(f"machine: {platform.machine()} {platform.processor()}; python {platform.python_version()}; "
          f"sampler {args.sampler}, {args.steps} steps; {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print()
    print(
        "| size (px) | total (s) | sampling (s) | network (s) | per step (ms) | overhead | compose (s) | peak RSS (MB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in (int(s) for s in args.sizes.split(",")):
        r = run(["--child-size", str(size)])
        print(
            f"| {size} | {r['total']:.2f} | {r['sampling']:.2f} | {r['network']:.2f} | {1000 * r['per_step']:.1f} | "
            f"{1000 * r['overhead']:.0f} ms ({r['overhead_pct']:.1f} %) | {r['compose']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    print()
    print("| batch size | images/s (512 px) |")
    print("| --- | --- |")
    for b in (int(s) for s in args.batch_sizes.split(",")):
        r = run(["--child-batch", str(b)])
        print(f"| {b} | {r['images_per_s']:.2f} |")


if __name__ == "__main__":
    main()
