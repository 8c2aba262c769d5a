"""``sketchcolor colorize``: one sketch, hints of every kind, reproducible outputs.

Examples::

    sketchcolor colorize sketch.png --hints scribble.png -o out.png
    sketchcolor colorize sketch.png --hint 120,80,#d03030 --hint 0.5,0.9,skyblue -o out.png
    sketchcolor colorize page.png --hints-in-sketch --flat --save-flats -o page.png
    sketchcolor colorize sketch.png --num-samples 4 --seed 10 -o variant.png
    sketchcolor colorize --from-png out.png -o again.png
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SketchcolorError
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
    QuietOpt,
    Sampler,
    SamplerOpt,
    SeedOpt,
    StepsOpt,
    app,
    emit,
    progress_bar,
)

log = logging.getLogger("sketchcolor")

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
    typer.Option("--hint-radius", min=0.0, help="Radius of point hints in pixels (default 1% of size)."),
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

    def sources(self) -> dict[str, Any]:
        """The hint sources, as recorded in output PNGs."""
        return {
            "images": [str(p) for p in self.hints if p.suffix.lower() != ".json"],
            "json": [str(p) for p in self.hints if p.suffix.lower() == ".json"],
            "points": list(self.points),
            "radius": self.hint_radius,
            "in_sketch": self.hints_in_sketch,
            "stretch": self.stretch,
        }


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
) -> ColorJob:
    from ..config import SampleConfig

    return ColorJob(
        sample=SampleConfig(
            sampler=sampler.value, steps=steps, eta=eta, guidance=guidance, pin_hints=pin_hints
        ),
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
    )


def check_mode(bundle: Any, mode: Mode | None) -> None:
    if mode is not None and bundle.config.conditioning.mode != mode.value:
        where = bundle.path or "the model"
        raise SketchcolorError(
            f"{where}: is a {bundle.config.conditioning.mode} model, not a {mode.value} model",
            hint="train one with: sketchcolor train --mode photo" if mode is Mode.photo else None,
        )


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


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


def load_inputs(sketch: Path, job: ColorJob, extra_hints: tuple[Path, ...] = ()) -> tuple[Any, Any]:
    """Read a sketch and merge all its hint sources: (sketch RGB tensor, HintLayer).

    ``extra_hints`` are per-item hint files (``batch``), painted over the job's own hints.
    """
    from ..pipeline import build_hints, read_sketch, split_hints_from_sketch

    sketch_rgb = read_sketch(sketch)
    size = (int(sketch_rgb.shape[-2]), int(sketch_rgb.shape[-1]))
    in_sketch = None
    if job.hints_in_sketch:
        sketch_rgb, in_sketch = split_hints_from_sketch(sketch_rgb)
        if in_sketch.is_empty:
            log.warning("%s: --hints-in-sketch found no coloured scribbles in the sketch", sketch)
    files = [*job.hints, *extra_hints]
    layer = build_hints(
        size, images=[p for p in files if p.suffix.lower() != ".json"],
        json_files=[p for p in files if p.suffix.lower() == ".json"], points=job.points,
        in_sketch=in_sketch, stretch=job.stretch, point_radius=job.hint_radius,
    )  # fmt: skip
    if (files or job.points or job.hints_in_sketch) and layer.is_empty:
        log.warning(
            "%s: the hints hold no hint pixels (all white or transparent); colourising from the sketch alone",
            sketch,
        )
    return sketch_rgb, layer


def check_outputs_free(paths: list[Path], overwrite: bool) -> None:
    for p in paths:
        if p.exists() and not overwrite:
            raise SketchcolorError(f"{p}: already exists", hint="pass --overwrite to replace it")


def save_outputs(
    result: Any,
    out: Path,
    job: ColorJob,
    base: dict[str, Any],
    *,
    overwrite: bool,
    save_steps: Path | None = None,
) -> list[dict[str, Any]]:
    """Write a result's images (atomically, with their records), flats, hints and GIFs."""
    from ..io import save_gif, save_image, tensor_to_image

    records = []
    image_paths = output_paths(out, job)[: len(result.images)]
    for i, (image, path) in enumerate(zip(result.images, image_paths, strict=True)):
        record = {**result.records[i], **base, "output": str(path)}
        save_image(image, path, overwrite=overwrite, text={"sketchcolor": json.dumps(record, sort_keys=True)})
        if job.save_flats:
            save_image(result.flats[i], path.with_name(f"{path.stem}.flats.png"), overwrite=overwrite)
        records.append(record)
    if job.save_hints:
        save_image(
            tensor_to_image(result.hints.to_rgba()),
            out.with_name(f"{out.stem}.hints.png"),
            overwrite=overwrite,
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


def base_record(sketch: Path, job: ColorJob) -> dict[str, Any]:
    return {
        "input": str(sketch),
        "input_digest": file_digest(sketch),
        "hint_sources": job.sources(),
        "model": job.model_path,
    }


def run_job(
    sketch: Path,
    out: Path,
    job: ColorJob,
    bundle: Any,
    seed: int,
    *,
    overwrite: bool,
    callback: Any = None,
    save_steps: Path | None = None,
) -> list[dict[str, Any]]:
    """Colourise ``sketch`` into ``out`` (and its side files); returns one record per sample.

    Inputs are read and checked before the model runs; outputs are written atomically.
    """
    from ..pipeline import colorize

    paths = output_paths(out, job) + ([save_steps] if save_steps is not None else [])
    check_outputs_free(paths, overwrite)
    sketch_rgb, layer = load_inputs(sketch, job)
    result = colorize(
        sketch_rgb, layer, bundle, job.sample, seed, num_samples=job.num_samples, flat=job.flat,
        hint_regions=job.hint_regions, keep_flats=job.save_flats,
        keep_steps=save_steps is not None, callback=callback,
    )  # fmt: skip
    return save_outputs(
        result, out, job, base_record(sketch, job), overwrite=overwrite, save_steps=save_steps
    )


def _from_png(png: Path) -> dict[str, Any]:
    from ..io import read_png_text

    text = read_png_text(png).get("sketchcolor")
    if text is None:
        raise SketchcolorError(f"{png}: holds no sketchcolor record (not written by sketchcolor colorize)")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise SketchcolorError(f"{png}: its sketchcolor record is not valid JSON") from None


@app.command("colorize")
def colorize_cli(
    sketch: Annotated[
        Path | None,
        typer.Argument(help="Line-art sketch (PNG, JPEG, WebP, BMP, TIFF).", show_default=False),
    ] = None,
    hints: HintsOpt = None,
    hint: HintOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output image. Default: SKETCH_STEM.colored.png beside the sketch."
        ),
    ] = None,
    model: ModelOpt = None,
    steps: StepsOpt = DEFAULTS.steps,
    sampler: SamplerOpt = Sampler(DEFAULTS.sampler),
    eta: EtaOpt = DEFAULTS.eta,
    guidance: GuidanceOpt = DEFAULTS.guidance,
    pin_hints: PinHintsOpt = DEFAULTS.pin_hints,
    seed: SeedOpt = 0,
    num_samples: Annotated[
        int,
        typer.Option("--num-samples", "-n", min=1, help="Variations in one batch (seeds SEED, SEED+1, ...)."),
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
        typer.Option("--from-png", help="Reproduce a PNG written by sketchcolor from the record inside it."),
    ] = None,
    mode: ModeOpt = None,
    device: DeviceOpt = "auto",  # type: ignore[assignment]
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    fmt: FormatOpt = OutputFormat.human,
) -> None:
    """Colourise one sketch, guided by optional colour hints.

    The output has the sketch's own size, and the sketch's lines are laid over the colour, so line
    pixels keep their darkness. Hints can be combined: images, JSON files, points, and scribbles
    drawn on the sketch (later ones paint over earlier ones).

    Example:

        sketchcolor colorize sketch.png --hints scribble.png -o out.png
    """
    from ..pipeline import load_model

    if from_png is not None:
        if sketch is not None:
            raise SketchcolorError("give either SKETCH or --from-png, not both")
        record = _from_png(from_png)
        sources = record.get("hint_sources", {})
        sketch = Path(record["input"])
        if sketch.exists() and file_digest(sketch) != record.get("input_digest"):
            raise SketchcolorError(f"{sketch}: changed since {from_png} was made (digest differs)")
        job = make_job(
            steps=record["steps"], sampler=Sampler(record["sampler"]), eta=record["eta"], guidance=record["guidance"],
            pin_hints=record.get("pin_hints", False),
            hints=[Path(p) for p in sources.get("images", []) + sources.get("json", [])],
            points=sources.get("points", []), hint_radius=sources.get("radius"),
            hints_in_sketch=sources.get("in_sketch", False), stretch=sources.get("stretch", False),
            flat=record.get("flat", False), hint_regions=record.get("hint_regions", True),
            save_flats=save_flats, save_hints=save_hints,
            num_samples=record.get("num_samples", 1), model=Path(record["model"]) if record.get("model") else None,
        )  # fmt: skip
        seed = record["seed"] - record.get("sample_index", 0)
        model = Path(record["model"]) if record.get("model") else model
        out_path = output or from_png.with_name(f"{from_png.stem}.reproduced.png")
        want_digest = record.get("model_digest")
        pick = record.get("sample_index", 0)
    else:
        if sketch is None:
            raise typer.BadParameter("give a SKETCH (or --from-png)", param_hint="'SKETCH'")
        job = make_job(
            steps=steps, sampler=sampler, eta=eta, guidance=guidance, pin_hints=pin_hints, hints=hints, points=hint,
            hint_radius=hint_radius, hints_in_sketch=hints_in_sketch, stretch=stretch_hints, flat=flat,
            hint_regions=not no_hint_regions, save_flats=save_flats, save_hints=save_hints, num_samples=num_samples, model=model,
        )  # fmt: skip
        out_path = output or sketch.with_name(f"{sketch.stem}.colored.png")
        want_digest = None
        pick = None

    from ..io import open_image

    open_image(sketch)  # fail fast on a bad sketch before loading the model
    bundle = load_model(model, str(device))
    check_mode(bundle, mode)
    if want_digest is not None and bundle.digest != want_digest:
        raise SketchcolorError(
            f"{bundle.path}: model digest {bundle.digest} differs from {want_digest} recorded in {from_png}"
        )
    start = time.perf_counter()
    total = job.sample.steps
    with progress_bar(quiet, "colourising") as progress:
        task = progress.add_task("sample", total=total)
        if pick is not None and job.num_samples > 1:
            # Reproduce the whole batch (results do not depend on batching beyond rounding), keep one.
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                records = run_job(
                    sketch, Path(tmp) / "out.png", job, bundle, seed, overwrite=True,
                    callback=lambda info: progress.advance(task),
                )  # fmt: skip
                src = Path(records[pick]["output"])
                from ..io import open_image as _open
                from ..io import save_image

                img = _open(src)
                record = {**records[pick], "output": str(out_path)}
                save_image(
                    img.convert("RGB"),
                    out_path,
                    overwrite=overwrite,
                    text={"sketchcolor": json.dumps(record, sort_keys=True)},
                )
                records = [record]
        else:
            if pick is not None:
                job = dataclasses.replace(job, num_samples=1)
            records = run_job(
                sketch, out_path, job, bundle, seed, overwrite=overwrite, save_steps=save_steps,
                callback=lambda info: progress.advance(task),
            )  # fmt: skip
    seconds = round(time.perf_counter() - start, 3)
    for r in records:
        r["seconds"] = seconds
    w, h = records[0]["size"]
    names = ", ".join(r["output"] for r in records)
    summary = f"wrote {names} ({w}x{h}, seed {records[0]['seed']}, {job.sample.sampler} {total} steps, {seconds:.1f} s)"
    emit(records[0] if len(records) == 1 else records, fmt, summary, quiet)
