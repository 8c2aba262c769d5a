"""``sketchcolor batch --reference`` throughput, this tree against another checkout, in one run.

Usage (from the repository root; the baseline is any earlier commit checked out beside it)::

    git worktree add ../sketchcolor-base <commit>
    python benchmarks/batch_reference.py --baseline ../sketchcolor-base \\
        --model src/sketchcolor/weights/default.safetensors

One reference for a whole folder (a chapter with its character sheet). For each tree (its ``src``
first on ``PYTHONPATH``, each command in a fresh process, the same model file, which must take a
reference, and DDIM ``--steps``) and each reference size in ``--reference-sizes``: pages - 1 over
the wall time of ``python -m sketchcolor batch PAGES --reference REF`` minus that of the same
command on a folder of one page, median of ``--repeat`` runs (the pages of compare_speed.py:
``--pages`` 512 px pages, the fox rotated and mirrored, with their hints). The reference is the
strawberry example's hints laid on white, scaled to the size: flat colours, as on a colour
sheet. Run on a quiet machine. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compare_speed import ROOT, make_pages, run, timed, tree_parser


def make_reference(path: Path, size: int) -> None:
    from PIL import Image

    hints = Image.open(ROOT / "examples" / "strawberry.hints.png").convert("RGBA")
    sheet = Image.new("RGB", hints.size, (255, 255, 255))
    sheet.paste(hints, mask=hints.getchannel("A"))
    sheet.resize((size, size), Image.Resampling.NEAREST).save(path)


def measure(tree: Path, model: str, pages: Path, one: Path, ref: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "sketchcolor", "batch", "--model", model, "--reference", str(ref),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--quiet"]  # fmt: skip
    out_one = pages.parent / "out-one"
    t_one = timed(tree, [*cmd, str(one), "-o", str(out_one), "--overwrite"], args.repeat)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run(tree, [*cmd, str(pages), "-o", str(pages.parent / "out")])
        times.append(time.perf_counter() - t0)
        shutil.rmtree(pages.parent / "out")
    return (args.pages - 1) / max(1e-9, statistics.median(times) - t_one)


def main() -> None:
    parser = tree_parser(__doc__, "a model file with reference conditioning, for both trees")
    parser.add_argument("--reference-sizes", default="512,2048", help="reference picture sizes (px)")
    args = parser.parse_args()
    model = str(Path(args.model).resolve())
    rows: dict[str, dict[str, float]] = {"baseline": {}, "this": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pages(root / "pages", args.pages)
        (root / "one").mkdir()
        for f in ("page-000.png", "page-000.hints.png"):
            shutil.copy(root / "pages" / f, root / "one" / f)
        for size in (int(v) for v in args.reference_sizes.split(",")):
            ref = root / f"reference-{size}.png"
            make_reference(ref, size)
            for name, tree in (("baseline", args.baseline.resolve()), ("this", ROOT)):
                print(f"measuring {name} with a {size} px reference: {tree}", file=sys.stderr)
                rows[name][f"batch_reference_{size}_images_per_s"] = measure(
                    tree, model, root / "pages", root / "one", ref, args
                )
    print(f"{'measure':36s} {'baseline':>10s} {'this':>10s} {'ratio':>7s}")
    for k, b in rows["baseline"].items():
        t = rows["this"][k]
        print(f"{k:36s} {b:10.3f} {t:10.3f} {t / b:7.2f}")
    if args.json:
        args.json.write_text(
            json.dumps({"model": args.model, "pages": args.pages, "rows": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
