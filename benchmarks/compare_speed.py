"""This tree's colourising speed against another checkout's, in one run, with one model.

Usage (from the repository root; the baseline is any earlier commit checked out beside it)::

    git worktree add ../sketchcolor-base <commit>
    python benchmarks/compare_speed.py --baseline ../sketchcolor-base \\
        --model data/models/v1.safetensors --json docs/compare-speed.json

For each tree (its ``src`` first on ``PYTHONPATH``, every measurement in a fresh process, the
same model file and DDIM ``--steps`` (default 2, the default when issue 14 measured), examples/fox.png
and its hints resized) it measures:

* ``colorize`` at 512 and 4096 px: wall time of ``pipeline.colorize`` from memory, median of
  ``--repeat`` runs after a warm-up (bench_colorize.py's child);
* ``colorize_batch`` throughput at 512 px for batch sizes 1, 4 and 16 (images/s);
* ``batch`` folder throughput: ``python -m sketchcolor batch`` on ``--pages`` 512 px pages
  (all different: the fox rotated and mirrored): pages - 1 over the wall time of the whole
  command minus that of the same command on a folder of one page (start-up and the first
  page's warm-up are not counted);
* cold start: ``import sketchcolor``, ``import sketchcolor.cli``, ``sketchcolor --help``, and
  one ``sketchcolor colorize`` of a 512 px page end to end, each the median of 3 processes;
  model loading alone (``pipeline.load_model`` after imports).

and prints the ratios (this tree / baseline). Run on a quiet machine: a training run halves
what two cores give. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_colorize.py"


def run(tree: Path, args: list[str], **kw) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True, **kw)


def timed(tree: Path, args: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(tree, args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def child_json(tree: Path, extra: list[str], model: str, repeat: int) -> dict:
    out = run(tree, [sys.executable, str(BENCH), "--model", model, "--repeat", str(repeat), *extra])
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_pages(folder: Path, count: int) -> None:
    from PIL import Image

    sketch = Image.open(ROOT / "examples" / "fox.png").convert("RGB").resize((512, 512))
    hints = Image.open(ROOT / "examples" / "fox.hints.png").convert("RGBA").resize((512, 512), Image.NEAREST)
    folder.mkdir(parents=True)
    for k in range(count):
        s, h = sketch.rotate(90 * (k % 4)), hints.rotate(90 * (k % 4))
        if k // 4 % 2:
            s, h = s.transpose(Image.FLIP_LEFT_RIGHT), h.transpose(Image.FLIP_LEFT_RIGHT)
        s.save(folder / f"page-{k:03d}.png")
        h.save(folder / f"page-{k:03d}.hints.png")


def measure(
    tree: Path, model: str, repeat: int, pages: int, batch_size: int, sizes: tuple[int, int], steps: int
) -> dict:
    result: dict = {"tree": str(tree)}
    for size in sizes:
        r = child_json(tree, ["--child-size", str(size), "--steps", str(steps)], model, repeat)
        result[f"colorize_{size}_s"] = r["total"]
        result[f"compose_{size}_s"] = r["compose"]
    for b in (1, 4, 16):
        r = child_json(tree, ["--child-batch", str(b), "--steps", str(steps)], model, repeat)
        result[f"colorize_batch_{b}_images_per_s"] = r["images_per_s"]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        make_pages(tmp_path / "pages", pages)
        (tmp_path / "one").mkdir()
        for f in ("page-000.png", "page-000.hints.png"):
            shutil.copy(tmp_path / "pages" / f, tmp_path / "one" / f)
        cmd = [
            py,
            "-m",
            "sketchcolor",
            "batch",
            "--model",
            model,
            "--batch-size",
            str(batch_size),
            "--steps",
            str(steps),
            "--quiet",
        ]
        t_one = timed(
            tree, [*cmd, str(tmp_path / "one"), "-o", str(tmp_path / "out-one"), "--overwrite"], repeat
        )
        folder_times = []
        for _ in range(repeat):  # median of `repeat` runs: one run is at the mercy of the machine
            t0 = time.perf_counter()
            run(tree, [*cmd, str(tmp_path / "pages"), "-o", str(tmp_path / "out")])
            folder_times.append(time.perf_counter() - t0)
            shutil.rmtree(tmp_path / "out")
        t_full = statistics.median(folder_times)
        result["batch_cli_images_per_s"] = (pages - 1) / max(1e-9, t_full - t_one)
        result["cold_import_sketchcolor_s"] = timed(tree, [py, "-c", "import sketchcolor"])
        result["cold_import_cli_s"] = timed(tree, [py, "-c", "import sketchcolor.cli"])
        result["cold_help_s"] = timed(tree, [py, "-m", "sketchcolor", "--help"])
        result["cold_import_torch_s"] = timed(tree, [py, "-c", "import torch"])
        page = tmp_path / "pages" / "page-000.png"
        hints = tmp_path / "pages" / "page-000.hints.png"
        result["cold_colorize_512_s"] = timed(
            tree,
            [py, "-m", "sketchcolor", "colorize", str(page), "--hints", str(hints), "--model", model,
             "-o", str(tmp_path / "one.png"), "--overwrite", "--steps", str(steps), "--quiet"],
        )  # fmt: skip
        load = (
            "import time, sketchcolor.pipeline as p; t=time.perf_counter(); "
            f"p.load_model({model!r}, 'cpu'); print(time.perf_counter()-t)"
        )
        result["model_load_s"] = statistics.median(
            float(run(tree, [py, "-c", load]).stdout) for _ in range(3)
        )
    return result


def tree_parser(doc: str | None, model_help: str) -> argparse.ArgumentParser:
    """The options every this-tree-against-a-baseline script takes (``--json`` included)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--baseline", type=Path, required=True, help="checkout of the code to compare against"
    )
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=32, help="pages in the batch folder test")
    parser.add_argument("--batch-size", type=int, default=4, help="--batch-size of the batch command")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps everywhere (both trees alike)")
    parser.add_argument("--json", type=Path, default=None)
    return parser


def main() -> None:
    parser = tree_parser(__doc__, "one model file for both trees")
    parser.add_argument("--sizes", default="512,4096", help="small,large picture sizes (px)")
    args = parser.parse_args()
    model = str(Path(args.model).resolve())
    small, large = (int(v) for v in args.sizes.split(","))
    rows = {}
    for name, tree in (("baseline", args.baseline.resolve()), ("this", ROOT)):
        print(f"measuring {name}: {tree}", file=sys.stderr)
        rows[name] = measure(
            tree, model, args.repeat, args.pages, args.batch_size, (small, large), args.steps
        )
    keys = [k for k in rows["this"] if k != "tree"]
    ratios = {k: rows["this"][k] / rows["baseline"][k] for k in keys if rows["baseline"].get(k)}
    for name in rows:
        ratios[f"large_over_small_{name}"] = (
            rows[name][f"colorize_{large}_s"] / rows[name][f"colorize_{small}_s"]
        )
    doc = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "model": args.model,
        "rows": rows,
        "ratios_this_over_baseline": ratios,
    }
    print(f"{'measure':34s} {'baseline':>10s} {'this':>10s} {'ratio':>7s}")
    for k in keys:
        b, t = rows["baseline"][k], rows["this"][k]
        print(f"{k:34s} {b:10.3f} {t:10.3f} {t / b:7.2f}")
    print(
        f"{large}/{small} px time: baseline {ratios['large_over_small_baseline']:.2f}x, "
        f"this {ratios['large_over_small_this']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
