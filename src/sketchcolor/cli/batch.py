"""``sketchcolor batch``: colour whole folders, survive bad files and interruptions, split work.

Examples::

    sketchcolor batch pages/ -o coloured/ --hints-dir hints/
    sketchcolor batch pages/ -o coloured/ --recursive --pattern "*.png" --batch-size 8 --flat
    sketchcolor batch pages/ -o coloured/ --shard 1/2      # on machine 1
    sketchcolor batch pages/ -o coloured/ --shard 2/2      # on machine 2

Hints are matched by file stem: ``--hints-dir DIR/STEM.png`` (any image type, or ``STEM.json``),
mirroring sub-folders, or ``STEM.hints.png`` / ``STEM.hints.json`` beside the sketch. Outputs
mirror the input tree under ``-o``. Existing outputs are skipped (``--overwrite`` redoes them), so
a rerun after an interruption finishes the rest; every file is written atomically. A JSON manifest
(``sketchcolor-manifest.json``, or ``sketchcolor-manifest.shard-I-of-N.json``) lists each input with
its output, hints, seed, parameters, time and error. The exit code is 1 if any file failed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from ..errors import SketchcolorError
from .app import (
    DEFAULTS,
    DeviceOpt,
    EtaOpt,
    FormatOpt,
    GuidanceOpt,
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
    json_safe,
    progress_bar,
    stderr,
)
from .colorize import (
    FlatOpt,
    HintOpt,
    HintRadiusOpt,
    HintsInSketchOpt,
    HintsOpt,
    ModeOpt,
    NoHintRegionsOpt,
    SaveFlatsOpt,
    SaveHintsOpt,
    StretchOpt,
    base_record,
    check_mode,
    load_inputs,
    make_job,
    output_paths,
    save_outputs,
)

HINT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".json")


@dataclasses.dataclass
class Entry:
    """One input of a batch and what became of it (a manifest row)."""

    input: Path
    rel: Path
    output: Path
    hints: list[Path]
    seed: int
    status: str = "pending"  # done | skipped | failed
    error: str | None = None
    seconds: float | None = None
    outputs: list[str] = dataclasses.field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "outputs": self.outputs,
            "hints": [str(h) for h in self.hints],
            "seed": self.seed,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
        }


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N; None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected I/N such as 1/4, got {text!r}", param_hint="'--shard'") from None
    if not 1 <= i <= n:
        raise typer.BadParameter(f"shard {i}/{n}: need 1 <= I <= N", param_hint="'--shard'")
    return i, n


def is_hint_file(path: Path) -> bool:
    return ".hints." in path.name


def find_sketches(root: Path, *, recursive: bool, pattern: str, exclude: Path | None) -> list[Path]:
    """Sketch files under ``root`` (sorted, relative order stable), without hint files or outputs."""
    from ..io import IMAGE_SUFFIXES

    if not root.exists():
        raise SketchcolorError(f"{root}: folder not found")
    if not root.is_dir():
        raise SketchcolorError(f"{root}: is not a folder", hint="use `sketchcolor colorize` for one file")
    walker = root.rglob("*") if recursive else root.glob("*")
    found = []
    for p in walker:
        if not p.is_file() or p.name.startswith(".") or is_hint_file(p):
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES or not fnmatch.fnmatch(p.name, pattern):
            continue
        if exclude is not None and exclude.resolve() in p.resolve().parents:
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files a killed run left behind (``.NAME.XXXX.tmp``, see io.atomic_write)."""
    if folder.is_dir():
        for tmp in folder.rglob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()


def hints_for(sketch: Path, rel: Path, hints_dir: Path | None) -> list[Path]:
    """The per-item hint files of a sketch (see the module docstring)."""
    candidates = []
    if hints_dir is not None:
        base = hints_dir / rel.parent
        candidates += [base / f"{rel.stem}{s}" for s in HINT_SUFFIXES]
        candidates += [base / f"{rel.stem}.hints{s}" for s in HINT_SUFFIXES]
    candidates += [sketch.with_name(f"{sketch.stem}.hints{s}") for s in HINT_SUFFIXES]
    for c in candidates:
        if c.is_file():
            return [c]
    return []


