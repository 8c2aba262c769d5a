"""``sketchcolor colorize``: one sketch, hints of every kind, reproducible outputs.

Examples::

    sketchcolor colorize sketch.png --hints scribble.png -o out.png
    sketchcolor colorize sketch.png --hint 120,80,#d03030 --hint 0.5,0.9,skyblue -o out.png
    sketchcolor colorize page.png --hints-in-sketch --flat --save-flats -o page.colored.png
    sketchcolor colorize sketch.png --num-samples 4 --seed 10 -o variant.png
    sketchcolor colorize --from-png out.png -o again.png
    cat sketch.png | sketchcolor colorize - -o - > out.png

Every input is read once (a pipe or ``-``, standard input, works), every output is checked before
the model runs (suffix, folder, existing file) and never replaces an input of the command, and
every PNG carries a record from which ``--from-png`` re-creates it (docs/reliability.md).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import HintError, OutputError, SketchcolorError
from .app import (
    DEFAULTS,
    DeviceOpt,
    EtaOpt,
    FormatOpt,
    GuidanceOpt,
    Mode,
    ModelOpt,
    OutputFormat,
    OverwriteOpt,
    PinHintsOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    Sampler,
    SamplerOpt,
    SeedOpt,
    StepsOpt,
    app,
    emit,
    progress_bar,
    stderr,
    working_on,
)

log = logging.getLogger("sketchcolor")

#: Layout of the ``sketchcolor`` record in output PNGs (docs/reliability.md). Version 1 records
#: (paths as given, no hint digests) are still read.
RECORD_VERSION = 2


def _hint_radius(value: float | None) -> float | None:
    from ..io import check_hint_extent

    if value is None:
        return None
    try:
        return check_hint_extent(value, "the radius")
    except HintError as exc:
        raise typer.BadParameter(exc.message) from None


# Hint and output options shared by `colorize` and `batch`.
HintsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--hints",
        help="Hints image (transparent or white pixels = no hint) or a .json hints file. Repeatable.",
    ),
]
HintOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--hint",
        help="A point hint X,Y,COLOR: pixels (120,80) or fractions (0.5,0.25); hex or CSS colour. Repeatable.",
    ),
]
HintRadiusOpt = Annotated[
    float | None,
    typer.Option(
        "--hint-radius",
        min=0.0,
        callback=_hint_radius,
        help="Radius of point hints in pixels, finite (default 1% of size). JSON radius/width: same rule.",
    ),
]
HintsInSketchOpt = Annotated[
    bool, typer.Option("--hints-in-sketch", help="Colour scribbles drawn on the sketch itself are the hints.")
]
StretchOpt = Annotated[
    bool,
    typer.Option(
        "--stretch-hints", help="Stretch hints images whose aspect ratio differs from the sketch's."
    ),
]
FlatOpt = Annotated[bool, typer.Option("--flat", help="Clean flats: one colour per line-enclosed region.")]
NoHintRegionsOpt = Annotated[
    bool,
    typer.Option(
        "--no-hint-regions",
        help="Let the model colour hinted regions too (default: a region with hints is filled with them).",
    ),
]
SaveFlatsOpt = Annotated[
    bool, typer.Option("--save-flats", help="Also write the colour layer without lines (OUT.flats.png).")
]
SaveHintsOpt = Annotated[
    bool, typer.Option("--save-hints", help="Also write the hints used (OUT.hints.png).")
]
ModeOpt = Annotated[
    Mode | None,
    typer.Option("--mode", help="Check the model's kind: lineart, or photo for greyscale photos."),
]
ReferenceOpt = Annotated[
    Path | None,
    typer.Option(
        "--reference",
        help="Reference picture whose colours to follow (any size; transparency on white). Hints win "
        "where given. Needs a model with reference conditioning (the bundled one has it).",
    ),
]
ReferenceScaleOpt = Annotated[
    float,
    typer.Option(
        "--reference-scale",
        min=0.0,
        max=20.0,
        help="Classifier-free guidance on the reference: 1 = off, higher follows it more closely.",
    ),
]
ReferenceSnapOpt = Annotated[
    float,
    typer.Option(
        "--reference-snap",
        min=0.0,
        help="With --reference: a one-colour region within this CIE LAB distance of one of the "
        "reference's flat colours takes that colour exactly; 0 = off (the model's colours), 1000 = always.",
    ),
]


@dataclasses.dataclass(frozen=True)
class ColorJob:
    """Everything `colorize` and `batch` share: sampling, hints and output options."""

    sample: Any  # SampleConfig
    hints: tuple[Path, ...] = ()
    points: tuple[str, ...] = ()
    hint_radius: float | None = None
    hints_in_sketch: bool = False
    stretch: bool = False
    flat: bool = False
    hint_regions: bool = True
    save_flats: bool = False
    save_hints: bool = False
    num_samples: int = 1
    model_path: str | None = None
    reference: Path | None = None

    def sources(self, extra_hints: tuple[Path, ...] = ()) -> dict[str, Any]:
        """The hint sources, as recorded in output PNGs (for people; ``inputs`` has the files)."""
        files = [*self.hints, *extra_hints]
        return {
            "images": [str(p) for p in files if not is_json(p)],
            "json": [str(p) for p in files if is_json(p)],
            "points": list(self.points),
            "radius": self.hint_radius,
            "in_sketch": self.hints_in_sketch,
            "stretch": self.stretch,
        }


def is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def make_job(
    *,
    steps: int,
    sampler: Sampler,
    eta: float,
    guidance: float,
    hints: list[Path] | None,
    pin_hints: bool = DEFAULTS.pin_hints,
    points: list[str] | None,
    hint_radius: float | None,
    hints_in_sketch: bool,
    stretch: bool,
    flat: bool,
    save_flats: bool,
    save_hints: bool,
    num_samples: int = 1,
    model: Path | None = None,
    hint_regions: bool = True,
    reference: Path | None = None,
    reference_scale: float = DEFAULTS.reference_scale,
    reference_snap: float = DEFAULTS.reference_snap,
    precision: Precision = Precision(DEFAULTS.precision),
) -> ColorJob:
    from ..config import SampleConfig

    return ColorJob(
        sample=SampleConfig(
            sampler=sampler.value,
            steps=steps,
            eta=eta,
            guidance=guidance,
            pin_hints=pin_hints,
            reference_scale=reference_scale,
            reference_snap=reference_snap,
            precision=precision.value,
        ),  # fmt: skip
        hints=tuple(hints or ()),
        points=tuple(points or ()),
        hint_radius=hint_radius,
        hints_in_sketch=hints_in_sketch,
        stretch=stretch,
        flat=flat,
        hint_regions=hint_regions,
        save_flats=save_flats,
        save_hints=save_hints,
        num_samples=num_samples,
        model_path=str(model) if model else None,
        reference=reference,
    )


def check_mode(bundle: Any, mode: Mode | None) -> None:
    if mode is not None and bundle.config.conditioning.mode != mode.value:
        where = bundle.path or "the model"
        raise SketchcolorError(
            f"{where}: is a {bundle.config.conditioning.mode} model, not a {mode.value} model",
            hint="train one with: sketchcolor train --mode photo" if mode is Mode.photo else None,
        )


def bytes_digest(data: bytes) -> str:
    """The digest recorded for an input file: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return bytes_digest(path.read_bytes())


