"""Evaluation: score colourisations against ground truth, from files or by running a model.

Owns: matching predictions to ground truth by relative stem, fixed-seed synthetic hints for test
sets, running a model over a test set, per-item scores with every failure kept visible, set means,
FID (optional), thresholds a CI job can enforce, and the report files (JSON, CSV, PNG plot).

Two modes, one report type (:class:`EvalReport`):

* :func:`evaluate_outputs` scores existing outputs (``pred_dir``) against ground truth
  (``truth_dir``), matched by relative path without suffix;
* :func:`evaluate_model` runs a model over a test set (``sketch/`` + ``color/``, optional
  ``hints/``) and scores what it makes. Missing hints are synthesised from the ground truth with a
  fixed seed per item (:func:`synthetic_hints`), so two runs, or two checkpoints, see the same
  hints.

A bad item (no ground truth, a ground truth without a prediction or sketch, different sizes, an
unreadable file, or any other failure of that one item) never disappears: it is an
:class:`ItemResult` with an ``error``, counted in ``n_failed``; the means are over the scored items
only, and say so (``n_scored``). PSNR is capped per item at :data:`PSNR_CAP_DB`, so a mean is
always finite and a ``--fail-under psnr=...`` gate can fail.

Imports errors, config, io, conditioning, checkpoint, metrics, compose, pipeline and data from the
package (never training or cli). Library code: no printing, no argv, no progress bars (progress
goes through ``callback``). Optional packages (matplotlib, pytorch-fid) are imported lazily.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .checkpoint import ModelBundle, describe
from .color import lab_to_rgb
from .compose import sketch_lightness
from .conditioning import LINE_LEVEL, HintLayer, sample_training_hints, warp_reference
from .config import HintConfig, ReferenceConfig, SampleConfig
from .data import COLOR_DIRS, SKETCH_DIRS
from .errors import ConfigError, DataError, HintError, ImageError, ModelError, SketchcolorError, failure_text
from .io import IMAGE_SUFFIXES, atomic_write, image_to_tensor, load_rgb, write_bytes_atomic
from .metrics import LpipsMetric, MetricUnavailableError, score_images
from .pipeline import NamedReference, build_hints, colorize_batch, derive_seed, working_size

__all__ = [
    "FID_WEIGHTS_URL",
    "METRICS",
    "EvalReport",
    "FidMetric",
    "ItemResult",
    "Pair",
    "Pairing",
    "PSNR_CAP_DB",
    "check_plot_available",
    "check_thresholds",
    "evaluate_model",
    "evaluate_outputs",
    "fid_available",
    "fid_from_features",
    "fid_weights_path",
    "find_hint_file",
    "find_pairs",
    "find_test_set",
    "frechet_distance",
    "parse_sweep",
    "parse_thresholds",
    "plot_metrics",
    "report_document",
    "score_pair",
    "synthetic_hints",
    "write_csv",
    "write_json",
]

#: Every metric ``eval`` can report, and which direction is better ("neither" for the
#: colourfulness values, where the aim is the ground truth's: a ratio near 1).
METRICS: dict[str, Literal["higher", "lower", "neither"]] = {
    "psnr": "higher",
    "ssim": "higher",
    "ciede2000": "lower",
    "hint_ciede2000": "lower",
    "lpips": "lower",
    "fid": "lower",
    "colourfulness": "neither",
    "colourfulness_truth": "neither",
    "colourfulness_ratio": "neither",
}
#: Set-level metrics derived from the per-item means: name -> (numerator, denominator).
RATIO_METRICS = {"colourfulness_ratio": ("colourfulness", "colourfulness_truth")}
#: Files sketchcolor writes beside its outputs (``--save-flats``, ``--save-hints``); in a
#: prediction folder they are not predictions and are skipped (and listed in the notes).
SIDE_FILE_MARKERS = (".flats.", ".hints.")
#: Sub-folder of a test set holding given hints, matched to sketches by stem.
HINTS_SUBDIR = "hints"
#: Suffixes of hint files (images, or the JSON points/strokes format of ``colorize --hints``).
HINT_SUFFIXES = (*IMAGE_SUFFIXES, ".json")
#: The Inception weights FID is defined with (TensorFlow's, ported by pytorch-fid).
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: Per-item PSNR cap in dB (the model card's): an exact copy scores 60, not +inf, so one perfect
#: item cannot make a mean infinite and a threshold on it can still fail. 60 dB is an RMS error of
#: 1/1000 of full scale, below one 8-bit level (1/255 is 48.1 dB).
PSNR_CAP_DB = 60.0
#: Version of the JSON report layout (:func:`report_document`).
REPORT_VERSION = 1
#: Columns of the CSV report, in order (columns absent from every row are left out).
CSV_COLUMNS = (
    "run", "mode", "pred", "truth", "model", "digest", "step", "strokes", "hints", "max_strokes",
    "n_items", "n_scored", "n_failed", "n_unmatched_truths", "n_hinted", *METRICS,
)  # fmt: skip

ProgressCallback = Callable[[Mapping[str, Any]], None]
HintKind = Literal["none", "given", "synthetic"]


# ----------------------------------------------------------------------------------------------
# Finding pairs
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pair:
    """A prediction (or sketch) and its ground truth, matched by ``name`` (relative stem)."""

    name: str
    pred: Path
    truth: Path


@dataclasses.dataclass(frozen=True)
class Problem:
    """An input that cannot be scored, and why (becomes a failed :class:`ItemResult`)."""

    name: str
    reason: str
    path: Path | None = None


@dataclasses.dataclass(frozen=True)
class Pairing:
    """The outcome of :func:`find_pairs`.

    Attributes:
        pairs: Matched pairs, sorted by name.
        problems: Predictions that cannot be paired (no ground truth, or several files with the
            same stem); each counts as a failed item.
        unmatched_truths: Names of ground-truth pictures without a prediction (or sketch); the
            evaluations count each as a failed item.
        ignored: sketchcolor side files (``*.flats.*``, ``*.hints.*``) skipped in the prediction
            folder.
        unmatched_truth_files: The files of ``unmatched_truths``, in the same order.
    """

    pairs: tuple[Pair, ...]
    problems: tuple[Problem, ...]
    unmatched_truths: tuple[str, ...]
    ignored: tuple[Path, ...]
    unmatched_truth_files: tuple[Path, ...] = ()


def _images_by_stem(
    folder: Path, role: str, *, skip_side_files: bool
) -> tuple[dict[str, list[Path]], list[Path]]:
    if not folder.exists():
        raise DataError(f"{folder}: {role} folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: is not a folder (the {role} must be a folder of images)")
    found: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not path.is_file():
            continue
        if skip_side_files and any(marker in path.name for marker in SIDE_FILE_MARKERS):
            ignored.append(path)
            continue
        found.setdefault(rel.with_suffix("").as_posix(), []).append(path)
    return found, ignored


def find_pairs(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    pred_role: str = "prediction",
    skip_side_files: bool = True,
) -> Pairing:
    """Match the images of two folders by relative path without suffix (recursively).

    ``pred/sub/a.png`` pairs with ``truth/sub/a.jpg``. Hidden files and folders are skipped.

    Args:
        pred_dir: Folder of predictions (or sketches).
        truth_dir: Folder of ground-truth pictures.
        pred_role: What ``pred_dir`` holds, for messages ("prediction", "sketch").
        skip_side_files: Skip ``*.flats.*`` and ``*.hints.*`` files in ``pred_dir``.

    Returns:
        :class:`Pairing`.

    Raises:
        DataError: A folder is missing, is not a folder, or holds no images.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds, ignored = _images_by_stem(pred_dir, pred_role, skip_side_files=skip_side_files)
    truths, _ = _images_by_stem(truth_dir, "ground-truth", skip_side_files=False)
    suffixes = ", ".join(IMAGE_SUFFIXES)
    if not preds:
        raise DataError(f"{pred_dir}: no {pred_role} images found (looked recursively for {suffixes})")
    if not truths:
        raise DataError(f"{truth_dir}: no ground-truth images found (looked recursively for {suffixes})")
    pairs: list[Pair] = []
    problems: list[Problem] = []
    for name in sorted(preds):
        files = preds[name]
        truth_files = truths.get(name, [])
        if len(files) > 1:
            listed = ", ".join(p.name for p in files)
            problems.append(
                Problem(name, f"several {pred_role} files share the name {name}: {listed}", files[0])
            )
        elif not truth_files:
            problems.append(Problem(name, f"no ground truth {name}.* in {truth_dir}", files[0]))
        elif len(truth_files) > 1:
            listed = ", ".join(p.name for p in truth_files)
            problems.append(
                Problem(name, f"several ground-truth files share the name {name}: {listed}", files[0])
            )
        else:
            pairs.append(Pair(name, files[0], truth_files[0]))
    unmatched = tuple(sorted(set(truths) - set(preds)))
    unmatched_files = tuple(truths[name][0] for name in unmatched)
    return Pairing(tuple(pairs), tuple(problems), unmatched, tuple(ignored), unmatched_files)


