"""Every number of the v2 model card (issues 11 and 12), as cached cells in one JSON file.

Usage — the full card, from the repository root, once the v2 model is trained::

    python benchmarks/model_card_v2.py --model runs/v2/last.safetensors \\
        --v1-model data/models/v1.safetensors --data data/v2/test \\
        --json docs/model-card-v2-scores.json --markdown docs/model-card-v2-tables.md \\
        --figures docs/images/v2

(``data/models/v1.safetensors`` is the v1 bundled model:
``git show 52a61af:src/sketchcolor/weights/default.safetensors > data/models/v1.safetensors``.)
An interrupted run resumes where it stopped: rerun the same command. Cells can be added later
(``--subsets``, ``--strokes``, a method that was skipped) and only the missing ones are computed.
Time: 11 sampling passes per item (v2 and v1 at 0, 2, 4, 8 strokes; v2 with the self-warped
reference, with it and 4 strokes, with a palette) over 2,186 items, plus the baselines. Measured
with ``--limit 16`` on the 2-core development machine while a training run held both cores
(torch threads 1): 0.26-0.35 s per item and sampling pass for a v2-sized model, 0.32 s for v1,
G'MIC 0.16 s, region fill 0.08 s, the network-alone and histogram cells 0.06 s each; about
2.5 hours in all under that load, perhaps five times less on an idle machine (docs/performance.md
measured 0.05 s per picture for v1 there).

A quick check on the first 16 items of each subset::

    python benchmarks/model_card_v2.py --model runs/v2/last.safetensors --limit 16 \\
        --json /tmp/card16.json --figures /tmp/card16

Parts (``--only hints,reference,figures``; default: hints and reference, and figures when
``--figures`` is given). What each cell, metric, baseline and target rule means is written up in
docs/model-card-v2-method.md; in short:

* **Hint rows** (issue 12), key ``hints/SUBSET/K/METHOD``: every subset (openmoji, openclipart,
  fluent, twemoji, pencil) x exactly K synthetic strokes (0, 2, 4, 8) x method: ``v2`` (the whole
  pipeline with its defaults), ``v2_network`` (the same samples with ``hint_regions=False``: the
  network colours hinted regions itself), ``v1`` (the v1 whole pipeline), ``region_fill`` and
  ``gmic`` (classical baselines, need hints), ``sketch`` (the uncoloured sketch, 0 strokes only;
  with no hints region fill and G'MIC return it too). Hints are ``sketchcolor eval``'s
  (``synthetic_hints(..., HintConfig(max_strokes=8), derive_seed(seed, "hints/" + name),
  num_strokes=K)``, drawn once at the v2 model's working resolution and given to every method);
  sampling seed ``derive_seed(seed, name)``. The v2 and v1 cells therefore equal the rows of
  ``sketchcolor eval --data DATA/SUBSET -m MODEL --hints-sweep 0,2,4,8 --no-lpips``.
* **Reference rows** (issue 11), key ``reference/SUBSET/CASE``, v2 only: ``none``;
  ``self_warped`` (``evaluation.self_warped_reference``, seed ``derive_seed(seed, "reference/" +
  name)``); ``histogram_match`` (the classical baseline: the ``none`` output's colour layer matched
  to the self-warped reference's a and b histograms in LAB with
  ``skimage.exposure.match_histograms``, L kept from the output, lines multiplied back);
  ``strokes4`` (4 strokes, no reference); ``self_warped+strokes4``; ``palette`` (the reference
  replaced by a strip of 5 swatches of the truth's main colours, :func:`main_colours`).
* **Metrics** per cell (means over the scored items, as ``EvalReport.means``): PSNR (capped at
  60 dB per item), SSIM, CIEDE2000, CIEDE2000 at hinted pixels off the lines, colourfulness of the
  outputs and of the truths and ``colourfulness_ratio``; ``n`` (scored), ``n_failed`` (with the
  failures listed), ``n_hinted``, ``seconds``.
* **Target checks**, from the cells, printed as a pass/fail table with the numbers
  (:func:`hint_targets`, :func:`reference_targets`).
* **Figures** (``--figures DIR``): ``hints-SUBSET.png`` (sketch | hints | v2 | v1 | region fill |
  G'MIC | v2 without hints | truth) and ``reference-SUBSET.png`` (sketch | reference | v2 with it |
  histogram matching | v2 without | palette | v2 with the palette | truth), a few rows per subset
  at fixed sorted positions.

**The cache.** ``--json`` holds ``{"cells": {key: {metric: mean, "n": ..., "n_failed": ...,
"seconds": ..., "settings": {...}}}}`` and is rewritten atomically after each cell. A cell is
reused only when its ``settings`` (model digest, sampler settings, seed, the items and their file
contents, hint resolution, this script's ``CELL_VERSION``; ``reference_snap`` only in cells sampled
with a reference, the only ones it changes) equal the current run's; otherwise it is
computed again (and replaced). Tables and target checks show only the cells of the current run's
subsets, stroke counts and methods, all of the current settings. A run (one sampling pass) that
serves several cells is charged to the first of them; a cell equal to another by construction
(``reference/S/none`` is ``hints/S/0/v2``, ``reference/S/strokes4`` is ``hints/S/4/v2``) is copied
from it with ``same_as`` and 0 seconds.

**Honesty.** Every method gets the same items and the same hints; an item that cannot be loaded,
sampled or scored is a failure of that cell (counted, listed), never dropped; a skipped method
(``--skip``, or G'MIC not installed) leaves its cells missing and the target rules that need them
"missing", never passed.

Not part of the test suite (tests/test_model_card_tools.py tests its helpers).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from model_card import gmic_baseline, region_fill_baseline  # noqa: E402

from sketchcolor import __version__  # noqa: E402
from sketchcolor.checkpoint import ModelBundle  # noqa: E402
from sketchcolor.color import lab_to_rgb, rgb_to_lab  # noqa: E402
from sketchcolor.compose import sketch_lightness  # noqa: E402
from sketchcolor.conditioning import LINE_LEVEL, Conditioning, HintLayer  # noqa: E402
from sketchcolor.config import HintConfig, SampleConfig, check_seed  # noqa: E402
from sketchcolor.evaluation import (  # noqa: E402
    EvalReport,
    ItemResult,
    find_pairs,
    find_test_set,
    score_pair,
    self_warped_reference,
    synthetic_hints,
)
from sketchcolor.io import load_rgb, write_bytes_atomic  # noqa: E402
from sketchcolor.pipeline import _finish, _prepare, derive_seed, load_model, sample  # noqa: E402

SUBSETS = ("openmoji", "openclipart", "fluent", "twemoji", "pencil")
STROKES = (0, 2, 4, 8)
#: Methods of the hint rows; ``sketch`` only at 0 strokes, ``region_fill``/``gmic``/``v2_network``
#: only with hints (without hints the first two return the sketch and the last equals ``v2``).
HINT_METHODS = ("v2", "v2_network", "v1", "region_fill", "gmic", "sketch")
REFERENCE_CASES = ("none", "self_warped", "histogram_match", "strokes4", "self_warped+strokes4", "palette")
#: Strokes of the reference + hints case.
REFERENCE_STROKES = 4
#: Synthetic hints exactly as ``sketchcolor eval`` draws them (its ``--max-strokes`` default).
HINTS = HintConfig(max_strokes=8)
#: Change when a measurement changes, so that cached cells are computed again.
CELL_VERSION = 1
#: Swatches of the palette case.
PALETTE_SIZE = 5
#: Target rules (docs/model-card-v2-method.md).
OPENMOJI_PSNR_TOLERANCE_DB = 0.2
NETWORK_HINT_DELTA_E = 3.0
COLOURFULNESS_RATIO_MIN = 0.7
REFERENCE_GAIN = 0.30
METHOD_NAMES = {
    "v2": "v2 (pipeline)",
    "v2_network": "v2 network alone",
    "v1": "v1 (pipeline)",
    "region_fill": "region fill",
    "gmic": "G'MIC smart colouring",
    "sketch": "sketch, uncoloured",
}
CASE_NAMES = {
    "none": "no reference",
    "self_warped": "self-warped reference",
    "histogram_match": "histogram matching (no-reference output, reference's a, b)",
    "strokes4": "4 strokes, no reference",
    "self_warped+strokes4": "self-warped reference + 4 strokes",
    "palette": "palette strip (5 main colours of the truth)",
}

Output = np.ndarray | str  # (H, W, 3) uint8 picture, or why this item failed


# ---------------------------------------------------------------------------------------- items


@dataclasses.dataclass
class Item:
    """One test pair (8-bit tensors, to keep a subset small in memory) or why it cannot be used."""

    name: str
    sketch_u8: torch.Tensor | None = None  # (1, 3, H, W) uint8
    truth_u8: torch.Tensor | None = None
    error: str | None = None

    @property
    def sketch(self) -> torch.Tensor:
        assert self.sketch_u8 is not None
        return self.sketch_u8.float() / 255.0

    @property
    def truth(self) -> torch.Tensor:
        assert self.truth_u8 is not None
        return self.truth_u8.float() / 255.0


def load_items(folder: Path, limit: int = 0) -> tuple[list[Item], str]:
    """The items of a test set in sorted order (the first ``limit``; 0: all) and their digest.

    Like ``sketchcolor eval``: a sketch without a truth, a truth without a sketch, a duplicate
    name, an unreadable file or a size mismatch is a failed item, not a dropped one. The digest
    covers the names and the bytes of every file used.
    """
    sketch_dir, color_dir = find_test_set(folder)
    pairing = find_pairs(sketch_dir, color_dir, pred_role="sketch", skip_side_files=False)
    entries: list[tuple[str, Any]] = [(p.name, p) for p in pairing.pairs]
    entries += [(p.name, p.reason) for p in pairing.problems]
    entries += [
        (n, f"no sketch {n}.* in {sketch_dir} for this ground truth") for n in pairing.unmatched_truths
    ]
    entries.sort(key=lambda e: e[0])
    if limit:
        entries = entries[:limit]
    digest = hashlib.sha256()
    items = []
    for name, entry in entries:
        digest.update(name.encode() + b"\0")
        if isinstance(entry, str):
            items.append(Item(name, error=entry))
            continue
        try:
            for path in (entry.pred, entry.truth):
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            sketch, truth = load_rgb(entry.pred), load_rgb(entry.truth)
            if sketch.shape != truth.shape:
                raise ValueError(
                    f"the sketch is {sketch.shape[-1]}x{sketch.shape[-2]} "
                    f"but the ground truth is {truth.shape[-1]}x{truth.shape[-2]}"
                )
        except Exception as exc:  # noqa: BLE001 - a bad item is a failed item
            items.append(Item(name, error=f"{type(exc).__name__}: {exc}"))
            continue
        items.append(Item(name, to_u8(sketch), to_u8(truth)))
    return items, digest.hexdigest()[:16]


def to_u8(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb.clamp(0, 1) * 255.0).round().to(torch.uint8)


def u8_to_tensor(picture: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1] (as ``io.image_to_tensor``)."""
    return torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def tensor_to_u8(rgb: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded as the pipeline writes pictures."""
    return (rgb[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def item_hints(item: Item, strokes: int, seed: int, resolution: int) -> HintLayer:
    """The item's synthetic hints, exactly as ``sketchcolor eval --hints-sweep`` draws them."""
    return synthetic_hints(
        item.truth,
        item.sketch,
        HINTS,
        derive_seed(seed, f"hints/{item.name}"),
        resolution=resolution,
        num_strokes=strokes,
    )


def off_lines(layer: HintLayer, sketch_rgb: torch.Tensor) -> HintLayer:
    """The hinted pixels off the lines (where ``evaluate_model`` measures the hint error)."""
    keep = (sketch_lightness(sketch_rgb) >= LINE_LEVEL).to(layer.mask.dtype)
    return HintLayer(layer.rgb * keep, layer.mask * keep)


# -------------------------------------------------------------------------------- the baselines


def histogram_match_baseline(
    flat_u8: np.ndarray, reference_rgb: torch.Tensor, sketch_u8: torch.Tensor
) -> np.ndarray:
    """The classical reference baseline: an output's colours matched to a reference's histogram.

    The colour layer (no lines) is converted to LAB and its a and b channels are matched to the
    reference's (``skimage.exposure.match_histograms``, each channel's cumulative histogram on its
    own). L is kept from the output: in line art the sketch, not the reference, sets the lightness
    of the picture (lines and paper). Back to sRGB (gamut clipped as ``color.lab_to_rgb``), the
    sketch's lines are multiplied on top and the result rounded to 8 bits, as the pipeline does.

    Args:
        flat_u8: (H, W, 3) uint8 colour layer (``keep_flats`` of the no-reference output).
        reference_rgb: (1, 3, h, w) reference, sRGB in [0, 1] (any size).
        sketch_u8: (1, 3, H, W) uint8 sketch.

    Returns:
        (H, W, 3) uint8.
    """
    from skimage.exposure import match_histograms

    out_lab = rgb_to_lab(u8_to_tensor(flat_u8).double())[0].permute(1, 2, 0).numpy()
    ref_lab = rgb_to_lab(reference_rgb.double())[0].permute(1, 2, 0).numpy()
    ab = match_histograms(out_lab[..., 1:], ref_lab[..., 1:], channel_axis=-1)
    lab = np.concatenate([out_lab[..., :1], ab], axis=-1)
    rgb = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1)[None]).float()
    picture = rgb.clamp(0, 1) * sketch_u8.float() + 0.5  # multiply, as compose.render_u8
    return picture[0].to(torch.uint8).permute(1, 2, 0).numpy()