def output_paths(out: Path, job: ColorJob) -> list[Path]:
    """The files a job writes for one sketch: out (or out-1..out-N), flats and hints beside."""
    if job.num_samples == 1:
        images = [out]
    else:
        images = [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(job.num_samples)]
    extra = []
    if job.save_flats:
        extra += [p.with_name(f"{p.stem}.flats.png") for p in images]
    if job.save_hints:
        extra.append(out.with_name(f"{out.stem}.hints.png"))
    return images + extra


# ----------------------------------------------------------------------------------------------
# Inputs: read once, recorded with their digests
# ----------------------------------------------------------------------------------------------


def file_entry(path: Path, data: bytes | None, role: str) -> dict[str, Any]:
    """How an input file is recorded: as given, absolute, digest; ``rel`` is added when saving."""
    from ..io import is_regular_file, is_stdio

    stream = not is_regular_file(path)
    return {
        "role": role,
        "path": "-" if is_stdio(path) else str(path),
        "abs": None if stream else str(Path(path).resolve()),
        "digest": bytes_digest(data) if data is not None else None,
        "stream": stream,
    }


@dataclasses.dataclass(frozen=True)
class Inputs:
    """A sketch and its merged hints, read once, with the record entries of every file used."""

    sketch_image: Any  # the decoded PIL picture, or (1, 3, H, W) float tensor (scribbles split off)
    layer: Any  # HintLayer
    entries: list[dict[str, Any]]
    reference: Any = None  # NamedReference or pipeline.PreparedReference, or None


def read_reference_file(path: Path, data: bytes | None = None) -> tuple[Any, dict[str, Any]]:
    """A reference file (its bytes ``data`` if already read) as a ``pipeline.NamedReference``
    named by its path, and its record entry."""
    from ..io import decode_image, read_input_bytes
    from ..pipeline import NamedReference, read_sketch

    if data is None:
        data = read_input_bytes(path, what="image")
    return NamedReference(read_sketch(decode_image(data, str(path))), str(path)), file_entry(
        path, data, "reference"
    )


