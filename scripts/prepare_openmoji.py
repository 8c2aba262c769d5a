#!/usr/bin/env python
"""Render OpenMoji into paired (line art, colour) PNGs for training and evaluating sketchcolor.

Source
    The OpenMoji npm package (``openmoji`` on the npm registry), either already unpacked
    (``--package DIR``, the folder holding ``package.json``, ``black/svg``, ``color/svg`` and
    ``data/openmoji.json``) or as the ``.tgz`` that ``npm pack openmoji`` produces (``--tarball``).
    OpenMoji is licensed CC BY-SA 4.0; the attribution is written into ``OUT/manifest.json``.

Which emoji are kept (the exact rule)
    1. Only stems (file names without ``.svg``) present in BOTH ``black/svg`` and ``color/svg``.
    2. Drop stems whose hexcode is not a ``hexcode`` in ``data/openmoji.json`` (counted as
       ``not_in_metadata``).
    3. Drop flags, whose line art is a bare rectangle: every entry whose ``group`` is ``flags``
       (270 in 17.0.0), and also every entry whose ``subgroups`` is ``subdivision-flag`` or ``flags``
       in another group (``extras-unicode`` / ``extras-openmoji``; 54 in 17.0.0, nearly all of
       them a plain rectangle too). Counted separately as ``flags_group`` and ``flag_subgroups``.

Split (the exact rule)
    Many OpenMoji share one line drawing (skin-tone and hair-colour variants: 4171 kept emoji have
    only ~2030 distinct sketches), so splitting item by item would put most test sketches in train
    too. The default ``--split-by sketch`` therefore splits whole groups of identical sketches:
      * each kept stem's line art is rendered at a fixed 72x72 px (the SVG view box size, whatever
        ``--size`` is); its key is the sha256 of the alpha channel quantised to 8 levels
        (``alpha // 32``), so drawings that differ only in anti-aliasing share a key;
      * groups (stems sharing a key) are ordered by their smallest stem (Python string order);
      * group number ``g`` goes to ``test`` if ``g % K == K - 1`` (K = ``--test-every``, default 10),
        else to ``train``; every stem goes where its group goes.
    ``--split-by item`` is the plain rule instead: the kept stems sorted as Python strings, index
    ``i`` to ``test`` if ``i % K == K - 1``, else ``train``.
    Either way the split depends only on the package contents, K and the rule (and, for ``sketch``,
    resvg's rasteriser, whose version is recorded), never on ``--size``, ``--workers`` or ``--limit``
    (``--limit N`` renders only the first N sorted stems, each keeping its split in the full list).

Output
    ``OUT/{train,test}/sketch/STEM.png``  line art, 8-bit greyscale ('L'), black lines on white;
    ``OUT/{train,test}/color/STEM.png``   colour, 8-bit RGB, composited onto white;
    ``OUT/manifest.json``                 source, licence, attribution, size, split rule, stems per
                                          split and ``data_digest``.

    Both images are rendered with resvg (via ``resvg_py``) at ``--size`` x ``--size`` pixels (the SVGs
    are square, 72x72 view boxes) and alpha-composited onto opaque white. Files that already exist
    are skipped, so an interrupted run can be resumed; each file is written to a temporary name and
    moved into place with ``os.replace``, so a file that exists is complete.

``data_digest`` is the sha256 (hex) of the UTF-8 text made of one line ``"{split}/{stem}\\n"`` for
every rendered item, sorted, followed by ``"size={size}\\n"``.

Example
    python scripts/prepare_openmoji.py --package /work/data/package --out data/openmoji128 --size 128
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

LICENCE = "CC BY-SA 4.0"
ATTRIBUTION = "OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0"
ATTRIBUTION_URL = "https://openmoji.org"
LICENCE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
EXCLUDED_GROUPS = frozenset({"flags"})
EXCLUDED_SUBGROUPS = frozenset({"subdivision-flag", "flags"})
SPLIT_RULES = {
    "item": "kept stems sorted as Python strings; index i goes to test if i % {k} == {km1}, else train",
    "sketch": (
        "kept stems grouped by sha256 of (alpha // 32) of the line art rendered at 72x72 px; groups "
        "ordered by smallest stem; group g goes to test if g % {k} == {km1}, else train"
    ),
}
CANONICAL_SIZE = 72
DIGEST_RULE = 'sha256 of sorted lines "{split}/{stem}\\n" followed by "size={size}\\n" (UTF-8)'


# --------------------------------------------------------------------------------------------- source


def find_package_root(directory: Path) -> Path:
    """Return the folder holding package.json, black/svg and color/svg at or just under ``directory``."""
    candidates = [directory, *sorted(p for p in directory.iterdir() if p.is_dir())]
    for cand in candidates:
        if (cand / "black" / "svg").is_dir() and (cand / "color" / "svg").is_dir():
            return cand
    raise SystemExit(
        f"error: no black/svg and color/svg folders in {directory} (is it the openmoji package?)"
    )


def extract_tarball(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball, "r:*") as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # Python < 3.11.4: refuse absolute paths and parent references ourselves.
            for member in tf.getmembers():
                name = Path(member.name)
                if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                    raise SystemExit(f"error: refusing suspicious tar member {member.name!r}")
            tf.extractall(dest)  # noqa: S202 - members checked above
    return find_package_root(dest)


def select_stems(root: Path) -> tuple[list[str], dict[str, int]]:
    """Apply the keep rule in the module docstring; return sorted kept stems and excluded counts."""
    black = {p.stem for p in (root / "black" / "svg").glob("*.svg")}
    color = {p.stem for p in (root / "color" / "svg").glob("*.svg")}
    meta_path = root / "data" / "openmoji.json"
    if not meta_path.is_file():
        raise SystemExit(f"error: metadata {meta_path} not found")
    meta = {m["hexcode"]: m for m in json.loads(meta_path.read_text(encoding="utf-8"))}

    excluded = {
        "only_in_black": len(black - color),
        "only_in_color": len(color - black),
        "not_in_metadata": 0,
        "flags_group": 0,
        "flag_subgroups": 0,
    }
    kept = []
    for stem in sorted(black & color):
        entry = meta.get(stem)
        if entry is None:
            excluded["not_in_metadata"] += 1
        elif entry.get("group") in EXCLUDED_GROUPS:
            excluded["flags_group"] += 1
        elif entry.get("subgroups") in EXCLUDED_SUBGROUPS:
            excluded["flag_subgroups"] += 1
        else:
            kept.append(stem)
    return kept, excluded


def assign_splits(stems: list[str], test_every: int, keys: dict[str, str] | None = None) -> dict[str, str]:
    """Map stem -> split (see the split rule in the module docstring).

    With ``keys`` (stem -> sketch key) whole groups of equal keys are split; without, single stems.
    """
    ordered = sorted(stems)
    if keys is None:
        return {s: ("test" if i % test_every == test_every - 1 else "train") for i, s in enumerate(ordered)}
    group_index: dict[str, int] = {}
    for s in ordered:  # first sighting in sorted order == ordering groups by their smallest stem
        group_index.setdefault(keys[s], len(group_index))
    return {s: ("test" if group_index[keys[s]] % test_every == test_every - 1 else "train") for s in ordered}


def data_digest(items: list[tuple[str, str]], size: int) -> str:
    text = "".join(sorted(f"{split}/{stem}\n" for split, stem in items)) + f"size={size}\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------ rendering


def render_rgba(svg_path: Path, size: int) -> np.ndarray:
    """Render an SVG to an (size, size, 4) uint8 RGBA array (straight alpha)."""
    import resvg_py

    png = resvg_py.svg_to_bytes(
        svg_string=svg_path.read_text(encoding="utf-8"), width=size, height=size, skip_system_fonts=True
    )
    with Image.open(io.BytesIO(bytes(png))) as im:
        rgba = np.asarray(im.convert("RGBA"))
    if rgba.shape[:2] != (size, size):
        raise ValueError(f"{svg_path.name}: rendered {rgba.shape[1]}x{rgba.shape[0]}, wanted {size}x{size}")
    return rgba


def render_on_white(svg_path: Path, size: int) -> np.ndarray:
    """Render an SVG to an (size, size, 3) uint8 array, alpha-composited onto white."""
    rgba = render_rgba(svg_path, size).astype(np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def sketch_key(job: tuple[str, str]) -> tuple[str, str]:
    """(root, stem) -> (stem, key): the grouping key of the stem's line art for ``--split-by sketch``."""
    root, stem = job
    try:
        alpha = render_rgba(Path(root) / "black" / "svg" / f"{stem}.svg", CANONICAL_SIZE)[..., 3]
    except Exception:  # a group of its own; render_item reports the failure
        return stem, f"unrendered:{stem}"
    return stem, hashlib.sha256((alpha // 32).tobytes()).hexdigest()


def save_atomic(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def render_item(job: tuple[str, str, str, str, int]) -> tuple[str, str, str | None]:
    """Render one (sketch, colour) pair. Returns (stem, status, error) with status rendered/skipped/failed."""
    root, out, split, stem, size = job
    sketch_out = Path(out) / split / "sketch" / f"{stem}.png"
    color_out = Path(out) / split / "color" / f"{stem}.png"
    if sketch_out.is_file() and color_out.is_file():
        return stem, "skipped", None
    try:
        if not sketch_out.is_file():
            line = render_on_white(Path(root) / "black" / "svg" / f"{stem}.svg", size)
            # Luma of a black-on-white drawing; OpenMoji line art uses black (#000) only.
            save_atomic(Image.fromarray(line, "RGB").convert("L"), sketch_out)
        if not color_out.is_file():
            rgb = render_on_white(Path(root) / "color" / "svg" / f"{stem}.svg", size)
            save_atomic(Image.fromarray(rgb, "RGB"), color_out)
    except Exception as exc:  # report and carry on; the run exits non-zero at the end
        return stem, "failed", f"{type(exc).__name__}: {exc}"
    return stem, "rendered", None


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--package", type=Path, help="unpacked openmoji npm package (has black/svg, color/svg)")
    src.add_argument("--tarball", type=Path, help="openmoji npm tarball (.tgz), extracted to a temp dir")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--size", type=int, default=128, help="output width and height in pixels (128)")
    parser.add_argument("--test-every", type=int, default=10, help="every K-th sorted item goes to test (10)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (2)")
    parser.add_argument(
        "--split-by",
        choices=("sketch", "item"),
        default="sketch",
        help="split whole groups of identical sketches (default) or single items",
    )
    parser.add_argument("--limit", type=int, default=None, help="render only the first N sorted items")
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error("--size must be at least 8")
    if args.test_every < 2:
        parser.error("--test-every must be at least 2")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def run(args: argparse.Namespace, root: Path) -> int:
    t0 = time.perf_counter()
    package_json = (
        json.loads((root / "package.json").read_text(encoding="utf-8"))
        if (root / "package.json").is_file()
        else {}
    )
    kept, excluded = select_stems(root)
    args.out.mkdir(parents=True, exist_ok=True)
    status_counts = {"rendered": 0, "skipped": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    pool = None if args.workers == 1 else multiprocessing.get_context("spawn").Pool(args.workers)
    pmap = map if pool is None else (lambda f, xs: pool.imap_unordered(f, xs, chunksize=16))
    try:
        keys = None
        if args.split_by == "sketch":
            keys = dict(pmap(sketch_key, [(str(root), s) for s in kept]))
            print(
                f"  {len(set(keys.values()))} distinct sketches among {len(kept)} "
                f"({time.perf_counter() - t0:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        splits = assign_splits(kept, args.test_every, keys)
        chosen = kept if args.limit is None else kept[: args.limit]
        jobs = [(str(root), str(args.out), splits[s], s, args.size) for s in chosen]
        for done, (stem, status, err) in enumerate(pmap(render_item, jobs), start=1):
            status_counts[status] += 1
            if err:
                failures.append((stem, err))
            if done % 500 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    failed = {s for s, _ in failures}
    per_split = {"train": [], "test": []}
    for s in chosen:
        if s not in failed:
            per_split[splits[s]].append(s)
    items = [(split, s) for split, stems in per_split.items() for s in stems]
    manifest = {
        "source": {
            "name": package_json.get("name", "openmoji"),
            "version": package_json.get("version"),
            "homepage": package_json.get("homepage", ATTRIBUTION_URL),
        },
        "licence": LICENCE,
        "licence_url": LICENCE_URL,
        "attribution": ATTRIBUTION,
        "attribution_url": ATTRIBUTION_URL,
        "size": args.size,
        "renderer": _renderer_version(),
        "keep_rule": (
            "stems in both black/svg and color/svg, whose hexcode is in data/openmoji.json, "
            f"excluding group in {sorted(EXCLUDED_GROUPS)} and subgroups in "
            f"{sorted(EXCLUDED_SUBGROUPS)}"
        ),
        "excluded": excluded,
        "split_by": args.split_by,
        "split_rule": SPLIT_RULES[args.split_by].format(k=args.test_every, km1=args.test_every - 1),
        "distinct_sketches": None if keys is None else len(set(keys.values())),
        "test_every": args.test_every,
        "limit": args.limit,
        "counts": {k: len(v) for k, v in per_split.items()},
        "data_digest": data_digest(items, args.size),
        "data_digest_rule": DIGEST_RULE,
        "stems": per_split,
    }
    manifest_path = args.out / "manifest.json"
    tmp = manifest_path.with_name(f".manifest.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)

    secs = time.perf_counter() - t0
    print(f"openmoji {manifest['source']['version']} -> {args.out} at {args.size}px")
    print(
        f"  kept {len(kept)} (rendering {len(chosen)}): train {len(per_split['train'])}, "
        f"test {len(per_split['test'])}"
    )
    print("  excluded: " + ", ".join(f"{k} {v}" for k, v in excluded.items()))
    print(
        f"  rendered {status_counts['rendered']}, skipped (already there) {status_counts['skipped']}, "
        f"failed {status_counts['failed']}"
    )
    for stem, err in failures[:20]:
        print(f"  FAILED {stem}: {err}", file=sys.stderr)
    print(f"  data digest {manifest['data_digest']}")
    print(f"  {secs:.1f} s")
    return 1 if failures else 0


def _renderer_version() -> str:
    import resvg_py

    return f"resvg_py {getattr(resvg_py, '__version__', '?')} (resvg {getattr(resvg_py, '__resvg_version__', '?')})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.package is not None:
        if not args.package.is_dir():
            raise SystemExit(f"error: --package {args.package} is not a folder")
        return run(args, find_package_root(args.package))
    if not args.tarball.is_file():
        raise SystemExit(f"error: --tarball {args.tarball} not found")
    with tempfile.TemporaryDirectory(prefix="openmoji-") as tmp:
        print(f"extracting {args.tarball} ...", file=sys.stderr)
        return run(args, extract_tarball(args.tarball, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