def main_colours(
    truth_rgb: torch.Tensor,
    sketch_rgb: torch.Tensor | None = None,
    count: int = PALETTE_SIZE,
    *,
    levels: int = 8,
    min_distance: float = 10.0,
    paper: float = 240 / 255,
) -> list[tuple[float, float, float]]:
    """The truth's main colours: the most frequent quantised colours, as a user's palette would.

    Pixels on the sketch's lines (outline ink) and near-white paper (every channel at least
    ``paper``) are left out. The rest are binned on a ``levels``^3 RGB grid; bins are taken by
    pixel count (ties: lower bin index), each giving the mean colour of its pixels, and a bin
    whose colour lies within ``min_distance`` (CIE76 ΔE) of one already taken is skipped (one
    colour split by a bin edge). At most ``count`` colours, fewer when the picture has fewer.

    Args:
        truth_rgb: (1, 3, H, W) sRGB in [0, 1].
        sketch_rgb: (1, 3, H, W) sketch whose line pixels are left out, or None.
        count: Most colours returned.

    Returns:
        RGB triples in [0, 1], most frequent first; empty for a picture of paper and ink only.
    """
    rgb = truth_rgb[0].double().permute(1, 2, 0).reshape(-1, 3)
    keep = ~(rgb >= paper).all(dim=1)
    if sketch_rgb is not None:
        keep &= (sketch_lightness(sketch_rgb)[0, 0] >= LINE_LEVEL).reshape(-1)
    rgb = rgb[keep]
    if rgb.numel() == 0:
        return []
    q = (rgb * levels).floor().clamp(max=levels - 1).long()
    bins = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    counts = torch.bincount(bins, minlength=levels**3)
    order = sorted((int(b) for b in torch.nonzero(counts).flatten()), key=lambda b: (-int(counts[b]), b))
    chosen: list[torch.Tensor] = []
    chosen_lab: list[torch.Tensor] = []
    for b in order:
        colour = rgb[bins == b].mean(dim=0)
        lab = rgb_to_lab(colour.view(1, 3, 1, 1))[0, :, 0, 0]
        if any(float((lab - other).norm()) < min_distance for other in chosen_lab):
            continue
        chosen.append(colour)
        chosen_lab.append(lab)
        if len(chosen) == count:
            break
    return [(float(c[0]), float(c[1]), float(c[2])) for c in chosen]