class ReferenceCache:
    """Reference files read and prepared once for one model, for the pages of a batch.

    A chapter's pages share one reference (``batch --reference``); reading, decoding, letterboxing
    and finding the palette of the same file again for every page would be wasted. Holds the
    ``size`` files used last (a ``--reference-dir`` may hold one per page); a file changed on disk
    since it was read (another size or modification time) is read again. ``by_content``: files
    are known by their bytes instead (their SHA-256), for the UI, which writes the same upload to
    a new folder for every picture. Safe across threads.
    """

    def __init__(self, bundle: Any, size: int = 16, *, by_content: bool = False) -> None:
        self._bundle, self._size, self._by_content = bundle, size, by_content
        self._items: collections.OrderedDict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[Any, dict[str, Any]]:
        """(``pipeline.PreparedReference``, a fresh record entry naming ``path``) for ``path``."""
        from ..io import read_input_bytes
        from ..pipeline import read_reference

        data: bytes | None = None
        key: tuple[Any, ...] | None
        if self._by_content:
            data = read_input_bytes(path, what="image")
            key = ("content", bytes_digest(data))
        else:
            try:
                st = os.stat(path)
                key = (path, st.st_mtime_ns, st.st_size)
            except OSError:
                key = None  # reading it says what is wrong
        with self._lock:
            hit = self._items.get(key) if key is not None else None
            if hit is not None and key is not None:
                self._items.move_to_end(key)
        if hit is not None:
            entry = file_entry(path, data, "reference") if self._by_content else dict(hit[1])
            return hit[0], entry
        named, entry = read_reference_file(path, data)
        prepared = read_reference(named, self._bundle)
        if key is None:
            return prepared, entry
        with self._lock:
            self._items[key] = (prepared, entry)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return prepared, dict(entry)


def load_inputs(
    sketch: Path,
    job: ColorJob,
    extra_hints: tuple[Path, ...] = (),
    reference: Path | None = None,
    references: ReferenceCache | None = None,
) -> Inputs:
    """Read a sketch, merge all its hint sources and read its reference, each file once.

    ``reference`` (a per-item reference, ``batch``) replaces the job's own ``reference``; with
    ``references`` the reference comes from that cache (read once per file, ``batch``).

    Sources paint over each other in the library's order (:func:`sketchcolor.pipeline.build_hints`):
    scribbles in the sketch, hints images, JSON files, points. ``extra_hints`` are per-item hint
    files (``batch``), after the job's own. A pipe or ``-`` works for the sketch and hints images
    (their bytes are kept in memory); JSON hints must be regular files.

    Raises:
        ImageError, HintError: Unreadable or malformed inputs (named).
    """
    from ..conditioning import HintLayer
    from ..io import decode_image, is_regular_file, read_input_bytes
    from ..pipeline import build_hints, hints_from_image, read_sketch, split_hints_from_sketch

    data = read_input_bytes(sketch, what="image")
    picture = decode_image(data, str(sketch))
    entries = [file_entry(sketch, data, "sketch")]
    size = (picture.height, picture.width)
    layer = None
    # The decoded picture goes to the library as it is (read there in 8 bits, no float copy of a
    # large page); only scribbles in the sketch need it as floats here.
    sketch_image: Any = picture
    if job.hints_in_sketch:
        sketch_image, layer = split_hints_from_sketch(read_sketch(picture))
        if layer.is_empty:
            log.warning("%s: --hints-in-sketch found no coloured scribbles in the sketch", sketch)
    files = [*job.hints, *extra_hints]
    for path in files:
        if is_json(path):
            continue
        hint_data = read_input_bytes(path, what="image")
        image = decode_image(hint_data, str(path))
        below = layer if layer is not None else HintLayer.empty(size)
        layer = hints_from_image(image, size, stretch=job.stretch, name=str(path)).over(below)
        entries.append(file_entry(path, hint_data, "hints"))
    json_files = [p for p in files if is_json(p)]
    for path in json_files:
        if not is_regular_file(path):
            if not path.exists():
                raise HintError(f"{path}: file not found")
            raise HintError(f"{path}: JSON hints must be a regular file, not a pipe or folder")
        entries.append(file_entry(path, read_input_bytes(path), "json"))
    layer = build_hints(
        size, json_files=json_files, points=job.points, in_sketch=layer, point_radius=job.hint_radius
    )
    if (files or job.points or job.hints_in_sketch) and layer.is_empty:
        log.warning(
            "%s: the hints hold no hint pixels (all white or transparent); colourising from the sketch alone",
            sketch,
        )
    named = None
    reference = reference if reference is not None else job.reference
    if reference is not None and references is not None:
        named, entry = references.get(reference)
        entries.append(entry)
    elif reference is not None:
        named, entry = read_reference_file(reference)
        entries.append(entry)
    return Inputs(sketch_image, layer, entries, named)