def find_test_set(test_dir: str | Path) -> tuple[Path, Path]:
    """The sketch and colour folders of a test set (``sketch/`` and ``color/``, or their aliases).

    Raises:
        DataError: The folder does not exist or lacks one of the two sub-folders.
    """
    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test set folder not found")
    sketch_dir = next((test_dir / n for n in SKETCH_DIRS if (test_dir / n).is_dir()), None)
    color_dir = next((test_dir / n for n in COLOR_DIRS if (test_dir / n).is_dir()), None)
    if sketch_dir is None or color_dir is None:
        raise DataError(
            f"{test_dir}: a test set needs sub-folders sketch/ and color/ (ground truth), "
            "matched by file name; hints/ is optional"
        )
    return sketch_dir, color_dir


def find_hint_file(hints_dir: str | Path, name: str) -> Path | None:
    """The hint file of item ``name`` in ``hints_dir``: ``NAME.<image or json>`` or ``NAME.hints.*``.

    ``name`` is a relative stem such as ``sub/a``; sub-folders mirror the sketches'.
    """
    rel = Path(name)
    folder = Path(hints_dir) / rel.parent
    for stem in (rel.name, f"{rel.name}.hints"):
        for suffix in HINT_SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def load_hint_file(path: Path, size: tuple[int, int]) -> HintLayer:
    """A hints image or JSON hints file as a layer at ``size`` = (H, W).

    Raises:
        HintError, ImageError: Malformed or unreadable file, or another aspect ratio.
    """
    if path.suffix.lower() == ".json":
        return build_hints(size, json_files=[path])
    return build_hints(size, images=[path])


# ----------------------------------------------------------------------------------------------
# Synthetic hints
# ----------------------------------------------------------------------------------------------


def synthetic_hints(
    truth_rgb: torch.Tensor,
    sketch_rgb: torch.Tensor,
    config: HintConfig,
    seed: int,
    *,
    resolution: int,
    num_strokes: int | None = None,
) -> HintLayer:
    """Hints drawn from the ground truth with a fixed seed, at the picture's full size.

    The strokes are drawn where the model works, as in training
    (:func:`~sketchcolor.conditioning.sample_training_hints`; stroke lengths and widths in
    :class:`~sketchcolor.config.HintConfig` are in working pixels): truth and sketch lightness are
    area-downscaled so the long side is ``resolution``, the mask is drawn with
    ``torch.Generator().manual_seed(seed)`` and upscaled nearest-neighbour to full size. The colours
    are the full-size truth's, and full-size line pixels (sketch lightness below
    :data:`~sketchcolor.conditioning.LINE_LEVEL`) are never hinted.

    Strokes are drawn one after the other from the one generator, so with a fixed ``num_strokes``
    the hints of k strokes are the first k strokes of any larger count (a hint sweep adds strokes
    to the same picture rather than redrawing them).

    Args:
        truth_rgb: (1, 3, H, W) ground truth, sRGB in [0, 1].
        sketch_rgb: (1, 3, H, W) sketch, sRGB in [0, 1], same size.
        config: Stroke distribution (its ``drop`` is not applied).
        seed: Seed of this item's hints (use :func:`~sketchcolor.pipeline.derive_seed`).
        resolution: The model's working resolution (long side).
        num_strokes: Exactly this many strokes; None draws the count from ``config``.

    Returns:
        A :class:`~sketchcolor.conditioning.HintLayer` of size (H, W).

    Raises:
        ValueError: Wrong shapes or sizes that differ.
    """
    if truth_rgb.dim() != 4 or truth_rgb.shape[:2] != (1, 3):
        raise ValueError(f"truth_rgb must be (1, 3, H, W), got {tuple(truth_rgb.shape)}")
    if sketch_rgb.shape != truth_rgb.shape:
        raise ValueError(
            f"sketch_rgb {tuple(sketch_rgb.shape)} must match truth_rgb {tuple(truth_rgb.shape)}"
        )
    size = (int(truth_rgb.shape[-2]), int(truth_rgb.shape[-1]))
    truth_rgb, sketch_rgb = truth_rgb.float().cpu(), sketch_rgb.float().cpu()
    sketch_l = sketch_lightness(sketch_rgb)
    small = working_size(size, resolution)
    truth_small = F.interpolate(truth_rgb, size=small, mode="area") if small != size else truth_rgb
    sketch_small = F.interpolate(sketch_l, size=small, mode="area") if small != size else sketch_l
    generator = torch.Generator("cpu").manual_seed(int(seed))
    _, mask_small = sample_training_hints(
        truth_small[0], sketch_small[0], config, generator, num_strokes=num_strokes
    )
    # "nearest-exact" maps each full-size pixel to the working pixel it lies in (plain "nearest"
    # is shifted by half a pixel).
    mask = F.interpolate(mask_small[None], size=size, mode="nearest-exact")
    mask = mask * (sketch_l >= LINE_LEVEL).to(mask.dtype)
    return HintLayer(truth_rgb * mask, mask)