def palette_strip(colours: Sequence[tuple[float, float, float]], swatch: int = 24) -> torch.Tensor:
    """A horizontal strip of equal square swatches, (1, 3, swatch, swatch * len(colours)).

    A picture without colours gives one white swatch (the reference then says "no colour").
    """
    if not colours:
        colours = [(1.0, 1.0, 1.0)]
    strip = torch.tensor(colours, dtype=torch.float32).T[:, None, :]  # (3, 1, k)
    return strip.repeat_interleave(swatch, dim=2).expand(3, swatch, swatch * len(colours))[None].clone()


def palette_reference(item: Item) -> torch.Tensor:
    return palette_strip(main_colours(item.truth, item.sketch))


def item_reference(item: Item, kind: str, seed: int) -> torch.Tensor | None:
    """The item's reference picture of a reference case (None: no reference)."""
    if kind == "self_warped":
        return self_warped_reference(item.truth, derive_seed(seed, f"reference/{item.name}"))
    if kind == "palette":
        return palette_reference(item)
    return None


# ------------------------------------------------------------------------------- model outputs


def error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {message[:300]}"


def sample_outputs(
    bundle: ModelBundle,
    sketches: Sequence[torch.Tensor],
    hints: Sequence[HintLayer | None],
    sample_config: SampleConfig,
    seeds: Sequence[int],
    *,
    references: Sequence[torch.Tensor | None] | None = None,
    network: bool = False,
    flats: bool = False,
) -> list[dict[str, np.ndarray]]:
    """``colorize_batch`` with one sampling pass for both ``hint_regions`` settings.

    Per item: ``"pipeline"`` = ``colorize_batch(...)[i].image`` (defaults: ``hint_regions=True``),
    ``"network"`` (with ``network``) = the same with ``hint_regions=False``, and ``"flats"`` (with
    ``flats``) = its ``keep_flats`` colour layer, all as (H, W, 3) uint8. The network output does
    not depend on ``hint_regions`` (only the composition after it does), so it is sampled once.
    This goes through the pipeline's own steps (``_prepare``, ``sample``, ``_finish``) in
    ``colorize_batch``'s order; tests/test_model_card_tools.py checks that the pictures are the
    ones ``colorize_batch`` returns.
    """
    refs = list(references) if references is not None else [None] * len(sketches)
    preps = [_prepare(s, h, bundle, r) for s, h, r in zip(sketches, hints, refs, strict=True)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, prep in enumerate(preps):
        groups.setdefault(prep.padded, []).append(i)
    results: list[dict[str, np.ndarray]] = [{} for _ in preps]
    for members in groups.values():
        cond = Conditioning.cat([preps[i].cond for i in members])
        gens = [torch.Generator("cpu").manual_seed(check_seed(seeds[i])) for i in members]
        x0 = sample(bundle, cond, sample_config, gens).float().cpu()
        for j, i in enumerate(members):
            snap = sample_config.reference_snap
            image, colour = _finish(x0[j : j + 1], preps[i], bundle, False, True, flats, reference_snap=snap)
            results[i]["pipeline"] = np.asarray(image)
            if flats and colour is not None:
                results[i]["flats"] = np.asarray(colour)
            if network:
                results[i]["network"] = np.asarray(
                    _finish(x0[j : j + 1], preps[i], bundle, False, False, False, reference_snap=snap)[0]
                )
    return results


def safe_sample_outputs(
    bundle: ModelBundle,
    sketches: Sequence[torch.Tensor],
    hints: Sequence[HintLayer | None],
    sample_config: SampleConfig,
    seeds: Sequence[int],
    **kwargs: Any,
) -> list[dict[str, np.ndarray] | str]:
    """:func:`sample_outputs`, item by item when a batch fails, so one bad item fails alone."""
    try:
        return list(sample_outputs(bundle, sketches, hints, sample_config, seeds, **kwargs))
    except Exception as exc:  # noqa: BLE001 - find the culprit, keep the others
        if len(sketches) == 1:
            return [error_text(exc)]
        out: list[dict[str, np.ndarray] | str] = []
        refs = kwargs.pop("references", None) or [None] * len(sketches)
        for i in range(len(sketches)):
            out += safe_sample_outputs(
                bundle, [sketches[i]], [hints[i]], sample_config, [seeds[i]], references=[refs[i]], **kwargs
            )
        return out


# ------------------------------------------------------------------------------------ scoring


def score_outputs(
    items: Sequence[Item], outputs: Sequence[Output], layers: Sequence[HintLayer | None] | None = None
) -> dict[str, Any]:
    """Means over the scored items (``EvalReport.means``: the rules of ``sketchcolor eval``).

    Returns:
        ``{metric: mean, ..., "n": scored, "n_failed", "n_items", "n_hinted", "failures"}``.
    """
    results = []
    for k, (item, output) in enumerate(zip(items, outputs, strict=True)):
        layer = layers[k] if layers is not None else None
        if item.error is not None:
            results.append(ItemResult(item.name, error=item.error))
            continue
        if isinstance(output, str):
            results.append(ItemResult(item.name, error=output))
            continue
        try:
            hints = off_lines(layer, item.sketch) if layer is not None else None
            metrics = score_pair(u8_to_tensor(output), item.truth, hints)
        except Exception as exc:  # noqa: BLE001 - a bad item is a failed item
            results.append(ItemResult(item.name, error=error_text(exc)))
            continue
        results.append(ItemResult(item.name, metrics))
    report = EvalReport(tuple(results))
    summary = report.summary()
    cell: dict[str, Any] = dict(report.means())
    cell.update(
        n=report.n_scored, n_failed=report.n_failed, n_items=len(results), n_hinted=summary["n_hinted"]
    )
    cell["failures"] = [{"name": r.name, "error": r.error} for r in report.failures]
    return cell


# ------------------------------------------------------------------------------ target checks


@dataclasses.dataclass(frozen=True)
class Check:
    """One target rule on one subset (and stroke count): passed True/False, or None (missing)."""

    rule: str
    subset: str
    strokes: int | None
    passed: bool | None
    detail: str


CellGetter = Callable[[str], Mapping[str, Any] | None]


def _value(cell: Mapping[str, Any] | None, metric: str) -> float | None:
    if cell is None or not cell.get("n"):
        return None
    value = cell.get(metric)
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "missing"
    return f"{value:.3f}" if metric.endswith("ratio") else f"{value:.2f}"


def _compare(
    rule: str,
    subset: str,
    strokes: int | None,
    metric: str,
    mine: float | None,
    others: Mapping[str, float | None],
    better: str,
) -> Check:
    values = ", ".join(f"{name} {_fmt(v, metric)}" for name, v in others.items())
    detail = f"v2 {_fmt(mine, metric)} vs {values}"
    if mine is None or any(v is None for v in others.values()):
        return Check(rule, subset, strokes, None, detail)
    ok = all((mine < v) if better == "lower" else (mine > v) for v in others.values() if v is not None)
    return Check(rule, subset, strokes, ok, detail)


def hint_targets(cell: CellGetter, subsets: Iterable[str], strokes: Iterable[int]) -> list[Check]:
    """The hint rows' target rules (issue 12; docs/model-card-v2-method.md).

    * at 2, 4 and 8 strokes on every subset, the v2 pipeline has lower mean CIEDE2000 than v1,
      region fill and G'MIC, and higher PSNR than region fill and G'MIC, and than v1 except on
      openmoji;
    * on openmoji, at every stroke count, v2's PSNR is at most 0.2 dB below v1's (v1 was trained
      on openmoji alone, so there v2 may trade a little PSNR for generality);
    * at 2, 4 and 8 strokes on every subset, the v2 network alone (``hint_regions=False``) has a
      mean CIEDE2000 at hinted pixels of at most 3;
    * without hints on every subset, v2's ``colourfulness_ratio`` is at least 0.7 and its
      CIEDE2000 at most v1's.
    """
    checks: list[Check] = []
    strokes = list(strokes)
    for subset in subsets:
        for k in strokes:
            if k == 0:
                continue
            row = {m: cell(f"hints/{subset}/{k}/{m}") for m in HINT_METHODS}
            others = {"v1": "v1", "region fill": "region_fill", "G'MIC": "gmic"}
            checks.append(
                _compare(
                    "CIEDE2000: v2 below v1, region fill and G'MIC",
                    subset,
                    k,
                    "ciede2000",
                    _value(row["v2"], "ciede2000"),
                    {name: _value(row[m], "ciede2000") for name, m in others.items()},
                    "lower",
                )
            )
            psnr_others = {n: m for n, m in others.items() if not (subset == "openmoji" and m == "v1")}
            rule = "PSNR: v2 above " + (
                "region fill and G'MIC" if subset == "openmoji" else "v1, region fill and G'MIC"
            )
            checks.append(
                _compare(
                    rule,
                    subset,
                    k,
                    "psnr",
                    _value(row["v2"], "psnr"),
                    {name: _value(row[m], "psnr") for name, m in psnr_others.items()},
                    "higher",
                )
            )
            hint_error = _value(row["v2_network"], "hint_ciede2000")
            checks.append(
                Check(
                    f"v2 network alone: ΔE at hinted pixels <= {NETWORK_HINT_DELTA_E:g}",
                    subset,
                    k,
                    None if hint_error is None else hint_error <= NETWORK_HINT_DELTA_E,
                    f"{_fmt(hint_error)}",
                )
            )
        if subset == "openmoji":
            for k in strokes:
                v2 = _value(cell(f"hints/{subset}/{k}/v2"), "psnr")
                v1 = _value(cell(f"hints/{subset}/{k}/v1"), "psnr")
                passed = None if v2 is None or v1 is None else v2 >= v1 - OPENMOJI_PSNR_TOLERANCE_DB
                gap = f" ({v2 - v1:+.2f} dB)" if v2 is not None and v1 is not None else ""
                checks.append(
                    Check(
                        f"openmoji PSNR: v2 at most {OPENMOJI_PSNR_TOLERANCE_DB:g} dB below v1",
                        subset,
                        k,
                        passed,
                        f"v2 {_fmt(v2)} vs v1 {_fmt(v1)}{gap}",
                    )
                )
        if 0 in strokes:
            v2_cell, v1_cell = cell(f"hints/{subset}/0/v2"), cell(f"hints/{subset}/0/v1")
            ratio = _value(v2_cell, "colourfulness_ratio")
            checks.append(
                Check(
                    f"no hints: v2 colourfulness >= {COLOURFULNESS_RATIO_MIN:.0%} of the truth's",
                    subset,
                    0,
                    None if ratio is None else ratio >= COLOURFULNESS_RATIO_MIN,
                    f"ratio {_fmt(ratio, 'ratio')} (v1 {_fmt(_value(v1_cell, 'colourfulness_ratio'), 'ratio')})",
                )
            )
            mine, theirs = _value(v2_cell, "ciede2000"), _value(v1_cell, "ciede2000")
            checks.append(
                Check(
                    "no hints: v2 CIEDE2000 <= v1's",
                    subset,
                    0,
                    None if mine is None or theirs is None else mine <= theirs,
                    f"v2 {_fmt(mine)} vs v1 {_fmt(theirs)}",
                )
            )
    return checks


def reference_targets(cell: CellGetter, subsets: Iterable[str]) -> list[Check]:
    """The reference rows' target rules (issue 11; docs/model-card-v2-method.md).

    On every subset: with a self-warped reference and no hints, mean CIEDE2000 at least 30 % lower
    than without a reference, and lower than the histogram-matching baseline; with the reference
    and 4 strokes, lower than with the 4 strokes alone.
    """
    checks = []
    for subset in subsets:
        get = {case: _value(cell(f"reference/{subset}/{case}"), "ciede2000") for case in REFERENCE_CASES}
        warped, none = get["self_warped"], get["none"]
        gain = f", {1 - warped / none:.0%} lower" if warped is not None and none else ""
        checks.append(
            Check(
                f"self-warped reference: CIEDE2000 >= {REFERENCE_GAIN:.0%} below no reference",
                subset,
                0,
                None if warped is None or none is None else warped <= (1 - REFERENCE_GAIN) * none,
                f"{_fmt(warped)} vs {_fmt(none)}{gain}",
            )
        )
        match = get["histogram_match"]
        checks.append(
            Check(
                "self-warped reference: CIEDE2000 below histogram matching",
                subset,
                0,
                None if warped is None or match is None else warped < match,
                f"{_fmt(warped)} vs {_fmt(match)}",
            )
        )
        both, alone = get["self_warped+strokes4"], get["strokes4"]
        checks.append(
            Check(
                f"reference + {REFERENCE_STROKES} strokes: CIEDE2000 below {REFERENCE_STROKES} strokes alone",
                subset,
                REFERENCE_STROKES,
                None if both is None or alone is None else both < alone,
                f"{_fmt(both)} vs {_fmt(alone)}",
            )
        )
    return checks


def checks_table(checks: Sequence[Check]) -> str:
    lines = ["| target | subset | strokes | measured | result |", "| --- | --- | --- | --- | --- |"]
    for c in checks:
        result = "missing" if c.passed is None else "pass" if c.passed else "**FAIL**"
        strokes = "" if c.strokes is None else str(c.strokes)
        lines.append(f"| {c.rule} | {c.subset} | {strokes} | {c.detail} | {result} |")
    passed = sum(1 for c in checks if c.passed)
    failed = sum(1 for c in checks if c.passed is False)
    missing = sum(1 for c in checks if c.passed is None)
    lines.append("")
    lines.append(f"{passed} of {len(checks)} targets met, {failed} failed, {missing} could not be checked.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- tables


def _num(cell: Mapping[str, Any], metric: str, digits: int) -> str:
    value = cell.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def hints_table(cell: CellGetter, subset: str, strokes: Iterable[int]) -> str:
    lines = [
        "| strokes | method | PSNR (dB) ↑ | SSIM ↑ | CIEDE2000 ↓ | ΔE at hints ↓ | colourfulness | truth's | ratio | scored | failed | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in strokes:
        for method in HINT_METHODS:
            c = cell(f"hints/{subset}/{k}/{method}")
            if c is None:
                continue
            lines.append(
                f"| {k} | {METHOD_NAMES[method]} | {_num(c, 'psnr', 2)} | {_num(c, 'ssim', 3)} | "
                f"{_num(c, 'ciede2000', 2)} | {_num(c, 'hint_ciede2000', 2)} | {_num(c, 'colourfulness', 1)} | "
                f"{_num(c, 'colourfulness_truth', 1)} | {_num(c, 'colourfulness_ratio', 3)} | {c.get('n')} | "
                f"{c.get('n_failed')} | {c.get('seconds', 0):.0f} |"
            )
    return "\n".join(lines)


METRIC_NAMES = {"ciede2000": "CIEDE2000 ↓", "psnr": "PSNR (dB) ↑"}


def overview_table(cell: CellGetter, subsets: Sequence[str], strokes: Iterable[int], metric: str) -> str:
    """One metric of every hint cell: a row per subset and stroke count, a column per method."""
    lines = [
        "| subset | strokes | " + " | ".join(METHOD_NAMES[m] for m in HINT_METHODS) + " |",
        "| --- | --- |" + " --- |" * len(HINT_METHODS),
    ]
    digits = 2
    for subset in subsets:
        for k in strokes:
            values = []
            for m in HINT_METHODS:
                c = cell(f"hints/{subset}/{k}/{m}")
                values.append("" if c is None else _num(c, metric, digits))
            lines.append(f"| {subset} | {k} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def reference_table(cell: CellGetter, subset: str) -> str:
    lines = [
        "| case | PSNR (dB) ↑ | SSIM ↑ | CIEDE2000 ↓ | ΔE at hints ↓ | colourfulness ratio | scored | failed | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in REFERENCE_CASES:
        c = cell(f"reference/{subset}/{case}")
        if c is None:
            continue
        lines.append(
            f"| {CASE_NAMES[case]} | {_num(c, 'psnr', 2)} | {_num(c, 'ssim', 3)} | {_num(c, 'ciede2000', 2)} | "
            f"{_num(c, 'hint_ciede2000', 2)} | {_num(c, 'colourfulness_ratio', 3)} | {c.get('n')} | "
            f"{c.get('n_failed')} | {c.get('seconds', 0):.0f} |"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------- the cache


class Cache:
    """The JSON file of cells, rewritten atomically after each cell."""

    FORMAT = "sketchcolor-model-card-v2"

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.cells: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("format") != self.FORMAT:
                raise SystemExit(f"{path}: not a {self.FORMAT} file; pass another --json")
            self.cells = dict(document.get("cells", {}))

    def get(self, key: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        cell = self.cells.get(key)
        if cell is None or cell.get("settings") != json.loads(json.dumps(settings)):
            return None
        return cell

    def put(self, key: str, cell: dict[str, Any]) -> None:
        self.cells[key] = cell
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        document = {
            "format": self.FORMAT,
            "version": 1,
            "sketchcolor_version": __version__,
            "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads {torch.get_num_threads()}",
            "cells": dict(sorted(self.cells.items())),
        }
        text = json.dumps(finite_or_none(document), indent=1, ensure_ascii=False) + "\n"
        write_bytes_atomic(self.path, text.encode("utf-8"), overwrite=True)


def finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


# -------------------------------------------------------------------------------- the runner


@dataclasses.dataclass
class Models:
    """The two models, loaded on first use."""

    v2_path: str | None
    v1_path: str | None
    device: str
    v2_config: SampleConfig
    v1_config: SampleConfig
    _cache: dict[str, ModelBundle] = dataclasses.field(default_factory=dict)

    def get(self, which: str) -> ModelBundle:
        if which not in self._cache:
            path = self.v2_path if which == "v2" else self.v1_path
            if which == "v1" and (path is None or not Path(path).is_file()):
                raise SystemExit(
                    f"the v1 model is not at {path}: pass --v1-model PATH (e.g. `git show "
                    "52a61af:src/sketchcolor/weights/default.safetensors > data/models/v1.safetensors`) "
                    "or --skip v1"
                )
            self._cache[which] = load_model(path, self.device, cache=False)
        return self._cache[which]

    def sample_config(self, which: str) -> SampleConfig:
        return self.v2_config if which == "v2" else self.v1_config


@dataclasses.dataclass
class Subset:
    """One subset's items and the outputs computed for it (freed when no cell needs them)."""

    name: str
    items: list[Item]
    digest: str
    runs: dict[tuple[Any, ...], list[Any]] = dataclasses.field(default_factory=dict)
    hints: dict[int, list[HintLayer | str | None]] = dataclasses.field(default_factory=dict)


class Runner:
    """Computes cells from runs (one pass of a method over a subset's items), memoised per subset."""

    def __init__(self, args: argparse.Namespace, models: Models, cache: Cache) -> None:
        self.args = args
        self.models = models
        self.cache = cache
        self.notes: list[str] = []
        self.computed = 0
        self._hint_resolution: int | None = None

    # -- settings ---------------------------------------------------------------------------

    def hint_resolution(self) -> int:
        """Hints are drawn once, at the v2 model's working resolution, for every method."""
        if self._hint_resolution is None:
            self._hint_resolution = int(self.models.get("v2").config.resolution)
        return self._hint_resolution

    def settings(
        self, subset: Subset, methods: Iterable[str], with_reference: bool = False
    ) -> dict[str, Any]:
        """What a cell's scores depend on; ``reference_snap`` only for cells sampled with a reference."""
        settings: dict[str, Any] = {
            "cell_version": CELL_VERSION,
            "seed": self.args.seed,
            "limit": self.args.limit,
            "n_items": len(subset.items),
            "items_digest": subset.digest,
            "hint_resolution": self.hint_resolution(),
        }
        for m in methods:
            if m in ("v1", "v2"):
                bundle = self.models.get(m)
                sample = dataclasses.asdict(self.models.sample_config(m))
                if not with_reference:
                    sample.pop("reference_snap")  # no reference, no palette: cells from before it stay valid
                settings[m] = {"model": bundle.digest, "sample": sample}
            elif m == "palette":
                settings[m] = {"swatches": PALETTE_SIZE}
            elif m == "gmic":
                from gmic_baseline import DEFAULT_PARAMS, GMIC_COMMAND

                settings["gmic"] = {"command": GMIC_COMMAND, "params": list(DEFAULT_PARAMS)}
            else:
                settings[m] = True
        return settings

    # -- runs -------------------------------------------------------------------------------

    def run(self, subset: Subset, key: tuple[Any, ...]) -> list[Any]:
        """The outputs of one run (memoised): a list aligned with ``subset.items``."""
        if key not in subset.runs:
            subset.runs[key] = self._compute_run(subset, key)
        return subset.runs[key]

    def _hints(self, items: Sequence[Item], strokes: int) -> list[HintLayer | str | None]:
        """Each item's hints (None: no strokes or an unusable item; a text: why they failed)."""
        out: list[HintLayer | str | None] = []
        for item in items:
            if item.error is not None or strokes == 0:
                out.append(None)
                continue
            try:
                out.append(item_hints(item, strokes, self.args.seed, self.hint_resolution()))
            except Exception as exc:  # noqa: BLE001
                out.append(f"hints: {error_text(exc)}")
        return out

    def subset_hints(self, subset: Subset, strokes: int) -> list[HintLayer | str | None]:
        """The hints of every item of a subset, kept for one stroke count at a time (memory)."""
        if strokes not in subset.hints:
            subset.hints.clear()
            subset.hints[strokes] = self._hints(subset.items, strokes)
        return subset.hints[strokes]

    def _compute_run(self, subset: Subset, key: tuple[Any, ...]) -> list[Any]:
        kind = key[0]
        items = subset.items
        total = len(items)
        batch = self.args.batch_size
        out: list[Any] = []
        started = time.perf_counter()
        for start in range(0, total, batch):
            chunk = items[start : start + batch]
            if kind in ("v2", "v1"):
                hints = self.subset_hints(subset, key[1])[start : start + batch]
                out += self._model_chunk(kind, chunk, hints, key)
            elif kind in ("region_fill", "gmic"):
                out += self._baseline_chunk(
                    kind, chunk, self.subset_hints(subset, key[1])[start : start + batch]
                )
            elif kind == "sketch":
                out += [item.error or tensor_to_u8(item.sketch) for item in chunk]
            elif kind == "histogram_match":
                out += self._histogram_chunk(subset, start, chunk)
            else:
                raise ValueError(f"unknown run {key}")
            if kind in ("v2", "v1"):
                done = min(start + batch, total)
                rate = (time.perf_counter() - started) / done
                print(
                    f"  {subset.name} {key}: {done}/{total} items, {rate:.2f} s/item",
                    file=sys.stderr,
                    flush=True,
                )
        return out

    def _model_chunk(
        self, which: str, chunk: Sequence[Item], hints: Sequence[HintLayer | str | None], key: tuple[Any, ...]
    ) -> list[Any]:
        _, strokes, reference = key
        ready, refs, results = [], [], [None] * len(chunk)
        for i, (item, layer) in enumerate(zip(chunk, hints, strict=True)):
            if item.error is not None:
                results[i] = item.error
                continue
            if isinstance(layer, str):
                results[i] = layer
                continue
            try:
                refs.append(item_reference(item, reference, self.args.seed))
            except Exception as exc:  # noqa: BLE001
                results[i] = f"reference: {error_text(exc)}"
                continue
            ready.append(i)
        if ready:
            outputs = safe_sample_outputs(
                self.models.get(which),
                [chunk[i].sketch for i in ready],
                [hints[i] for i in ready],  # type: ignore[misc]
                self.models.sample_config(which),
                [derive_seed(self.args.seed, chunk[i].name) for i in ready],
                references=refs,
                network=which == "v2" and strokes > 0 and reference == "none",
                flats=which == "v2" and strokes == 0 and reference == "none",
            )
            for i, output in zip(ready, outputs, strict=True):
                results[i] = output
        return results

    def _baseline_chunk(
        self, kind: str, chunk: Sequence[Item], hints: Sequence[HintLayer | str | None]
    ) -> list[Any]:
        out: list[Any] = []
        for item, layer in zip(chunk, hints, strict=True):
            if item.error is not None or isinstance(layer, str) or layer is None:
                out.append(item.error or layer or "no hints")
                continue
            try:
                if kind == "region_fill":
                    out.append(tensor_to_u8(region_fill_baseline(item.sketch, layer)))
                else:
                    result = gmic_baseline(item.sketch, layer)
                    if result is None:
                        raise ImportError("the gmic package is not installed")
                    out.append(tensor_to_u8(result))
            except Exception as exc:  # noqa: BLE001
                out.append(error_text(exc))
        return out

    def _histogram_chunk(self, subset: Subset, start: int, chunk: Sequence[Item]) -> list[Any]:
        base = self.run(subset, ("v2", 0, "none"))[start : start + len(chunk)]
        out: list[Any] = []
        for item, output in zip(chunk, base, strict=True):
            if item.error is not None or isinstance(output, str):
                out.append(item.error or output)
                continue
            try:
                reference = item_reference(item, "self_warped", self.args.seed)
                assert item.sketch_u8 is not None and reference is not None
                out.append(histogram_match_baseline(output["flats"], reference, item.sketch_u8))
            except Exception as exc:  # noqa: BLE001
                out.append(error_text(exc))
        return out

    # -- cells ------------------------------------------------------------------------------

    def cell(
        self,
        subset: Subset,
        key: str,
        methods: Sequence[str],
        run_key: tuple[Any, ...],
        part: str | None,
        strokes: int,
        same_as: str | None = None,
    ) -> dict[str, Any] | None:
        """A cell from the cache, or computed now (and written to the cache)."""
        case = key.rsplit("/", 1)[-1]
        with_reference = key.startswith("reference/") and case not in ("none", "strokes4", "histogram_match")
        settings = self.settings(subset, methods, with_reference)
        cached = self.cache.get(key, settings)
        if cached is not None:
            return cached
        if same_as is not None:
            twin = self.cache.get(same_as, settings)
            if twin is not None:
                # Computed once, stored twice: the time is the twin's, not spent again.
                self.cache.put(key, {**twin, "same_as": same_as, "seconds": 0.0, "seconds_per_item": 0.0})
                return self.cache.cells[key]
        started = time.perf_counter()
        outputs = self.run(subset, run_key)
        if part is not None:
            outputs = [o[part] if isinstance(o, dict) else o for o in outputs]
        layers = None
        if strokes > 0:
            layers = [h if isinstance(h, HintLayer) else None for h in self.subset_hints(subset, strokes)]
        cell = score_outputs(subset.items, outputs, layers)
        cell["seconds"] = round(time.perf_counter() - started, 2)
        cell["seconds_per_item"] = round(cell["seconds"] / max(1, len(subset.items)), 4)
        cell["settings"] = settings
        self.cache.put(key, cell)
        self.computed += 1
        failed = f", {cell['n_failed']} failed" if cell["n_failed"] else ""
        print(f"{key}: {cell['n']} scored{failed}, {cell['seconds']:.1f} s", file=sys.stderr, flush=True)
        return cell


def hint_cells(
    strokes: Sequence[int], skip: set[str]
) -> list[tuple[str, list[str], tuple[Any, ...], str | None, int]]:
    """(method, settings methods, run key, part, strokes) of each hint cell, in computing order."""
    cells = []
    for k in strokes:
        for method in HINT_METHODS:
            if method in skip:
                continue
            if k == 0 and method in ("v2_network", "region_fill", "gmic"):
                continue
            if k > 0 and method == "sketch":
                continue
            if method in ("v2", "v2_network"):
                run: tuple[Any, ...] = ("v2", k, "none")
                part: str | None = "pipeline" if method == "v2" else "network"
                cells.append((method, ["v2"], run, part, k))
            elif method == "v1":
                cells.append((method, ["v1"], ("v1", k, "none"), "pipeline", k))
            elif method == "sketch":
                cells.append((method, ["sketch"], ("sketch",), None, k))
            else:
                cells.append((method, [method], (method, k), None, k))
    return cells


def reference_cells(skip: set[str]) -> list[tuple[str, list[str], tuple[Any, ...], str | None, int]]:
    table = {
        "none": (["v2"], ("v2", 0, "none"), "pipeline", 0),
        "self_warped": (["v2"], ("v2", 0, "self_warped"), "pipeline", 0),
        "histogram_match": (["v2", "histogram_match"], ("histogram_match",), None, 0),
        "strokes4": (["v2"], ("v2", REFERENCE_STROKES, "none"), "pipeline", REFERENCE_STROKES),
        "self_warped+strokes4": (
            ["v2"],
            ("v2", REFERENCE_STROKES, "self_warped"),
            "pipeline",
            REFERENCE_STROKES,
        ),
        "palette": (["v2", "palette"], ("v2", 0, "palette"), "pipeline", 0),
    }
    return [(case, *table[case]) for case in REFERENCE_CASES if case not in skip]  # type: ignore[misc]


# ------------------------------------------------------------------------------------ figures


def figure_rows(items: Sequence[Item], rows: int) -> list[Item]:
    """``rows`` loaded items at fixed sorted positions: the middles of ``rows`` equal slices."""
    usable = [item for item in items if item.error is None]
    if not usable:
        return []
    picks = sorted({(2 * r + 1) * len(usable) // (2 * rows) for r in range(min(rows, len(usable)))})
    return [usable[i] for i in picks]


#: Largest figure file; a figure over it is saved with an adaptive 256-colour palette instead.
FIGURE_MAX_BYTES = 400 * 1024


def save_grid(
    path: Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], labels: Sequence[str]
) -> Path:
    """A labelled grid of equally sized pictures as a small PNG (matplotlib's Agg canvas, no pyplot).

    Pictures are shown at their own size (one screen pixel per picture pixel, no resampling).
    The PNG is written with PIL's ``optimize``; if it is still over :data:`FIGURE_MAX_BYTES` it is
    saved with an adaptive 256-colour palette (flat colourings survive that unchanged).
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    h, w = rows[0][0].shape[:2]
    dpi = 100
    margin = 0.06  # inches between pictures
    fig = Figure(
        figsize=(0.2 + len(titles) * (w / dpi + margin), 0.25 + len(rows) * (h / dpi + margin)), dpi=dpi
    )
    canvas = FigureCanvasAgg(fig)
    width, height = fig.get_figwidth(), fig.get_figheight()
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            left = (0.2 + c * (w / dpi + margin)) / width
            bottom = 1 - (0.25 + (r + 1) * (h / dpi + margin) - margin) / height
            ax = fig.add_axes((left, bottom, w / dpi / width, h / dpi / height))
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=7, pad=3)
            if c == 0:
                ax.set_ylabel(short_label(labels[r]), fontsize=6)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    if buffer.tell() > FIGURE_MAX_BYTES:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(path, buffer.getvalue(), overwrite=True)
    return path


def short_label(name: str, limit: int = 22) -> str:
    """A row label that fits beside one picture: long names (emoji sequences) keep both ends."""
    if len(name) <= limit:
        return name
    keep = (limit - 1) // 2
    return f"{name[:keep]}\u2026{name[-keep:]}"


def hints_view(item: Item, layer: HintLayer | None) -> np.ndarray:
    """The hints over the sketch on light grey paper, so that white hints show too."""
    paper = item.sketch * 0.8
    if layer is None:
        return tensor_to_u8(paper)
    return tensor_to_u8(paper * (1 - layer.mask) + layer.rgb * layer.mask)


def blank_like(picture_u8: torch.Tensor) -> np.ndarray:
    return np.full((picture_u8.shape[-2], picture_u8.shape[-1], 3), 255, np.uint8)


def make_figures(
    runner: Runner, subset: Subset, out_dir: Path, rows: int, strokes: int, skip: set[str]
) -> list[Path]:
    """``hints-SUBSET.png`` and (reference models) ``reference-SUBSET.png`` for a few items."""
    chosen = figure_rows(subset.items, rows)
    if not chosen:
        return []
    mini = Subset(subset.name, chosen, subset.digest)
    written = []
    labels = [item.name for item in chosen]

    def pictures(key: tuple[Any, ...], part: str | None = None) -> list[np.ndarray]:
        outputs = runner.run(mini, key)
        result = []
        for item, output in zip(chosen, outputs, strict=True):
            if isinstance(output, dict):
                output = output[part or "pipeline"]
            result.append(output if isinstance(output, np.ndarray) else blank_like(item.sketch_u8))
        return result

    layers = runner.subset_hints(mini, strokes)
    columns: list[tuple[str, list[np.ndarray]]] = [
        ("sketch", [tensor_to_u8(item.sketch) for item in chosen]),
        (
            f"hints ({strokes} strokes)",
            [
                hints_view(i, h if isinstance(h, HintLayer) else None)
                for i, h in zip(chosen, layers, strict=True)
            ],
        ),
        ("v2", pictures(("v2", strokes, "none"))),
    ]
    if "v1" not in skip:
        columns.append(("v1", pictures(("v1", strokes, "none"))))
    if "region_fill" not in skip:
        columns.append(("region fill", pictures(("region_fill", strokes))))
    if "gmic" not in skip:
        columns.append(("G'MIC", pictures(("gmic", strokes))))
    columns.append(("v2, no hints", pictures(("v2", 0, "none"))))
    columns.append(("truth", [tensor_to_u8(item.truth) for item in chosen]))
    grid = [[col[1][r] for col in columns] for r in range(len(chosen))]
    written.append(save_grid(out_dir / f"hints-{subset.name}.png", grid, [c[0] for c in columns], labels))

    if runner.models.get("v2").config.conditioning.reference:
        seed = runner.args.seed
        refs = [item_reference(item, "self_warped", seed) for item in chosen]
        palettes = [palette_reference(item) for item in chosen]

        def square(rgb: torch.Tensor | None, like: Item) -> np.ndarray:
            # The reference as the model sees it: letterboxed onto a white square of the item's size.
            from sketchcolor.conditioning import letterbox

            assert rgb is not None and like.sketch_u8 is not None
            side = int(like.sketch_u8.shape[-1])
            boxed = letterbox(rgb.float(), side)
            if boxed.shape[-2] != like.sketch_u8.shape[-2]:
                boxed = torch.nn.functional.interpolate(
                    boxed, size=tuple(like.sketch_u8.shape[-2:]), mode="nearest"
                )
            return tensor_to_u8(boxed)

        columns = [
            ("sketch", [tensor_to_u8(item.sketch) for item in chosen]),
            ("self-warped reference", [square(r, i) for r, i in zip(refs, chosen, strict=True)]),
            ("v2 + reference", pictures(("v2", 0, "self_warped"))),
            ("histogram matching", pictures(("histogram_match",))),
            ("v2, no reference", pictures(("v2", 0, "none"))),
            ("palette", [square(p, i) for p, i in zip(palettes, chosen, strict=True)]),
            ("v2 + palette", pictures(("v2", 0, "palette"))),
            ("truth", [tensor_to_u8(item.truth) for item in chosen]),
        ]
        grid = [[col[1][r] for col in columns] for r in range(len(chosen))]
        written.append(
            save_grid(out_dir / f"reference-{subset.name}.png", grid, [c[0] for c in columns], labels)
        )
    else:
        runner.notes.append(f"{subset.name}: no reference figure (the --model takes no reference picture)")
    return written


# --------------------------------------------------------------------------------------- main


def parse_list(text: str, allowed: Iterable[str], what: str) -> list[str]:
    allowed = list(allowed)
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="the v2 model (default: the bundled model)")
    parser.add_argument("--v1-model", default="data/models/v1.safetensors", help="the v1 model file")
    parser.add_argument("--data", type=Path, default=Path("data/v2/test"), help="folder holding the subsets")
    parser.add_argument("--subsets", default=",".join(SUBSETS), help="comma-separated subset folders")
    parser.add_argument(
        "--strokes", default=",".join(map(str, STROKES)), help="stroke counts of the hint rows"
    )
    parser.add_argument("--limit", type=int, default=0, help="first N sorted items per subset (0: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip", default="", help="methods or reference cases to leave out, e.g. gmic,v1,palette"
    )
    parser.add_argument(
        "--only", default=None, help="hints,reference,figures (default: hints,reference[,figures])"
    )
    parser.add_argument("--sampler", default=None, help="v2 sampler (default: SampleConfig's)")
    parser.add_argument("--steps", type=int, default=None, help="v2 steps (default: SampleConfig's)")
    parser.add_argument("--eta", type=float, default=None)
    parser.add_argument("--guidance", type=float, default=None, help="v2 guidance on the hints")
    parser.add_argument("--reference-scale", type=float, default=None, help="v2 guidance on the reference")
    parser.add_argument(
        "--reference-snap",
        type=float,
        default=None,
        help="v2 snapping to the reference's colours (default: SampleConfig's)",
    )
    parser.add_argument("--v1-sampler", default=None)
    parser.add_argument("--v1-steps", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--json", type=Path, default=None, help="the cell cache (e.g. docs/model-card-v2-scores.json)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--figures", type=Path, default=None, help="folder for the figures")
    parser.add_argument("--figure-rows", type=int, default=3, help="rows per subset in the figures")
    parser.add_argument("--figure-strokes", type=int, default=4, help="strokes shown in the hints figure")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    subsets = parse_list(
        args.subsets,
        [p.name for p in sorted(args.data.iterdir()) if p.is_dir()] if args.data.is_dir() else SUBSETS,
        "subset",
    )
    strokes = [int(s) for s in args.strokes.split(",") if s.strip()]
    skip = set(parse_list(args.skip, [*HINT_METHODS, *REFERENCE_CASES], "method or case"))
    parts = set(
        parse_list(args.only, ("hints", "reference", "figures"), "part")
        if args.only
        else ["hints", "reference", *(["figures"] if args.figures else [])]
    )
    if "figures" in parts and args.figures is None:
        raise SystemExit("--only figures needs --figures DIR")
    defaults = SampleConfig()
    v2_config = SampleConfig(
        sampler=args.sampler or defaults.sampler,
        steps=args.steps or defaults.steps,
        eta=defaults.eta if args.eta is None else args.eta,
        guidance=defaults.guidance if args.guidance is None else args.guidance,
        reference_scale=defaults.reference_scale if args.reference_scale is None else args.reference_scale,
        reference_snap=defaults.reference_snap if args.reference_snap is None else args.reference_snap,
    )
    v1_config = SampleConfig(
        sampler=args.v1_sampler or defaults.sampler, steps=args.v1_steps or defaults.steps
    )
    models = Models(args.model, args.v1_model, args.device, v2_config, v1_config)
    cache = Cache(args.json)
    runner = Runner(args, models, cache)
    takes_reference = bool(models.get("v2").config.conditioning.reference)
    if "gmic" not in skip:
        try:
            import gmic  # noqa: F401
        except ImportError:
            skip.add("gmic")
            runner.notes.append("G'MIC cells skipped: the gmic package is not installed (pip install gmic)")
    if "reference" in parts and not takes_reference:
        runner.notes.append("reference rows skipped: the --model takes no reference picture")
        parts.discard("reference")

    started = time.perf_counter()
    current: dict[str, dict[str, Any]] = {}  # cells of the current settings, for tables and checks
    sizes: dict[str, int] = {}
    hint_list = hint_cells(strokes, skip)
    ref_list = reference_cells(skip)
    for name in subsets:
        items, digest = load_items(args.data / name, args.limit)
        subset = Subset(name, items, digest)
        sizes[name] = len(items)
        n_bad = sum(1 for item in items if item.error is not None)
        unusable = f" ({n_bad} unusable)" if n_bad else ""
        print(f"{name}: {len(items)} items{unusable}", file=sys.stderr, flush=True)
        plan: list[tuple[str, list[str], tuple[Any, ...], str | None, int, str | None]] = []
        if "hints" in parts:
            plan += [(f"hints/{name}/{k}/{m}", ms, run, part, k, None) for m, ms, run, part, k in hint_list]
        if "reference" in parts:
            twins = {"none": f"hints/{name}/0/v2", "strokes4": f"hints/{name}/{REFERENCE_STROKES}/v2"}
            plan += [
                (f"reference/{name}/{c}", ms, run, part, k, twins.get(c)) for c, ms, run, part, k in ref_list
            ]
        # Free a run once no remaining cell needs it (histogram matching needs the no-reference run).
        needs = [
            {run} | ({("v2", 0, "none")} if run == ("histogram_match",) else set()) for _, _, run, *_ in plan
        ]
        for index, (key, methods, run, part, k, twin) in enumerate(plan):
            current[key] = runner.cell(subset, key, methods, run, part, k, same_as=twin)
            remaining: set[tuple[Any, ...]] = set().union(*needs[index + 1 :])
            for done in [r for r in subset.runs if r not in remaining]:
                del subset.runs[done]
        if "figures" in parts:
            for path in make_figures(
                runner, subset, args.figures, args.figure_rows, args.figure_strokes, skip
            ):
                print(f"wrote {path} ({path.stat().st_size // 1024} KB)", file=sys.stderr)
        subset.runs.clear()
        subset.hints.clear()

    text: list[str] = []
    if "hints" in parts:
        for metric in ("ciede2000", "psnr"):
            text += [
                f"## Hint rows: {METRIC_NAMES[metric]} overview",
                "",
                overview_table(current.get, subsets, strokes, metric),
                "",
            ]
        for name in subsets:
            text += [
                f"## Hint rows: {name} ({sizes[name]} items)",
                "",
                hints_table(current.get, name, strokes),
                "",
            ]
        text += [
            'At 0 strokes region fill and G\'MIC have nothing to spread and return the sketch (row "sketch").',
            "",
            "## Target check: hints (issue 12)",
            "",
            checks_table(hint_targets(current.get, subsets, strokes)),
            "",
        ]
    if "reference" in parts:
        for name in subsets:
            text += [
                f"## Reference rows: {name} ({sizes[name]} items)",
                "",
                reference_table(current.get, name),
                "",
            ]
        text += [
            "## Target check: reference (issue 11)",
            "",
            checks_table(reference_targets(current.get, subsets)),
            "",
        ]
    seconds = time.perf_counter() - started
    v2 = models.get("v2")
    header = [
        f"v2 model {args.model or 'bundled'} (digest {v2.digest}), {v2_config.sampler} {v2_config.steps} steps, "
        f"guidance {v2_config.guidance}, reference scale {v2_config.reference_scale}; "
        + (
            "v1 skipped"
            if "v1" in skip
            else f"v1 {args.v1_model}, {v1_config.sampler} {v1_config.steps} steps"
        )
        + f"; seed {args.seed}"
        + (f"; first {args.limit} items per subset" if args.limit else ""),
        f"{runner.computed} cells computed in {seconds:.0f} s "
        f"({platform.machine()}, torch threads {torch.get_num_threads()})",
        "",
    ]
    header += [f"note: {note}" for note in runner.notes]
    document = "\n".join(header + [""] + text)
    print(document)
    if args.markdown:
        write_bytes_atomic(args.markdown, (document + "\n").encode("utf-8"), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