# ----------------------------------------------------------------------------------------------
# Outputs: checked before any work, never over an input, atomic, with their records
# ----------------------------------------------------------------------------------------------


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one existing file (links and case-insensitive systems included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    paths: list[Path],
    inputs: list[Path],
    *,
    overwrite: bool,
    input_roles: dict[Path, str] | None = None,
    animation: Path | None = None,
) -> None:
    """Before any work: every output can be written, is free (or ``overwrite``), and is no input.

    An input of the command (the sketch, a hints file, the PNG being reproduced) is never written
    over, whatever ``overwrite`` says. ``animation`` (in ``paths``) is the ``--save-steps`` GIF.

    Raises:
        ImageError: An output suffix that cannot be written.
        OutputError: An output that is a folder, sits under a file, or is an input.
        OutputExistsError: An output exists and ``overwrite`` is False.
    """
    from ..errors import OutputExistsError
    from ..io import check_output_path, is_stdio, output_format

    roles = input_roles or {}
    for p in paths:
        if is_stdio(p):
            continue
        check_output_path(p)
        if p != animation:
            output_format(p)  # a suffix that cannot be written is refused now, not after sampling
        for q in inputs:
            if not is_stdio(q) and same_file(p, q):
                what = roles.get(q, "an input")
                raise OutputError(
                    f"{p}: is {what} of this command; refusing to write over it (whatever --overwrite says)",
                    hint=f"choose another output, e.g. -o {p.with_name(p.stem + '.colored.png')}",
                )
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p}: already exists", hint="pass --overwrite to replace it")


def _relative(target: str | None, folder: Path | None) -> str | None:
    if target is None or folder is None:
        return None
    try:
        return os.path.relpath(target, folder.resolve())
    except ValueError:  # another drive (Windows)
        return None


def _with_rel(record: dict[str, Any], out: Path) -> dict[str, Any]:
    """Add paths relative to the output's folder, so the record works from any working folder."""
    from ..io import is_stdio

    folder = None if is_stdio(out) else out.parent
    entries = [{**e, "rel": _relative(e.get("abs"), folder)} for e in record.get("inputs", [])]
    model_rel = _relative(record.get("model_abs"), folder)
    return {**record, "inputs": entries, "model_rel": model_rel}


def save_outputs(
    result: Any,
    out: Path,
    job: ColorJob,
    base: dict[str, Any],
    *,
    overwrite: bool,
    save_steps: Path | None = None,
) -> list[dict[str, Any]]:
    """Write a result's images (atomically, with their records), flats, hints and GIFs.

    ``out`` may be ``-``: the one PNG goes to standard output.
    """
    from ..io import encode_image, is_stdio, save_gif, save_image, tensor_to_image

    records = []
    image_paths = output_paths(out, job)[: len(result.images)]
    for i, (image, path) in enumerate(zip(result.images, image_paths, strict=True)):
        record = _with_rel({**result.records[i], **base, "output": str(path)}, path)
        text = {"sketchcolor": json.dumps(record, sort_keys=True)}
        if is_stdio(path):
            sys.stdout.buffer.write(encode_image(image, "PNG", text=text))
            sys.stdout.buffer.flush()
        else:
            save_image(image, path, overwrite=overwrite, text=text)
        if job.save_flats:  # side files carry their picture's record too (and say what they are)
            side = {"sketchcolor": json.dumps({**record, "side_file": "flats"}, sort_keys=True)}
            save_image(
                result.flats[i], path.with_name(f"{path.stem}.flats.png"), overwrite=overwrite, text=side
            )
        records.append(record)
    if job.save_hints:
        side = {"sketchcolor": json.dumps({**records[0], "side_file": "hints"}, sort_keys=True)}
        save_image(
            tensor_to_image(result.hints.to_rgba()),
            out.with_name(f"{out.stem}.hints.png"),
            overwrite=overwrite,
            text=side,
        )
    if save_steps is not None:
        for i, frames in enumerate(result.frames):
            target = (
                save_steps
                if len(result.frames) == 1
                else save_steps.with_name(f"{save_steps.stem}-{i + 1}.gif")
            )
            save_gif(frames, target, overwrite=overwrite)
    return records


def base_record(inputs: Inputs, job: ColorJob, extra_hints: tuple[Path, ...] = ()) -> dict[str, Any]:
    """What every output of one sketch records besides the pipeline's own record."""
    sketch = inputs.entries[0]
    return {
        "record_version": RECORD_VERSION,
        "input": sketch["path"],
        "input_digest": sketch["digest"],
        "inputs": inputs.entries,
        "hint_sources": job.sources(extra_hints),
        "model": job.model_path,
        "model_abs": str(Path(job.model_path).resolve()) if job.model_path else None,
        "side_files": {"flats": job.save_flats, "hints": job.save_hints},
    }