@app.command("batch")
def batch_cli(
    input_dir: Annotated[Path, typer.Argument(help="Folder of sketches.", show_default=False)],
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the results (mirrors the input tree).")
    ],
    hints_dir: Annotated[
        Path | None,
        typer.Option("--hints-dir", help="Folder of hint files matched by stem (images or .json)."),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include sub-folders.")] = False,
    pattern: Annotated[str, typer.Option("--pattern", help="Only files whose name matches this glob.")] = "*",
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Sketches per model forward.")
    ] = 4,
    shard: Annotated[
        str | None, typer.Option("--shard", help="Do only part I of N of the work (I/N, e.g. 2/4).")
    ] = None,
    hints: HintsOpt = None,
    hint: HintOpt = None,
    model: ModelOpt = None,
    steps: StepsOpt = DEFAULTS.steps,
    sampler: SamplerOpt = Sampler(DEFAULTS.sampler),
    eta: EtaOpt = DEFAULTS.eta,
    guidance: GuidanceOpt = DEFAULTS.guidance,
    pin_hints: PinHintsOpt = DEFAULTS.pin_hints,
    seed: SeedOpt = 0,
    num_samples: Annotated[
        int,
        typer.Option("--num-samples", "-n", min=1, help="Variations per sketch (OUT-1.png ... OUT-N.png)."),
    ] = 1,
    hint_radius: HintRadiusOpt = None,
    hints_in_sketch: HintsInSketchOpt = False,
    stretch_hints: StretchOpt = False,
    flat: FlatOpt = False,
    no_hint_regions: NoHintRegionsOpt = False,
    save_flats: SaveFlatsOpt = False,
    save_hints: SaveHintsOpt = False,
    mode: ModeOpt = None,
    device: DeviceOpt = "auto",  # type: ignore[assignment]
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    fmt: FormatOpt = OutputFormat.human,
) -> None:
    """Colourise every sketch in a folder.

    Each sketch gets its own seed, derived from --seed and its path, so its result does not depend
    on the batch or shard it ran in. All colorize options apply.

    Example:

        sketchcolor batch pages/ -o coloured/ --hints-dir hints/
    """
    from ..pipeline import derive_seed, load_model

    shard_i, shard_n = parse_shard(shard)
    job = make_job(
        steps=steps, sampler=sampler, eta=eta, guidance=guidance, pin_hints=pin_hints, hints=hints, points=hint,
        hint_radius=hint_radius, hints_in_sketch=hints_in_sketch, stretch=stretch_hints, flat=flat,
        hint_regions=not no_hint_regions,
        save_flats=save_flats, save_hints=save_hints, num_samples=num_samples, model=model,
    )  # fmt: skip
    sketches = find_sketches(input_dir, recursive=recursive, pattern=pattern, exclude=output_dir)
    if not sketches:
        raise SketchcolorError(
            f"{input_dir}: no sketches found (pattern {pattern!r}{', recursive' if recursive else ''})"
        )
    entries = []
    for k, path in enumerate(sketches):
        if k % shard_n != shard_i - 1:
            continue
        rel = path.relative_to(input_dir)
        out = output_dir / rel.with_suffix(".png")
        entries.append(
            Entry(path, rel, out, hints_for(path, rel, hints_dir), derive_seed(seed, rel.as_posix()))
        )
    for e in entries:
        if not overwrite and all(p.exists() for p in output_paths(e.output, job)):
            e.status = "skipped"
    todo = [e for e in entries if e.status == "pending"]
    manifest = output_dir / (
        "sketchcolor-manifest.json"
        if shard_n == 1
        else f"sketchcolor-manifest.shard-{shard_i}-of-{shard_n}.json"
    )
    params = {
        "sampler": job.sample.sampler, "steps": job.sample.steps, "eta": job.sample.eta,
        "guidance": job.sample.guidance, "pin_hints": job.sample.pin_hints, "flat": flat, "hint_regions": job.hint_regions, "num_samples": num_samples, "base_seed": seed,
        "shard": f"{shard_i}/{shard_n}", "model": str(model) if model else None,
        "sketchcolor_version": __version__,
    }  # fmt: skip

    def write_manifest() -> None:
        from ..io import write_bytes_atomic

        doc = {"parameters": params, "entries": [e.row() for e in entries]}
        write_bytes_atomic(manifest, json.dumps(json_safe(doc), indent=2).encode(), overwrite=True)

    remove_stale_temporaries(output_dir)
    bundle = load_model(model, str(device)) if todo else None
    if bundle is not None:
        check_mode(bundle, mode)
        params["model_digest"] = bundle.digest
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with progress_bar(quiet, "colourising") as progress:
        task = progress.add_task("batch", total=len(todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            _run_chunk(chunk, job, bundle)
            progress.advance(task, len(chunk))
            write_manifest()
    write_manifest()
    counts = {s: sum(e.status == s for e in entries) for s in ("done", "skipped", "failed")}
    failed = [e for e in entries if e.status == "failed"]
    for e in failed[:20]:
        reason = e.error or "unknown error"
        where = "" if reason.startswith(str(e.input)) else f"{e.input}: "
        stderr.print(f"sketchcolor: failed: {where}{reason}", highlight=False, soft_wrap=True, markup=False)
    if len(failed) > 20:
        stderr.print(
            f"sketchcolor: ... and {len(failed) - 20} more failures (see {manifest})", highlight=False
        )
    seconds = round(time.perf_counter() - started, 2)
    summary = (
        f"{counts['done']} coloured, {counts['skipped']} skipped (already done), {counts['failed']} failed "
        f"in {seconds:.1f} s; manifest: {manifest}"
    )
    emit({**counts, "manifest": str(manifest), "seconds": seconds}, fmt, summary, quiet)
    if failed:
        raise typer.Exit(1)


def _run_chunk(chunk: list[Entry], job: Any, bundle: Any) -> None:
    """Colourise one chunk; a failing file is recorded and never stops the others.

    Outputs of a chunk are replaced: the chunk holds only files whose outputs were incomplete or
    whose rerun was asked for with --overwrite.
    """
    from ..pipeline import colorize_batch

    ready = []
    for e in chunk:
        t0 = time.perf_counter()
        try:
            sketch_rgb, layer = load_inputs(e.input, job, tuple(e.hints))
            ready.append((e, sketch_rgb, layer, t0))
        except SketchcolorError as exc:
            e.status, e.error = "failed", exc.message
        except OSError as exc:
            e.status, e.error = "failed", str(exc)
    if not ready:
        return
    n = job.num_samples
    sketches = [r[1] for r in ready for _ in range(n)]
    layers = [r[2] for r in ready for _ in range(n)]
    seeds = [r[0].seed + j for r in ready for j in range(n)]
    try:
        results = colorize_batch(
            sketches,
            layers,
            bundle,
            job.sample,
            seeds,
            flat=job.flat,
            hint_regions=job.hint_regions,
            keep_flats=job.save_flats,
        )
    except SketchcolorError as exc:
        if len(ready) == 1:
            ready[0][0].status, ready[0][0].error = "failed", exc.message
            return
        for e, *_ in ready:  # find the culprit: run the items one by one
            _run_chunk([e], job, bundle)
        return
    for k, (e, _, _, t0) in enumerate(ready):
        group = results[k * n : (k + 1) * n]
        merged = dataclasses.replace(
            group[0],
            images=[r.image for r in group],
            flats=[f for r in group for f in r.flats],
            records=[{**r.record, "sample_index": j, "num_samples": n} for j, r in enumerate(group)],
        )
        try:
            written = save_outputs(merged, e.output, job, base_record(e.input, job), overwrite=True)
        except (SketchcolorError, OSError) as exc:
            e.status, e.error = "failed", getattr(exc, "message", str(exc))
            continue
        e.status = "done"
        e.outputs = [w["output"] for w in written]
        e.seconds = round(time.perf_counter() - t0, 3)
