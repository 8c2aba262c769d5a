"""Check the picture README's main command wrote: the sketch's size, coloured, lines kept.

Usage: python .ci/check_output.py OUT.png SKETCH.png
"""

import sys

import numpy as np
from PIL import Image


def main() -> int:
    out_path, sketch_path = sys.argv[1:3]
    out = np.asarray(Image.open(out_path).convert("RGB")).astype(float)
    sketch = np.asarray(Image.open(sketch_path).convert("RGB")).astype(float)
    problems = []
    if out.shape != sketch.shape:
        problems.append(f"size {out.shape} differs from the sketch's {sketch.shape}")
    else:
        lines = sketch.max(axis=2) < 100
        if lines.any() and (out[lines] > sketch[lines] + 2).any():
            problems.append("line pixels are lighter than in the sketch")
    chroma = out.max(axis=2) - out.min(axis=2)
    if (chroma > 40).mean() < 0.05:
        problems.append(f"output is not coloured (only {(chroma > 40).mean():.1%} saturated pixels)")
    if out.std() < 5:
        problems.append("output is flat")
    if problems:
        print(f"{out_path}: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"{out_path}: ok ({out.shape[1]}x{out.shape[0]}, {(chroma > 40).mean():.0%} coloured pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