def keep_sample(result: Any, pick: int) -> Any:
    """One sample of a multi-sample result (as if it had been the only one)."""
    return dataclasses.replace(
        result,
        images=[result.images[pick]],
        flats=[result.flats[pick]] if result.flats else [],
        records=[result.records[pick]],
        frames=[result.frames[pick]] if result.frames else [],
    )


# ----------------------------------------------------------------------------------------------
# --from-png: the record back into a job
# ----------------------------------------------------------------------------------------------

_MISSING = object()


class _Record:
    """Typed access to a PNG's sketchcolor record; every bad field is a one-line error."""

    def __init__(self, png: Path, data: Any) -> None:
        if not isinstance(data, dict) or not data:
            raise SketchcolorError(f"{png}: its sketchcolor record is empty or not a JSON object")
        self.png, self.data = png, data

    def bad(self, key: str, expected: str) -> SketchcolorError:
        got = self.data.get(key, "(missing)")
        return SketchcolorError(
            f"{self.png}: its sketchcolor record has a bad '{key}' ({json.dumps(got)[:60]}; expected {expected})",
            hint="the file was not written by this version of sketchcolor, or was edited",
        )

    def get(self, key: str, expected: str, ok: Any, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise SketchcolorError(
                    f"{self.png}: its sketchcolor record has no '{key}'",
                    hint="the file was not written by sketchcolor, or was edited",
                )
            return default
        value = self.data[key]
        try:
            good = bool(ok(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise self.bad(key, expected)
        return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def read_record(png: Path) -> _Record:
    """The record of a PNG written by sketchcolor, checked field by field where used."""
    from ..io import read_png_text

    text = read_png_text(png).get("sketchcolor")
    if text is None:
        why = (
            "only PNG outputs carry one"
            if png.suffix.lower() != ".png"
            else "not written by sketchcolor colorize or batch"
        )
        raise SketchcolorError(f"{png}: holds no sketchcolor record ({why})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise SketchcolorError(f"{png}: its sketchcolor record is not valid JSON") from None
    return _Record(png, data)


def _recorded_inputs(rec: _Record) -> list[dict[str, Any]]:
    """The record's input files (version 2), or the same built from a version 1 record."""
    if "inputs" in rec.data:
        entries = rec.get(
            "inputs",
            "a list of input files",
            lambda v: (
                isinstance(v, list)
                and v
                and all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in v)
                and v[0].get("role") == "sketch"
            ),
        )
        return list(entries)
    sketch = rec.get("input", "the sketch's path", lambda v: isinstance(v, str) and v)
    sources = rec.get("hint_sources", "an object", lambda v: isinstance(v, dict), {})
    files = [*sources.get("images", []), *sources.get("json", [])]
    if not all(isinstance(p, str) for p in files):
        raise rec.bad("hint_sources", "lists of file names")
    return [
        {"role": "sketch", "path": sketch, "digest": rec.data.get("input_digest")},
        *[{"role": "json" if p.lower().endswith(".json") else "hints", "path": p} for p in files],
    ]


def locate_input(entry: dict[str, Any], png: Path, override: Path | None = None) -> Path:
    """Find a recorded input: ``rel`` (beside the PNG), ``abs``, then the path as given.

    Raises:
        SketchcolorError: The input is missing, was read from a pipe, or has changed (digest).
    """
    role = {"sketch": "sketch", "hints": "hints image", "json": "hints file", "reference": "reference"}.get(
        entry.get("role", ""), "input"
    )
    shown = entry.get("path", "?")
    digest = entry.get("digest")
    if override is not None:
        return override  # read once later (it may be a pipe); its digest is checked then
    if entry.get("stream"):
        raise SketchcolorError(
            f"{png}: its {role} was read from {'standard input' if shown == '-' else f'a pipe ({shown})'}",
            hint="give it again: sketchcolor colorize FILE --from-png ..." if role == "sketch" else None,
        )
    else:
        candidates = []
        if isinstance(entry.get("rel"), str):
            candidates.append(png.parent / entry["rel"])
        for key in ("abs", "path"):
            if isinstance(entry.get(key), str):
                candidates.append(Path(entry[key]))
        if entry.get("rel") is None and isinstance(entry.get("path"), str):
            candidates.append(png.parent / entry["path"])  # version 1: as given, often beside
    existing = list(dict.fromkeys(c for c in candidates if c.is_file()))
    if not existing:
        raise SketchcolorError(
            f"{shown}: {role} recorded in {png} not found",
            hint="put it back where it was, or give the sketch: sketchcolor colorize FILE --from-png ..."
            if role == "sketch"
            else "put it back where it was (next to the PNG or at its recorded path)",
        )
    if not isinstance(digest, str):
        return existing[0]
    for candidate in existing:
        if file_digest(candidate) == digest:
            return candidate
    raise SketchcolorError(f"{existing[0]}: changed since {png} was made (its digest differs)")


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """What ``--from-png`` re-runs."""

    job: ColorJob
    sketch: Path
    seed: int
    pick: int
    model: Path | None
    model_digest: str | None
    sketch_digest: str | None


def plan_reproduction(
    png: Path, *, sketch: Path | None, model: Path | None, save_flats: bool, save_hints: bool
) -> Reproduction:
    """Turn a PNG's record back into a job, finding (and checking) every input it names.

    Raises:
        SketchcolorError: A bad or incomplete record, or a missing or changed input (named).
    """
    from ..config import SEED_LIMIT, SampleConfig
    from ..errors import ConfigError

    rec = read_record(png)
    sampler = rec.get("sampler", f"one of {', '.join(s.value for s in Sampler)}", lambda v: v in set(Sampler))
    steps = rec.get("steps", "an integer >= 1", lambda v: _is_int(v) and v >= 1)
    eta = rec.get("eta", "a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
    guidance = rec.get("guidance", "a finite number >= 0", lambda v: _is_number(v) and v >= 0)
    pin = rec.get("pin_hints", "true or false", lambda v: isinstance(v, bool), False)
    seed = rec.get("seed", "an integer from 0 to 2**64 - 1", lambda v: _is_int(v) and 0 <= v < SEED_LIMIT)
    num = rec.get("num_samples", "an integer >= 1", lambda v: _is_int(v) and v >= 1, 1)
    pick = rec.get(
        "sample_index", f"an integer from 0 to {num - 1}", lambda v: _is_int(v) and 0 <= v < num, 0
    )
    flat = rec.get("flat", "true or false", lambda v: isinstance(v, bool), False)
    regions = rec.get("hint_regions", "true or false", lambda v: isinstance(v, bool), True)
    sources = rec.get("hint_sources", "an object", lambda v: isinstance(v, dict), {})
    points = sources.get("points", [])
    radius = sources.get("radius")
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise rec.bad("hint_sources", "points as a list of X,Y,COLOR strings")
    if radius is not None and not (_is_number(radius) and radius >= 0):
        raise rec.bad("hint_sources", "a radius that is null or a finite number >= 0")
    side = rec.get("side_files", "an object", lambda v: isinstance(v, dict), {})
    this = rec.get("side_file", "flats or hints", lambda v: v in ("flats", "hints"), None)
    model_name = rec.get("model", "a file name or null", lambda v: v is None or isinstance(v, str), None)
    model_digest = rec.get("model_digest", "a digest", lambda v: v is None or isinstance(v, str), None)

    entries = _recorded_inputs(rec)
    sketch_path = locate_input(entries[0], png, sketch)
    hint_paths = [locate_input(e, png) for e in entries[1:] if e.get("role") != "reference"]
    ref_entries = [e for e in entries[1:] if e.get("role") == "reference"]
    reference_path = locate_input(ref_entries[0], png) if ref_entries else None
    reference_scale = rec.get(
        "reference_scale", "a finite number >= 0", lambda v: _is_number(v) and v >= 0, 1.0
    )
    # Records made before snapping to the reference's colours existed were made without it.
    reference_snap = rec.get(
        "reference_snap", "a finite number >= 0", lambda v: _is_number(v) and v >= 0, 0.0
    )
    # Records made before the precision was recorded ran fp32 on the CPU (the only device they
    # are replayed on in practice), so that is what they replay with.
    precision = rec.get("precision", "fp32, bf16 or fp16", lambda v: v in ("fp32", "bf16", "fp16"), "fp32")
    model_path = model
    if model_path is None and model_name is not None:
        model_entry = {"role": "model", "path": model_name, "abs": rec.data.get("model_abs")}
        if isinstance(rec.data.get("model_rel"), str):
            model_entry["rel"] = rec.data["model_rel"]
        try:
            model_path = locate_input(model_entry, png)
        except SketchcolorError:
            raise SketchcolorError(
                f"{model_name}: model recorded in {png} not found", hint="give it with --model PATH"
            ) from None
    try:
        sample = SampleConfig(
            sampler=sampler, steps=steps, eta=float(eta), guidance=float(guidance), pin_hints=pin,
            reference_scale=float(reference_scale), reference_snap=float(reference_snap), precision=precision,
        )  # fmt: skip
    except ConfigError as exc:
        raise SketchcolorError(f"{png}: its sketchcolor record is invalid ({exc.message})") from None
    job = ColorJob(
        sample=sample,
        hints=tuple(hint_paths),
        points=tuple(points),
        hint_radius=float(radius) if radius is not None else None,
        hints_in_sketch=bool(sources.get("in_sketch", False)),
        stretch=bool(sources.get("stretch", False)),
        flat=flat,
        hint_regions=regions,
        save_flats=save_flats or bool(side.get("flats", False)) or this == "flats",
        save_hints=save_hints or bool(side.get("hints", False)) or this == "hints",
        num_samples=num,
        model_path=str(model_path) if model_path is not None else None,
        reference=reference_path,
    )
    first_seed = (seed - pick) % SEED_LIMIT
    sketch_digest = entries[0].get("digest") if isinstance(entries[0].get("digest"), str) else None
    return Reproduction(job, sketch_path, first_seed, pick, model_path, model_digest, sketch_digest)


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------

#: Options whose value ``--from-png`` takes from the record (giving them too is a usage error).
RECORDED_OPTIONS = (
    "hints", "hint", "steps", "sampler", "eta", "guidance", "pin_hints", "seed", "num_samples",
    "hint_radius", "hints_in_sketch", "stretch_hints", "flat", "no_hint_regions", "reference",
    "reference_scale", "reference_snap", "precision",
)  # fmt: skip


def _refuse_with_from_png(ctx: typer.Context) -> None:
    # Compared by name: click, or the copy vendored in newer typer, has its own enum.
    sources = {name: ctx.get_parameter_source(name) for name in RECORDED_OPTIONS}
    given = [name for name, src in sources.items() if src is not None and src.name != "DEFAULT"]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise typer.BadParameter(f"--from-png re-uses the settings recorded in the PNG; drop {flags}")


@app.command("colorize")
def colorize_cli(
    ctx: typer.Context,
    sketch: Annotated[
        Path | None,
        typer.Argument(
            help="Line-art sketch (PNG, JPEG, WebP, BMP, TIFF; - reads standard input). With --from-png: "
            "where the recorded sketch is now.",
            show_default=False,
        ),
    ] = None,
    hints: HintsOpt = None,
    hint: HintOpt = None,
    reference: ReferenceOpt = None,
    reference_scale: ReferenceScaleOpt = DEFAULTS.reference_scale,
    reference_snap: ReferenceSnapOpt = DEFAULTS.reference_snap,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output image (- writes the PNG to standard output). Default: SKETCH_STEM.colored.png "
            "beside the sketch. Never one of the inputs.",
        ),
    ] = None,
    model: ModelOpt = None,
    steps: StepsOpt = DEFAULTS.steps,
    sampler: SamplerOpt = Sampler(DEFAULTS.sampler),
    eta: EtaOpt = DEFAULTS.eta,
    guidance: GuidanceOpt = DEFAULTS.guidance,
    pin_hints: PinHintsOpt = DEFAULTS.pin_hints,
    precision: PrecisionOpt = Precision(DEFAULTS.precision),
    seed: SeedOpt = 0,
    num_samples: Annotated[
        int,
        typer.Option(
            "--num-samples", "-n", min=1, max=64, help="Variations in one batch (seeds SEED, SEED+1, ...)."
        ),
    ] = 1,
    hint_radius: HintRadiusOpt = None,
    hints_in_sketch: HintsInSketchOpt = False,
    stretch_hints: StretchOpt = False,
    flat: FlatOpt = False,
    no_hint_regions: NoHintRegionsOpt = False,
    save_flats: SaveFlatsOpt = False,
    save_hints: SaveHintsOpt = False,
    save_steps: Annotated[
        Path | None, typer.Option("--save-steps", help="Write the denoising steps as an animated GIF.")
    ] = None,
    from_png: Annotated[
        Path | None,
        typer.Option(
            "--from-png",
            help="Reproduce a PNG written by sketchcolor (colorize or batch) from the record inside it; "
            "its inputs are found beside it or where they were, and checked by digest.",
        ),
    ] = None,
    mode: ModeOpt = None,
    device: DeviceOpt = "auto",  # type: ignore[assignment]
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    fmt: FormatOpt = OutputFormat.human,
) -> None:
    """Colourise one sketch, guided by optional colour hints and a reference picture.

    The output has the sketch's own size, and the sketch's lines are laid over the colour, so line
    pixels keep their darkness. Hints can be combined: images, JSON files, points, and scribbles
    drawn on the sketch (later ones paint over earlier ones). A --reference picture lends its
    colours (hints win where they are given). Samplers: ddim, ddpm, dpmpp2m.

    Examples:

        sketchcolor colorize sketch.png --hints scribble.png -o out.png

        sketchcolor colorize page.png --reference character_sheet.png -o page.colored.png
    """
    from ..io import is_stdio
    from ..pipeline import check_sample_config, colorize, load_model

    working_on(from_png if from_png is not None else sketch)
    to_stdout = output is not None and is_stdio(output)
    if to_stdout:
        if fmt is OutputFormat.json:
            raise typer.BadParameter(
                "-o - writes the picture to standard output; --format json cannot share it"
            )
        if num_samples > 1 or save_flats or save_hints:
            raise typer.BadParameter(
                "-o - writes one picture to standard output; --num-samples, --save-flats and --save-hints "
                "need a file name"
            )
    if from_png is not None:
        _refuse_with_from_png(ctx)
        plan = plan_reproduction(
            from_png, sketch=sketch, model=model, save_flats=save_flats, save_hints=save_hints
        )
        if to_stdout and (plan.job.save_flats or plan.job.save_hints):
            raise typer.BadParameter(f"{from_png} asks for side files (flats or hints); give -o a file name")
        job = plan.job
        sketch, seed, pick, model = plan.sketch, plan.seed, plan.pick, plan.model
        out_path = output or from_png.with_name(f"{from_png.stem}.reproduced.png")
        want_digest = plan.model_digest
        inputs_used = [from_png, sketch, *job.hints]
        roles = {from_png: "the PNG being reproduced", sketch: "the sketch"}
    else:
        if sketch is None:
            raise typer.BadParameter("give a SKETCH (or --from-png)", param_hint="'SKETCH'")
        if is_stdio(sketch) and output is None:
            raise typer.BadParameter(
                "a sketch read from standard input needs -o (a file, or - for standard output)"
            )
        job = make_job(
            steps=steps, sampler=sampler, eta=eta, guidance=guidance, pin_hints=pin_hints, hints=hints, points=hint,
            hint_radius=hint_radius, hints_in_sketch=hints_in_sketch, stretch=stretch_hints, flat=flat,
            hint_regions=not no_hint_regions, save_flats=save_flats, save_hints=save_hints, num_samples=num_samples, model=model,
            reference=reference, reference_scale=reference_scale, reference_snap=reference_snap, precision=precision,
        )  # fmt: skip
        out_path = output or sketch.with_name(f"{sketch.stem}.colored.png")
        want_digest = None
        pick = None
        inputs_used = [sketch, *job.hints]
        roles = {sketch: "the sketch"}
        roles.update({h: "a hints file" for h in job.hints})
    if job.reference is not None:
        inputs_used.append(job.reference)
        roles[job.reference] = "the reference picture"
    if save_steps is not None and save_steps.suffix.lower() != ".gif":
        raise typer.BadParameter(
            f"{save_steps}: the animation is a GIF; give a .gif name", param_hint="'--save-steps'"
        )

    # Everything that can be checked is checked before reading the model.
    single = dataclasses.replace(job, num_samples=1) if pick is not None else job
    paths = output_paths(out_path, single) + ([save_steps] if save_steps is not None else [])
    check_outputs(paths, inputs_used, overwrite=overwrite, input_roles=roles, animation=save_steps)
    inputs = load_inputs(sketch, job)
    if from_png is not None and plan.sketch_digest not in (None, inputs.entries[0]["digest"]):
        raise SketchcolorError(f"{sketch}: is not the sketch {from_png} was made from (its digest differs)")
    bundle = load_model(model, str(device))
    check_mode(bundle, mode)
    if want_digest is not None and bundle.digest != want_digest:
        raise SketchcolorError(
            f"{bundle.path or 'the bundled model'}: model digest {bundle.digest} differs from {want_digest} "
            f"recorded in {from_png}",
            hint="give the model it was made with: --model PATH",
        )
    check_sample_config(job.sample, bundle)
    start = time.perf_counter()
    total = job.sample.steps
    with progress_bar(quiet, "colourising") as progress:
        task = progress.add_task("sample", total=total)
        result = colorize(
            inputs.sketch_image, inputs.layer, bundle, job.sample, seed, num_samples=job.num_samples,
            flat=job.flat, hint_regions=job.hint_regions, keep_flats=job.save_flats,
            keep_steps=save_steps is not None, reference=inputs.reference,
            callback=lambda info: progress.advance(task),
        )  # fmt: skip
    if pick is not None and job.num_samples > 1:
        # The whole batch was reproduced (results do not depend on batching beyond rounding): keep one.
        result = keep_sample(result, pick)
    base = base_record(inputs, single)
    records = save_outputs(result, out_path, single, base, overwrite=overwrite, save_steps=save_steps)
    seconds = round(time.perf_counter() - start, 3)
    for r in records:
        r["seconds"] = seconds
    w, h = records[0]["size"]
    names = ", ".join("standard output" if is_stdio(r["output"]) else r["output"] for r in records)
    summary = f"wrote {names} ({w}x{h}, seed {records[0]['seed']}, {job.sample.sampler} {total} steps, {seconds:.1f} s)"
    if to_stdout:
        if not quiet:
            stderr.print(summary, highlight=False, soft_wrap=True, markup=False)
        return
    emit(records[0] if len(records) == 1 else records, fmt, summary, quiet)