# ----------------------------------------------------------------------------------------------
# Scores and reports
# ----------------------------------------------------------------------------------------------


def score_pair(
    pred_rgb: torch.Tensor,
    truth_rgb: torch.Tensor,
    hints: HintLayer | None = None,
    lpips: LpipsMetric | None = None,
) -> dict[str, float]:
    """All metrics of one prediction against its ground truth.

    Args:
        pred_rgb: (1, 3, H, W) sRGB in [0, 1].
        truth_rgb: (1, 3, H, W) sRGB in [0, 1], same size.
        hints: The hints the prediction was made with; adds ``hint_ciede2000`` (NaN when the layer
            is empty).
        lpips: Adds ``lpips`` when given.

    Returns:
        ``{metric: value}`` with the keys of :func:`sketchcolor.metrics.score_images`; ``psnr`` is
        capped at :data:`PSNR_CAP_DB` (an exact copy scores 60 dB).

    Raises:
        ImageError: The sizes differ, or an image is invalid for a metric (e.g. smaller than
            LPIPS's 31 px minimum).
    """
    (h, w), (th, tw) = pred_rgb.shape[-2:], truth_rgb.shape[-2:]
    if (h, w) != (th, tw):
        raise ImageError(f"the prediction is {w}x{h} but the ground truth is {tw}x{th}")
    hint_rgb = hint_mask = None
    if hints is not None:
        if hints.size != (h, w):
            raise HintError(f"the hints are {hints.size[1]}x{hints.size[0]} but the images are {w}x{h}")
        hint_rgb, hint_mask = hints.rgb, hints.mask
    try:
        scores = score_images(pred_rgb, truth_rgb, hint_rgb, hint_mask, lpips)
    except ValueError as exc:
        raise ImageError(str(exc)) from None
    result = {name: values[0] for name, values in scores.items()}
    if "psnr" in result:
        result["psnr"] = min(float(result["psnr"]), PSNR_CAP_DB)
    return result


