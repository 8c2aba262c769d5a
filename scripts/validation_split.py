"""Link a training run's validation pictures into a folder that ``sketchcolor eval --data`` reads.

Usage::

    python scripts/validation_split.py --data data/v2/train --val-count 128 --every 2 --out /tmp/val
    sketchcolor eval --data /tmp/val --reference-mode self-warped --hints-sweep 0 --no-lpips

The pictures are the ones ``sketchcolor train`` holds out for its validation loss (``data.val_count``
spread evenly through the sorted items, :func:`sketchcolor.data.split_indices`), so settings such as
``--reference-scale`` can be chosen on them without touching the held-out test sets. Only the
paired layout (``sketch/`` and ``color/``) is supported; the folder holds symbolic links named
after the items (``/`` becomes ``_``). A run that skipped unreadable files holds out other
pictures (its log says so).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sketchcolor.data import find_items, split_indices


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="the training folder (sketch/ and color/)")
    parser.add_argument("--val-count", type=int, default=64, help="data.val_count of the run")
    parser.add_argument("--every", type=int, default=1, help="keep every k-th validation picture")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the links")
    args = parser.parse_args()
    items, _ = find_items(args.data, "paired")
    _, val = split_indices(len(items), args.val_count)
    if args.out.exists():
        parser.error(f"{args.out}: exists already (choose a new folder)")
    for sub in ("sketch", "color"):
        (args.out / sub).mkdir(parents=True)
    for i in val[:: max(1, args.every)]:
        item = items[i]
        for sub, source in (("sketch", item.sketch), ("color", item.colour)):
            source = Path(source).resolve()
            os.symlink(source, args.out / sub / (item.name.replace("/", "_") + source.suffix))
    print(f"{args.out}: {len(val[:: max(1, args.every)])} validation pictures of {len(items)}")


if __name__ == "__main__":
    main()