@dataclasses.dataclass(frozen=True)
class ItemResult:
    """The scores of one item, or why it could not be scored.

    Attributes:
        name: Relative stem (``sub/a``).
        metrics: ``{metric: value}``; empty when the item failed.
        error: One line saying why the item failed; None when scored.
        files: ``{"pred"|"sketch"|"truth"|"hints": path}`` of the files involved.
        hints: Where its hints came from: ``"none"``, ``"given"`` or ``"synthetic"``.
        hint_pixels: Number of hinted pixels (at full size).
        seed: The sampling seed (mode B).
    """

    name: str
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hints: HintKind = "none"
    hint_pixels: int = 0
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (up to non-finite floats): name, status, error, files, hints, metrics."""
        return {
            "name": self.name,
            "status": "scored" if self.ok else "failed",
            "error": self.error,
            **{f"{role}_path": path for role, path in self.files.items()},
            "hints": self.hints,
            "hint_pixels": self.hint_pixels,
            "seed": self.seed,
            **self.metrics,
        }


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """The scores of one run (one model and hint setting, or one prediction folder).

    Attributes:
        items: Every item, scored or failed, sorted by name.
        label: What was evaluated: ``mode`` and, for models, ``model``, ``digest``, ``step``,
            ``strokes`` (None: random count), ``max_strokes``.
        unmatched_truths: Ground-truth names without a prediction or sketch (not scored, not
            failures; see :class:`Pairing`).
        notes: Other things the reader should know (ignored files, ignored hints, FID skipped).
        set_metrics: Metrics of the whole set rather than per item (``fid``).
    """

    items: tuple[ItemResult, ...]
    label: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    unmatched_truths: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    set_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def scored(self) -> list[ItemResult]:
        return [item for item in self.items if item.ok]

    @property
    def failures(self) -> list[ItemResult]:
        return [item for item in self.items if not item.ok]

    @property
    def n_scored(self) -> int:
        return len(self.scored)

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def metric_names(self) -> list[str]:
        """The metrics this report has, in :data:`METRICS` order."""
        present = {name for item in self.scored for name in item.metrics} | set(self.set_metrics)
        present |= {name for name, parts in RATIO_METRICS.items() if set(parts) <= present}
        return [name for name in METRICS if name in present]

    def means(self) -> dict[str, float]:
        """Mean of each per-item metric over the scored items, plus the set metrics.

        ``hint_ciede2000`` averages over the items that have hinted pixels only (NaN if none has);
        ``psnr`` is finite (items are capped at :data:`PSNR_CAP_DB`). ``colourfulness_ratio`` is
        the mean colourfulness of the outputs over that of the ground truths (a ratio of means,
        so pictures with little colour do not dominate it; NaN when every truth is grey). Every
        mean is NaN when no item was scored.
        """
        means: dict[str, float] = {}
        for name in self.metric_names():
            if name in self.set_metrics:
                means[name] = float(self.set_metrics[name])
                continue
            if name in RATIO_METRICS:
                top, bottom = (means[part] for part in RATIO_METRICS[name])
                means[name] = top / bottom if bottom > 0 else math.nan
                continue
            values = [float(item.metrics[name]) for item in self.scored if name in item.metrics]
            if name == "hint_ciede2000":
                values = [v for v in values if not math.isnan(v)]
            means[name] = _mean(values)
        return means

    def summary(self) -> dict[str, Any]:
        """One row: the label, the counts and the means (the table, CSV and threshold row)."""
        n_hinted = sum(
            1 for item in self.scored if not math.isnan(item.metrics.get("hint_ciede2000", math.nan))
        )
        return {
            **self.label,
            "n_items": len(self.items),
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "n_unmatched_truths": len(self.unmatched_truths),
            "n_hinted": n_hinted,
            **self.means(),
        }


class FeatureExtractor(Protocol):
    """What :func:`evaluate_outputs` and :func:`evaluate_model` need for FID (see :class:`FidMetric`)."""

    def features(self, rgb: torch.Tensor) -> np.ndarray: ...


class _FidCollector:
    """Features of scored predictions and truths, for the set-level FID."""

    def __init__(self, extractor: FeatureExtractor | None) -> None:
        self.extractor = extractor
        self.pred: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []

    def add(self, pred_rgb: torch.Tensor, truth_rgb: torch.Tensor) -> None:
        if self.extractor is not None:
            self.pred.append(self.extractor.features(pred_rgb))
            self.truth.append(self.extractor.features(truth_rgb))

    def result(self, notes: list[str]) -> dict[str, float]:
        if self.extractor is None:
            return {}
        if len(self.pred) < 2:
            notes.append(f"fid needs at least 2 scored items, got {len(self.pred)}; reported as NaN")
            return {"fid": math.nan}
        return {"fid": fid_from_features(np.concatenate(self.pred), np.concatenate(self.truth))}


def _failed(problem: Problem, role: str) -> ItemResult:
    files = {role: str(problem.path)} if problem.path is not None else {}
    return ItemResult(problem.name, error=problem.reason, files=files)


def _error_text(exc: BaseException) -> str:
    return failure_text(exc, with_hint=False)


def _missing(pairing: Pairing, other_dir: Path, what: str) -> list[ItemResult]:
    """A failed item for every ground-truth picture without a prediction (or sketch)."""
    return [
        ItemResult(
            name, error=f"no {what} {name}.* in {other_dir} for this ground truth", files={"truth": str(path)}
        )
        for name, path in zip(pairing.unmatched_truths, pairing.unmatched_truth_files, strict=True)
    ]


def _pairing_notes(pairing: Pairing, truth_dir: Path, what: str) -> list[str]:
    notes = []
    if pairing.ignored:
        shown = ", ".join(p.name for p in pairing.ignored[:5])
        notes.append(f"ignored {len(pairing.ignored)} sketchcolor side files (*.flats.*, *.hints.*): {shown}")
    return notes


def evaluate_outputs(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    hints_dir: str | Path | None = None,
    lpips: LpipsMetric | None = None,
    fid: FeatureExtractor | None = None,
    callback: ProgressCallback | None = None,
) -> EvalReport:
    """Mode A: score the images of ``pred_dir`` against ``truth_dir`` (matched by relative stem).

    Each item is scored at the ground truth's size; a prediction of another size is a failure, not
    resized. With ``hints_dir``, each item's hint file (:func:`find_hint_file`) adds the colour
    error at hinted pixels; an item without one gets NaN there.

    Args:
        pred_dir: Folder of predictions (for example ``sketchcolor batch`` output).
        truth_dir: Folder of ground-truth pictures.
        hints_dir: Optional folder of the hints the predictions were made with.
        lpips: Optional loaded LPIPS metric.
        fid: Optional feature extractor (:class:`FidMetric`) for the set-level FID.
        callback: Called after each item with ``{"done", "total", "item"}``.

    Returns:
        The :class:`EvalReport` (label ``{"mode": "outputs", "pred": ..., "truth": ...}``).

    Raises:
        DataError: A folder is missing or holds no images.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    hints_path = Path(hints_dir) if hints_dir is not None else None
    if hints_path is not None and not hints_path.is_dir():
        raise DataError(f"{hints_path}: hints folder not found")
    pairing = find_pairs(pred_dir, truth_dir)
    items = [_failed(p, "pred") for p in pairing.problems] + _missing(pairing, pred_dir, "prediction")
    collector = _FidCollector(fid)
    total = len(pairing.pairs)
    for done, pair in enumerate(pairing.pairs, start=1):
        items.append(_score_files(pair, hints_path, lpips, collector))
        if callback is not None:
            callback({"done": done, "total": total, "item": pair.name})
    notes = _pairing_notes(pairing, truth_dir, "prediction")
    set_metrics = collector.result(notes)
    label = {"mode": "outputs", "pred": str(pred_dir), "truth": str(truth_dir)}
    return EvalReport(
        tuple(sorted(items, key=lambda i: i.name)), label, pairing.unmatched_truths, tuple(notes), set_metrics
    )


def _score_files(
    pair: Pair, hints_dir: Path | None, lpips: LpipsMetric | None, fid: _FidCollector
) -> ItemResult:
    files = {"pred": str(pair.pred), "truth": str(pair.truth)}
    try:
        pred_rgb, truth_rgb = load_rgb(pair.pred), load_rgb(pair.truth)
        size = (int(truth_rgb.shape[-2]), int(truth_rgb.shape[-1]))
        hints: HintLayer | None = None
        kind: HintKind = "none"
        if hints_dir is not None:
            hint_file = find_hint_file(hints_dir, pair.name)
            if hint_file is None:
                hints = HintLayer.empty(size)
            else:
                files["hints"] = str(hint_file)
                hints = load_hint_file(hint_file, size)
                kind = "given"
        metrics = score_pair(pred_rgb, truth_rgb, hints, lpips)
        fid.add(pred_rgb, truth_rgb)
    except Exception as exc:  # noqa: BLE001 - one bad item is a failed item, never the end of the run
        return ItemResult(pair.name, error=_error_text(exc), files=files)
    hint_pixels = int(hints.mask.sum()) if hints is not None else 0
    return ItemResult(pair.name, metrics, files=files, hints=kind, hint_pixels=hint_pixels)


@dataclasses.dataclass
class _Loaded:
    pair: Pair
    sketch_rgb: torch.Tensor
    truth_rgb: torch.Tensor
    layer: HintLayer
    kind: HintKind
    seed: int
    files: dict[str, str]
    reference: NamedReference | None = None


ReferenceMode = Literal["none", "self-warped", "dir"]

#: The held-out family of warps of ``--reference-mode self-warped``: a thin-plate spline (training
#: uses affine maps with a smooth displacement field), milder affine ranges, light jitter.
EVAL_WARP = ReferenceConfig(
    warp="tps", rotate=20.0, scale_min=0.8, scale_max=1.2, shift=0.1, flip=0.5, elastic=0.05, jitter=0.05
)


def self_warped_reference(truth_rgb: torch.Tensor, seed: int, size: int = 128) -> torch.Tensor:
    """The ground truth under a fixed random warp of :data:`EVAL_WARP`, as a reference picture.

    Args:
        truth_rgb: (1, 3, H, W) sRGB in [0, 1].
        seed: Seed of the warp (``derive_seed(seed, "reference/" + name)`` in :func:`evaluate_model`).
        size: Side of the square result (the model letterboxes it to its own reference size).

    Returns:
        (1, 3, size, size) sRGB in [0, 1].
    """
    lab = warp_reference(truth_rgb[0], EVAL_WARP, size, torch.Generator().manual_seed(int(seed)))
    return lab_to_rgb(lab[None]).clamp(0.0, 1.0)


def evaluate_model(
    bundle: ModelBundle,
    test_dir: str | Path,
    *,
    sample_config: SampleConfig | None = None,
    hint_config: HintConfig | None = None,
    seed: int = 0,
    num_strokes: int | None = None,
    hints_dir: str | Path | None = None,
    batch_size: int = 8,
    lpips: LpipsMetric | None = None,
    fid: FeatureExtractor | None = None,
    callback: ProgressCallback | None = None,
    reference_mode: ReferenceMode = "none",
    reference_dir: str | Path | None = None,
) -> EvalReport:
    """Mode B: colourise a test set with ``bundle`` and score the results.

    The test set is a folder with ``sketch/`` and ``color/`` sub-folders matched by relative stem
    (:func:`find_test_set`), and optionally ``hints/``. Per item:

    * hints: the item's file in ``hints_dir`` (default ``TEST/hints`` when it exists) if there is
      one, else :func:`synthetic_hints` from the ground truth with seed
      ``derive_seed(seed, "hints/" + name)``. With ``num_strokes`` set (a hint sweep), every item
      gets exactly that many synthetic strokes and given hints are not used (noted in the report);
    * sampling seed: ``derive_seed(seed, name)``, so an item's result depends on neither its batch
      nor the other items;
    * reference (models with reference conditioning): none; ``self-warped``, the item's own ground
      truth under a fixed warp of the held-out family :data:`EVAL_WARP` (seed
      ``derive_seed(seed, "reference/" + name)``); or ``dir``, the file of the same stem in
      ``reference_dir`` (an item without one is a failure);
    * the output is scored as the 8-bit image ``colorize`` would write, at the ground truth's size;
      a sketch and truth of different sizes is a failure. The hint error is measured on the hinted
      pixels off the lines (for line-art models), where the model is asked to reproduce the hint.

    Args:
        bundle: The model.
        test_dir: The test set.
        sample_config: Sampler settings (default :class:`SampleConfig`).
        hint_config: Distribution of synthetic hints (default :class:`HintConfig`).
        seed: Base seed of sampling and hint synthesis.
        num_strokes: Exact number of synthetic strokes per item; None: random count from
            ``hint_config`` (given hints used where present).
        hints_dir: Folder of given hints (default ``TEST/hints`` if it exists).
        batch_size: Items per network evaluation.
        lpips: Optional loaded LPIPS metric.
        fid: Optional feature extractor for the set-level FID.
        callback: Called after each item with ``{"done", "total", "item"}``.
        reference_mode: ``none``, ``self-warped`` or ``dir`` (see above).
        reference_dir: Folder of references by stem (``reference_mode="dir"``).

    Returns:
        The :class:`EvalReport`; its label holds ``model``, ``digest``, ``step``, ``strokes``,
        ``max_strokes``, ``hints`` (which hint sources were used) and ``reference``.

    Raises:
        DataError: Bad test set layout or no sketches.
        ValueError: ``batch_size`` < 1 or ``num_strokes`` < 0.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if num_strokes is not None and num_strokes < 0:
        raise ValueError("num_strokes must be >= 0")
    if reference_mode != "none" and not bundle.config.conditioning.reference:
        raise ModelError(
            f"{bundle.path or 'the model'}: takes no reference picture (trained without reference conditioning)"
        )
    if reference_mode == "dir" and (reference_dir is None or not Path(reference_dir).is_dir()):
        raise DataError(f"{reference_dir}: reference folder not found")
    sample_config = sample_config or SampleConfig()
    hint_config = hint_config or HintConfig()
    test_dir = Path(test_dir)
    sketch_dir, color_dir = find_test_set(test_dir)
    pairing = find_pairs(sketch_dir, color_dir, pred_role="sketch", skip_side_files=False)
    notes = _pairing_notes(pairing, color_dir, "sketch")
    given_dir: Path | None = Path(hints_dir) if hints_dir is not None else test_dir / HINTS_SUBDIR
    if hints_dir is not None and not Path(hints_dir).is_dir():
        raise DataError(f"{hints_dir}: hints folder not found")
    if given_dir is None or not given_dir.is_dir():
        given_dir = None
    elif num_strokes is not None:
        notes.append(
            f"{given_dir}: given hints not used: a hint sweep synthesises exactly {num_strokes} strokes"
        )
        given_dir = None

    items = [_failed(p, "sketch") for p in pairing.problems] + _missing(pairing, sketch_dir, "sketch")
    collector = _FidCollector(fid)
    total, done = len(pairing.pairs), 0
    pairs = list(pairing.pairs)
    for start in range(0, len(pairs), batch_size):
        ready: list[_Loaded] = []
        for pair in pairs[start : start + batch_size]:
            loaded = _load_item(pair, bundle, hint_config, seed, num_strokes, given_dir)
            if isinstance(loaded, _Loaded) and reference_mode != "none":
                loaded = _with_reference(loaded, reference_mode, reference_dir, seed)
            if isinstance(loaded, ItemResult):
                items.append(loaded)
            else:
                ready.append(loaded)
        outputs = _colorize(ready, bundle, sample_config)
        for item, output in zip(ready, outputs, strict=True):
            items.append(_score_output(item, output, bundle, lpips, collector))
        for pair in pairs[start : start + batch_size]:
            done += 1
            if callback is not None:
                callback({"done": done, "total": total, "item": pair.name})

    set_metrics = collector.result(notes)
    kinds = sorted({item.hints for item in items if item.ok})
    info = describe(bundle)
    label = {
        "mode": "model",
        "model": info["path"],
        "digest": bundle.digest,
        "step": info["step"],
        "strokes": num_strokes,
        "max_strokes": hint_config.max_strokes if num_strokes is None else None,
        "hints": "+".join(kinds) if kinds else "none",
        "reference": reference_mode,
    }
    return EvalReport(
        tuple(sorted(items, key=lambda i: i.name)), label, pairing.unmatched_truths, tuple(notes), set_metrics
    )


def _load_item(
    pair: Pair,
    bundle: ModelBundle,
    hint_config: HintConfig,
    seed: int,
    num_strokes: int | None,
    given_dir: Path | None,
) -> _Loaded | ItemResult:
    files = {"sketch": str(pair.pred), "truth": str(pair.truth)}
    item_seed = derive_seed(seed, pair.name)
    try:
        sketch_rgb, truth_rgb = load_rgb(pair.pred), load_rgb(pair.truth)
        (h, w), (th, tw) = sketch_rgb.shape[-2:], truth_rgb.shape[-2:]
        if (h, w) != (th, tw):
            raise ImageError(f"the sketch is {w}x{h} but the ground truth is {tw}x{th}")
        hint_file = find_hint_file(given_dir, pair.name) if given_dir is not None else None
        kind: HintKind
        if hint_file is not None:
            files["hints"] = str(hint_file)
            layer = load_hint_file(hint_file, (h, w))
            kind = "given"
        else:
            layer = synthetic_hints(
                truth_rgb, sketch_rgb, hint_config, derive_seed(seed, f"hints/{pair.name}"),
                resolution=bundle.config.resolution, num_strokes=num_strokes,
            )  # fmt: skip
            kind = "synthetic"
    except Exception as exc:  # noqa: BLE001 - one bad item is a failed item, never the end of the run
        return ItemResult(pair.name, error=_error_text(exc), files=files, seed=item_seed)
    return _Loaded(pair, sketch_rgb, truth_rgb, layer, kind, item_seed, files)


def _with_reference(
    item: _Loaded, mode: ReferenceMode, reference_dir: str | Path | None, seed: int
) -> _Loaded | ItemResult:
    """The item with its reference (see :func:`evaluate_model`), or a failed item."""
    name = item.pair.name
    try:
        # Named, so a warning (a greyscale reference) says which item it is about.
        reference: NamedReference
        if mode == "self-warped":
            warped = self_warped_reference(item.truth_rgb, derive_seed(seed, f"reference/{name}"))
            reference = NamedReference(warped, f"the self-warped reference of {name}")
            files = item.files
        else:
            path = find_hint_file(Path(str(reference_dir)), name)
            if path is None or path.suffix.lower() == ".json":
                raise ImageError(f"no reference for {name} in {reference_dir}")
            reference = NamedReference(load_rgb(path), str(path))
            files = {**item.files, "reference": str(path)}
    except Exception as exc:  # noqa: BLE001 - one bad item is a failed item
        return ItemResult(name, error=_error_text(exc), files=item.files, seed=item.seed)
    return dataclasses.replace(item, reference=reference, files=files)


def _colorize(
    ready: list[_Loaded], bundle: ModelBundle, sample_config: SampleConfig
) -> list[torch.Tensor | str]:
    """One batch through the model; if it fails, item by item so one bad item fails alone."""
    if not ready:
        return []
    try:
        results = colorize_batch(
            [r.sketch_rgb for r in ready],
            [r.layer for r in ready],
            bundle,
            sample_config,
            [r.seed for r in ready],
            references=[r.reference for r in ready],
            names=[r.pair.name for r in ready],
        )
    except Exception as exc:  # noqa: BLE001 - find the culprit, score the others
        if len(ready) == 1:
            return [_error_text(exc)]
        return [out for r in ready for out in _colorize([r], bundle, sample_config)]
    # Score what a user gets: the 8-bit image colorize writes.
    return [image_to_tensor(result.image) for result in results]


def _score_output(
    item: _Loaded,
    output: torch.Tensor | str,
    bundle: ModelBundle,
    lpips: LpipsMetric | None,
    fid: _FidCollector,
) -> ItemResult:
    name, files, kind, seed = item.pair.name, item.files, item.kind, item.seed
    if isinstance(output, str):
        return ItemResult(name, error=output, files=files, hints=kind, seed=seed)
    layer = item.layer
    if bundle.config.conditioning.mode == "lineart":
        # Line pixels are multiplied by the sketch's ink, whatever colour was asked for there.
        off_lines = (sketch_lightness(item.sketch_rgb) >= LINE_LEVEL).to(layer.mask.dtype)
        layer = HintLayer(layer.rgb * off_lines, layer.mask * off_lines)
    try:
        metrics = score_pair(output, item.truth_rgb, layer, lpips)
        fid.add(output, item.truth_rgb)
    except Exception as exc:  # noqa: BLE001 - one bad item is a failed item, never the end of the run
        return ItemResult(name, error=_error_text(exc), files=files, hints=kind, seed=seed)
    return ItemResult(name, metrics, files=files, hints=kind, hint_pixels=int(layer.mask.sum()), seed=seed)


# ----------------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray | Sequence[float],
    sigma1: np.ndarray | Sequence[Sequence[float]],
    mu2: np.ndarray | Sequence[float],
    sigma2: np.ndarray | Sequence[Sequence[float]],
) -> float:
    """Fréchet distance between two Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))  (Dowson & Landau 1982;
    the FID of Heusel et al. 2017 is this between Inception feature statistics).

    The trace of the matrix square root is computed without one: sigma1 sigma2 has the eigenvalues
    of the symmetric positive semi-definite s1^(1/2) sigma2 s1^(1/2), so
    Tr((sigma1 sigma2)^(1/2)) is the sum of the square roots of those (symmetric eigensolver, no
    complex round-off, singular covariances from small sets are fine).

    Args:
        mu1: (D,) mean.
        sigma1: (D, D) covariance (symmetric positive semi-definite).
        mu2: (D,) mean.
        sigma2: (D, D) covariance.

    Returns:
        The squared distance d^2 (>= 0; what FID reports), as a float.

    Raises:
        ValueError: Mismatched shapes or non-finite values.
    """
    m1, m2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"need means (D,) and covariances (D, D) of one D; got {m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}"
        )
    if not all(np.isfinite(x).all() for x in (m1, m2, s1, s2)):
        raise ValueError("means and covariances must be finite")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    eigval, eigvec = np.linalg.eigh(s1)
    root1 = (eigvec * np.sqrt(eigval.clip(min=0))) @ eigvec.T
    inner = root1 @ s2 @ root1
    trace_sqrt = float(np.sqrt(np.linalg.eigvalsh((inner + inner.T) / 2).clip(min=0)).sum())
    diff = m1 - m2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt))


def fid_from_features(pred_features: np.ndarray, truth_features: np.ndarray) -> float:
    """FID between two feature sets (rows are images), via their means and covariances.

    Raises:
        ValueError: Fewer than two rows in a set, or different feature sizes.
    """
    a, b = np.asarray(pred_features, np.float64), np.asarray(truth_features, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with one D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two images per set")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def fid_weights_path() -> Path:
    """Where the FID Inception weights must be: ``<torch hub dir>/checkpoints/pt_inception-...pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def fid_available() -> bool:
    """Whether :class:`FidMetric` can be built: the weights file exists and pytorch-fid is installed."""
    return fid_weights_path().is_file() and importlib.util.find_spec("pytorch_fid") is not None


class FidMetric:
    """Inception pool3 features for FID (Heusel et al. 2017), built without any download.

    Uses the optional ``pytorch-fid`` package's Inception network with the TensorFlow FID weights,
    which must already be in the torch hub cache (:func:`fid_weights_path`); the file is read with
    ``torch.load(..., weights_only=True)`` and loaded strictly. FID is a set statistic: it needs
    many images (thousands for stable values) and is biased upwards for small sets.

    Args:
        device: Where to run the network.

    Raises:
        MetricUnavailableError: The weights file is missing or unreadable, or pytorch-fid is not
            installed (the message says how to provide them).
    """

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        from unittest import mock

        path = fid_weights_path()
        try:
            from pytorch_fid import inception
        except ImportError:
            also = (
                ""
                if path.is_file()
                else f", and the Inception weights at {path}, which does not exist either (download {FID_WEIGHTS_URL})"
            )
            raise MetricUnavailableError(
                f"FID needs the pytorch-fid package, which is not installed{also}",
                hint='pip install "sketchcolor[fid]"',
            ) from None
        if not path.is_file():
            raise MetricUnavailableError(
                f"FID needs the Inception weights at {path}, which does not exist; "
                f"download {FID_WEIGHTS_URL} and save it at exactly that path",
                hint=f"curl -L --create-dirs -o {path} {FID_WEIGHTS_URL}",
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            raise MetricUnavailableError(
                f"{path} is not a readable PyTorch weight file ({type(exc).__name__}); "
                f"replace it with {FID_WEIGHTS_URL}"
            ) from None

        def local_weights(url: str, *args: Any, **kwargs: Any) -> Any:
            # pytorch-fid would download here; hand it the local file instead (never the network).
            if not str(url).endswith(FID_WEIGHTS_FILENAME):
                raise MetricUnavailableError(f"pytorch-fid asked for {url}; sketchcolor never downloads")
            return state

        try:
            with mock.patch.object(inception, "load_state_dict_from_url", local_weights):
                net = inception.InceptionV3([3], resize_input=True, normalize_input=True)
        except (AttributeError, RuntimeError, KeyError, TypeError) as exc:
            raise MetricUnavailableError(
                f"{path}: cannot build the FID Inception network with this pytorch-fid version ({exc})"
            ) from None
        self.device = torch.device(device)
        self._net = net.eval().requires_grad_(False).to(self.device)

    def features(self, rgb: torch.Tensor) -> np.ndarray:
        """(N, 2048) float64 pool3 features of (N, 3, H, W) sRGB in [0, 1] (resized to 299 inside)."""
        if rgb.dim() != 4 or rgb.shape[1] != 3 or not (rgb.min() >= 0 and rgb.max() <= 1):
            raise ValueError("FID features need (N, 3, H, W) RGB in [0, 1]")
        with torch.no_grad():
            pooled = self._net(rgb.to(self.device, torch.float32))[0]
        return pooled.reshape(pooled.shape[0], -1).double().cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Thresholds, sweeps
# ----------------------------------------------------------------------------------------------


def _check_metric_name(name: str, where: str) -> None:
    if name not in METRICS:
        raise ConfigError(f"{where}: unknown metric '{name}'; valid names: {', '.join(METRICS)}")


def parse_thresholds(specs: Iterable[str]) -> dict[str, float]:
    """``["psnr=18", "ssim=0.8"]`` -> ``{"psnr": 18.0, "ssim": 0.8}``.

    Raises:
        ConfigError: Not NAME=VALUE, an unknown metric (the message lists the valid names), a value
            that is not a finite number, or a metric given twice.
    """
    limits: dict[str, float] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ConfigError(f"threshold '{spec}' must be NAME=VALUE, e.g. psnr=18")
        _check_metric_name(name, f"threshold '{spec}'")
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"threshold '{spec}': '{text.strip()}' is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"threshold '{spec}': the value must be finite")
        if name in limits:
            raise ConfigError(f"threshold '{spec}': {name} is given twice")
        limits[name] = value
    return limits


def _row_label(row: Mapping[str, Any]) -> str:
    parts = []
    if row.get("model") is not None or row.get("mode") == "model":
        parts.append(f"model {row.get('model') or 'default'}")
    if row.get("step") is not None:
        parts.append(f"step {row['step']}")
    if row.get("mode") == "model":
        parts.append(
            f"strokes {row['strokes']}" if row.get("strokes") is not None else f"hints {row.get('hints')}"
        )
    if row.get("pred") is not None:
        parts.append(f"predictions {row['pred']}")
    return ", ".join(parts) or "results"


def check_thresholds(
    rows: Sequence[Mapping[str, Any]],
    fail_under: Mapping[str, float] | None = None,
    fail_over: Mapping[str, float] | None = None,
) -> list[str]:
    """Which thresholds the rows (:meth:`EvalReport.summary`) do not meet.

    ``fail_under[m] = x`` fails a row whose mean ``m`` is below x; ``fail_over[m] = x`` one whose
    mean is above x. A threshold can never pass unchecked: a metric missing from a row (not
    computed, e.g. LPIPS without weights) is a violation, and so is a metric that is NaN ("not
    applicable", e.g. hint error without hints) in every row; rows where it is NaN are otherwise
    skipped (the 0-stroke row of a hint sweep).

    Returns:
        One line per violation (empty if all thresholds are met).

    Raises:
        ConfigError: An unknown metric name (the message lists the valid names).
    """
    violations: list[str] = []
    for kind, limits in (("under", fail_under or {}), ("over", fail_over or {})):
        for name, limit in limits.items():
            _check_metric_name(name, f"--fail-{kind} {name}={limit:g}")
            checked = 0
            for row in rows:
                where = _row_label(row)
                value = row.get(name)
                if value is None:
                    violations.append(
                        f"{name} was not computed ({where}); cannot check --fail-{kind} {name}={limit:g}"
                    )
                    continue
                value = float(value)
                if math.isnan(value):
                    continue
                checked += 1
                if kind == "under" and value < limit:
                    violations.append(f"{name} = {value:.4g} is under {limit:g} ({where})")
                elif kind == "over" and value > limit:
                    violations.append(f"{name} = {value:.4g} is over {limit:g} ({where})")
            if checked == 0 and all(row.get(name) is not None for row in rows):
                violations.append(
                    f"{name} has no value in any result; cannot check --fail-{kind} {name}={limit:g}"
                )
    return violations


def parse_sweep(text: str) -> list[int]:
    """``"0,1,2,4"`` -> ``[0, 1, 2, 4]`` (stroke counts of a hint sweep, in the given order).

    Raises:
        ConfigError: Empty, not integers, negative or repeated values.
    """
    values: list[int] = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ConfigError(
                f"hint sweep '{text}' must be comma-separated stroke counts, e.g. 0,1,2,4,8,16"
            ) from None
        if value < 0:
            raise ConfigError(f"hint sweep '{text}': stroke counts must be >= 0")
        if value in values:
            raise ConfigError(f"hint sweep '{text}': {value} is given twice")
        values.append(value)
    return values


# ----------------------------------------------------------------------------------------------
# Report files
# ----------------------------------------------------------------------------------------------


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def report_document(
    reports: Sequence[EvalReport],
    *,
    parameters: Mapping[str, Any] | None = None,
    fail_under: Mapping[str, float] | None = None,
    fail_over: Mapping[str, float] | None = None,
    violations: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON report of one ``eval`` call (schema in docs/eval.md).

    Rows and items carry ``run`` (the index of their report). Non-finite floats are kept here;
    :func:`write_json` writes them as null.
    """
    rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for run, report in enumerate(reports):
        row = {"run": run, **report.summary()}
        rows.append(row)
        tag: dict[str, Any] = {"run": run}
        tag.update({k: row[k] for k in ("model", "step", "strokes") if k in row})
        for item in report.items:
            items.append({**tag, **item.to_dict()})
            if not item.ok:
                failures.append({**tag, "name": item.name, "error": item.error})
        notes += [{**tag, "note": note} for note in report.notes]
    return {
        "format": "sketchcolor-eval",
        "version": REPORT_VERSION,
        "sketchcolor_version": __version__,
        "parameters": dict(parameters or {}),
        "thresholds": {"fail_under": dict(fail_under or {}), "fail_over": dict(fail_over or {})},
        "rows": rows,
        "failures": failures,
        "violations": list(violations),
        "notes": notes,
        "ok": not failures and not violations,
        "items": items,
    }


def write_json(document: Mapping[str, Any], path: str | Path) -> Path:
    """Write a report atomically as JSON (NaN and infinities as null), replacing ``path``."""
    text = json.dumps(_finite_or_none(document), indent=2) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=True)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write summary rows atomically as CSV (one line per row; schema in docs/eval.md).

    Columns follow :data:`CSV_COLUMNS`; a column no row has is left out (mode A rows have
    ``pred`` and ``truth``, model rows ``model``, ``step``, ...). Empty cells are "not applicable";
    non-finite values are written ``inf`` / ``nan``.
    """
    present = {key for row in rows for key in row}
    columns = [c for c in CSV_COLUMNS if c in present]
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return write_bytes_atomic(path, buffer.getvalue().encode("utf-8"), overwrite=True)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _series_name(row: Mapping[str, Any], by: str) -> str:
    if by == "strokes":
        if row.get("strokes") is not None:
            return f"{row['strokes']} strokes"
        return "given hints" if row.get("hints") == "given" else f"random (max {row.get('max_strokes')})"
    return Path(str(row.get("model") or "default")).name


def check_plot_available() -> None:
    """Fail before any work when plots cannot be drawn.

    Raises:
        SketchcolorError: matplotlib (the ``plot`` extra) is not installed.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise SketchcolorError(
            "--plot needs matplotlib, which is not installed", hint='pip install "sketchcolor[plot]"'
        )


def plot_metrics(
    rows: Sequence[Mapping[str, Any]], path: str | Path, *, x: Literal["auto", "step", "strokes"] = "auto"
) -> Path:
    """Plot each metric of the summary rows against training step (or hint strokes) as a PNG.

    With ``x="auto"`` the x axis is the training step, one line per hint setting, unless all rows
    share one step and differ in strokes: then it is the hint sweep curve (metric against number
    of strokes, Zhang et al. 2017), one line per model. Non-finite values are left out. The file is
    written atomically (replacing ``path``).

    Raises:
        SketchcolorError: matplotlib is missing (the ``plot`` extra), the rows have no training
            step, or no metric has a finite value.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SketchcolorError(
            "plotting needs matplotlib, which is not installed", hint='pip install "sketchcolor[plot]"'
        ) from None
    steps = {row.get("step") for row in rows}
    strokes = {row.get("strokes") for row in rows}
    if x == "auto":
        x = "strokes" if len(steps) == 1 and len(strokes) > 1 and None not in strokes else "step"
    if any(not isinstance(row.get(x), int) for row in rows):
        raise SketchcolorError(
            f"cannot plot against {x}: not every result has one (plots need --model results)"
        )
    # The truths' colourfulness is a property of the test set, not of a model: not plotted.
    metrics = [m for m in METRICS if m != "colourfulness_truth" and any(_finite(row.get(m)) for row in rows)]
    if not metrics:
        raise SketchcolorError("nothing to plot: no metric has a finite value")
    by = "strokes" if x == "step" else "model"
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault(_series_name(row, by), []).append(row)

    ncols = 2 if len(metrics) == 4 else min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, metric in zip(axes, metrics, strict=False):
        for colour, (label, members) in enumerate(series.items()):
            points = sorted((row[x], row[metric]) for row in members if _finite(row.get(metric)))
            if points:
                # One colour per series in every panel, even where a series has no values.
                ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=f"C{colour}", label=label)
        better = METRICS[metric]
        ax.set_title(
            f"{metric} ({better} is better)" if better != "neither" else f"{metric} (aim: the truth's)"
        )
        ax.set_xlabel("training step" if x == "step" else "hint strokes")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    if len(series) > 1:
        axes[0].legend(fontsize="small")
    with atomic_write(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
