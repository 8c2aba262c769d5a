"""``sketchcolor batch``: colour whole folders, survive bad files and interruptions, split work.

Examples::

    sketchcolor batch pages/ -o coloured/ --hints-dir hints/
    sketchcolor batch pages/ -o coloured/ --recursive --pattern "*.png" --batch-size 8 --flat
    sketchcolor batch pages/ -o coloured/ --shard 1/2      # on machine 1
    sketchcolor batch pages/ -o coloured/ --shard 2/2      # on machine 2
    sketchcolor batch chapter/ -o out/ --reference hero.png         # one palette for all pages
    sketchcolor batch chapter/ -o out/ --reference-dir refs/        # references matched by name
    sketchcolor batch chapter/ -o out/ --chapter --hints-dir hints/  # page 1's result colours the rest

Hints are matched by file stem: ``--hints-dir DIR/STEM.png`` (any image type, or ``STEM.json``),
mirroring sub-folders, or ``STEM.hints.png`` / ``STEM.hints.json`` beside the sketch. Outputs
mirror the input tree under ``-o`` as ``STEM.png``; inputs of one folder that share a stem
(``page.png``, ``page.jpg``) get distinct names, decided before any work (:func:`plan_outputs`).
Existing outputs made from the same input are skipped (``--overwrite`` redoes them), so a rerun
after an interruption finishes the rest; every file is written atomically, and no input is ever
written over. A failure of one file, whatever it is, is recorded and the run goes on. A JSON
manifest (``sketchcolor-manifest.json``, or ``sketchcolor-manifest.shard-I-of-N.json``) lists each
input with its output, hints, seed, parameters, time and error; it is written after every chunk
and at the end, also when the run is interrupted. The exit code is 1 if any file failed.

References (models with reference conditioning): ``--reference PATH`` for every page;
``--reference-dir DIR`` matches ``DIR/STEM.*`` by stem (mirroring sub-folders), falling back to
``--reference``; with ``--chapter`` the first page (in sorted order) is coloured first and its
result becomes the reference of every later page without one of its own, so a character keeps its
colours page after page. The first page's result, not each previous page's, is used: a chain of
references would let small drifts add up over a chapter.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from ..errors import OutputError, SketchcolorError, failure_text
from ..sharding import SHARD_COUNT_ENV, manifest_name, merge_manifests, shard_from_environment
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
    Precision,
    PrecisionOpt,
    QuietOpt,
    Sampler,
    SamplerOpt,
    SeedOpt,
    StepsOpt,
    UsageProblem,
    app,
    emit,
    json_safe,
    progress_bar,
    stderr,
    working_on,
)
from .colorize import (
    FlatOpt,
    HintOpt,
    HintRadiusOpt,
    HintsInSketchOpt,
    HintsOpt,
    Inputs,
    ModeOpt,
    NoHintRegionsOpt,
    ReferenceCache,
    ReferenceOpt,
    ReferenceScaleOpt,
    ReferenceSnapOpt,
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
#: Failures listed on stderr before "... and N more".
SHOWN_FAILURES = 20


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
    note: str | None = None
    reference: Path | None = None

    def row(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "outputs": self.outputs,
            "hints": [str(h) for h in self.hints],
            "reference": str(self.reference) if self.reference is not None else None,
            "seed": self.seed,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
            **({"note": self.note} if self.note else {}),
        }


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N; None -> (1, 1). (``auto``: :func:`shard_from_environment`.)"""
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
    """Sketch files under ``root`` (sorted, relative order stable), without hint files or outputs.

    ``exclude`` (the output folder) is never read back, wherever it is.
    """
    from ..io import IMAGE_SUFFIXES

    if not root.exists():
        raise SketchcolorError(f"{root}: folder not found")
    if not root.is_dir():
        raise SketchcolorError(f"{root}: is not a folder", hint="use `sketchcolor colorize` for one file")
    skip = exclude.resolve() if exclude is not None else None
    walker = root.rglob("*") if recursive else root.glob("*")
    found = []
    for p in walker:
        if not p.is_file() or p.name.startswith(".") or is_hint_file(p):
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES or not fnmatch.fnmatch(p.name, pattern):
            continue
        if skip is not None and skip in p.resolve().parents:
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def plan_outputs(
    sketches: list[Path], root: Path, output_dir: Path
) -> tuple[dict[Path, Path], dict[Path, str]]:
    """The output of every sketch, distinct even where inputs share a stem; decided before any work.

    The rule: a sketch ``REL/STEM.EXT`` writes ``OUT/REL/STEM.png``. When several sketches of one
    folder share a stem (compared case-insensitively, as macOS and Windows file systems do), the
    one whose suffix is ``.png`` keeps ``STEM.png`` and each other one writes its full name plus
    ``.png`` (``page.jpg`` -> ``page.jpg.png``), so no result replaces another and a ``.png`` input
    keeps the name it has alone. The rule depends only on the full sorted list, so every
    ``--shard`` of a run names files alike.

    Returns:
        ``{sketch: output}`` and ``{renamed sketch: note}``.
    """
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in sketches:
        rel = path.relative_to(root)
        groups.setdefault((rel.parent.as_posix().casefold(), rel.stem.casefold()), []).append(path)
    outputs: dict[Path, Path] = {}
    notes: dict[Path, str] = {}
    for members in groups.values():
        pngs = [p for p in members if p.suffix.lower() == ".png"]
        keeper = pngs[0] if len(pngs) == 1 else None
        for path in members:
            rel = path.relative_to(root)
            if len(members) == 1 or path == keeper:
                outputs[path] = output_dir / rel.with_suffix(".png")
            else:
                outputs[path] = output_dir / rel.parent / f"{rel.name}.png"
                others = ", ".join(p.name for p in members if p != path)
                notes[path] = f"shares its name with {others}; written as {outputs[path].name}"
    return outputs, notes


def check_collisions(entries: list[Entry], job: Any, inputs: set[Path]) -> None:
    """Refuse, before any work, outputs that two inputs share or that are inputs themselves.

    Raises:
        OutputError: With the list of clashes (the first 10).
    """
    seen: dict[str, Entry] = {}
    clashes: list[str] = []
    resolved_inputs = {p.resolve() for p in inputs}
    for e in entries:
        for path in output_paths(e.output, job):
            resolved = path.resolve()
            other = seen.setdefault(str(resolved).casefold(), e)
            if other is not e:
                clashes.append(f"{other.input} and {e.input} -> {path}")
            if resolved in resolved_inputs:
                clashes.append(f"{e.input} -> {path}, which is an input")
    if clashes:
        shown = "; ".join(clashes[:10]) + (f"; and {len(clashes) - 10} more" if len(clashes) > 10 else "")
        raise OutputError(
            f"{len(clashes)} output(s) would replace another result or an input: {shown}",
            hint="rename the inputs, or choose another --output folder",
        )


def made_from(output: Path, sketch: Path) -> bool | None:
    """Whether an existing output's record says it was made from ``sketch`` (None: no record).

    Reads the record without decoding the picture, so a rerun over a big folder stays fast.
    """
    from ..io import peek_png_text

    text = peek_png_text(output, "sketchcolor")
    if text is None:
        return None
    try:
        record = json.loads(text)
        entries = record.get("inputs") or [{"path": record["input"]}]
        recorded = Path(entries[0].get("abs") or entries[0]["path"])
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        return None
    return recorded.resolve() == sketch.resolve()


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


def reference_for(rel: Path, reference_dir: Path | None, default: Path | None) -> Path | None:
    """The reference of one sketch: ``DIR/REL_PARENT/STEM.*`` by stem, else ``default``."""
    from ..io import IMAGE_SUFFIXES

    if reference_dir is not None:
        base = reference_dir / rel.parent
        for suffix in IMAGE_SUFFIXES:
            for name in (f"{rel.stem}{suffix}", f"{rel.stem}{suffix.upper()}"):
                if (base / name).is_file():
                    return base / name
    return default


def _check_folders(input_dir: Path, output_dir: Path, hints_dir: Path | None) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: is a file, not a folder", hint="give a folder with -o")
    if input_dir.is_dir() and output_dir.exists() and output_dir.resolve() == input_dir.resolve():
        raise OutputError(
            f"{output_dir}: is the input folder; the results would replace the sketches",
            hint=f"choose another folder, e.g. -o {input_dir / 'colored'}",
        )
    if hints_dir is not None and not hints_dir.is_dir():
        raise SketchcolorError(f"{hints_dir}: hints folder not found")


def _status_of(e: Entry, job: Any, overwrite: bool) -> None:
    """Skip an item whose outputs exist and were made from it; refuse to replace a stranger's file."""
    if overwrite:
        return
    paths = output_paths(e.output, job)
    main = paths[0]
    if not main.exists():
        return
    origin = made_from(main, e.input)
    if origin is True:
        if all(p.exists() for p in paths):
            e.status = "skipped"
        return  # ours, but a side file is missing: redo it
    e.status = "failed"
    e.error = (
        f"{main}: already exists and was made from another input; pass --overwrite to replace it"
        if origin is False
        else f"{main}: already exists and was not written by sketchcolor; pass --overwrite to replace it"
    )


@app.command("batch")
def batch_cli(
    input_dir: Annotated[Path | None, typer.Argument(help="Folder of sketches.", show_default=False)] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for the results (mirrors the input tree). Not the input folder; if inside it, "
            "it is skipped while scanning.",
            show_default=False,
        ),
    ] = None,
    hints_dir: Annotated[
        Path | None,
        typer.Option("--hints-dir", help="Folder of hint files matched by stem (images or .json)."),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include sub-folders.")] = False,
    pattern: Annotated[str, typer.Option("--pattern", help="Only files whose name matches this glob.")] = "*",
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, max=1024, help="Sketches per model forward.")
    ] = 4,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Do only part I of N of the work (I/N, e.g. 2/4), or 'auto': the part the scheduler that "
            "started this process gives it (torchrun, a SLURM job array, a Kubernetes Indexed Job).",
        ),
    ] = None,
    shard_count: Annotated[
        int | None,
        typer.Option(
            "--shard-count",
            min=1,
            help=f"With --shard auto in a Kubernetes Indexed Job: the number of shards (its completions; "
            f"or set {SHARD_COUNT_ENV}).",
            show_default=False,
        ),
    ] = None,
    merge: Annotated[
        Path | None,
        typer.Option(
            "--merge-manifests",
            help="Only merge the shard manifests in this output folder into sketchcolor-manifest.json "
            "(each shard also does it when it finishes last).",
            show_default=False,
        ),
    ] = None,
    hints: HintsOpt = None,
    hint: HintOpt = None,
    reference: ReferenceOpt = None,
    reference_dir: Annotated[
        Path | None,
        typer.Option(
            "--reference-dir",
            help="Folder of reference pictures matched by stem (falls back to --reference).",
        ),
    ] = None,
    chapter: Annotated[
        bool,
        typer.Option(
            "--chapter",
            help="Colour the first page first; its result is the reference of every later page without "
            "its own (one palette across a chapter).",
        ),
    ] = False,
    reference_scale: ReferenceScaleOpt = DEFAULTS.reference_scale,
    reference_snap: ReferenceSnapOpt = DEFAULTS.reference_snap,
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
            "--num-samples", "-n", min=1, max=64, help="Variations per sketch (OUT-1.png ... OUT-N.png)."
        ),
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
    on the batch or shard it ran in. All colorize options apply. Sketches of one folder sharing a
    name (page.png, page.jpg) get distinct outputs (page.png, page.jpg.png).

    Example:

        sketchcolor batch pages/ -o coloured/ --hints-dir hints/
    """
    from ..io import remove_stale_temporaries
    from ..pipeline import check_sample_config, derive_seed, load_model, require_reference

    if merge is not None:
        if input_dir is not None or output_dir is not None:
            raise typer.BadParameter("takes the output folder alone", param_hint="'--merge-manifests'")
        working_on(merge)
        merged, doc = merge_manifests(merge)
        counts = {s: sum(e["status"] == s for e in doc["entries"]) for s in ("done", "skipped", "failed")}
        summary = (
            f"merged {doc['parameters']['shards']} shard manifests: {counts['done']} coloured, "
            f"{counts['skipped']} skipped, {counts['failed']} failed; manifest: {merged}"
        )
        emit({**counts, "manifest": str(merged), "shards": doc["parameters"]["shards"]}, fmt, summary, quiet)
        if counts["failed"]:
            raise typer.Exit(1)
        return
    if input_dir is None:
        raise UsageProblem("Missing argument 'INPUT_DIR'.")
    if output_dir is None:
        raise UsageProblem("Missing option '--output' / '-o'.")
    working_on(input_dir)
    shard_source = None
    if shard == "auto":
        shard_i, shard_n, shard_source = shard_from_environment(os.environ, shard_count)
        _info(f"--shard auto: shard {shard_i}/{shard_n} from {shard_source}")
    else:
        if shard_count is not None:
            raise typer.BadParameter("only with --shard auto", param_hint="'--shard-count'")
        shard_i, shard_n = parse_shard(shard)
    job = make_job(
        steps=steps, sampler=sampler, eta=eta, guidance=guidance, pin_hints=pin_hints, hints=hints, points=hint,
        hint_radius=hint_radius, hints_in_sketch=hints_in_sketch, stretch=stretch_hints, flat=flat,
        hint_regions=not no_hint_regions,
        save_flats=save_flats, save_hints=save_hints, num_samples=num_samples, model=model,
        reference=reference, reference_scale=reference_scale, reference_snap=reference_snap, precision=precision,
    )  # fmt: skip
    _check_folders(input_dir, output_dir, hints_dir)
    if reference_dir is not None and not reference_dir.is_dir():
        raise SketchcolorError(f"{reference_dir}: reference folder not found")
    for path in [*job.hints, *([reference] if reference is not None else [])]:
        # Read again for every sketch: a pipe would be empty after the first.
        if not path.is_file():
            raise SketchcolorError(
                f"{path}: {'file not found' if not path.exists() else 'batch hints and references must be regular files'}"
            )
    inside = input_dir.is_dir() and input_dir.resolve() in output_dir.resolve().parents
    sketches = find_sketches(input_dir, recursive=recursive, pattern=pattern, exclude=output_dir)
    if inside and recursive:
        stderr.print(
            f"sketchcolor: info: {output_dir} is inside {input_dir}; it is skipped while scanning",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip
    if not sketches:
        skipped = f"; the output folder {output_dir} was skipped" if inside and recursive else ""
        raise SketchcolorError(
            f"{input_dir}: no sketches found (pattern {pattern!r}{', recursive' if recursive else ''}{skipped})"
        )
    outputs, renames = plan_outputs(sketches, input_dir, output_dir)
    entries = []
    for k, path in enumerate(sketches):
        if k % shard_n != shard_i - 1:
            continue
        rel = path.relative_to(input_dir)
        entry = Entry(
            path, rel, outputs[path], hints_for(path, rel, hints_dir), derive_seed(seed, rel.as_posix())
        )
        entry.note = renames.get(path)
        entry.reference = reference_for(rel, reference_dir, reference)
        entries.append(entry)
    first_page = None
    if chapter:
        first_page = _chapter_reference(sketches[0], outputs[sketches[0]], entries, shard_n, job, input_dir)
    all_inputs = set(sketches) | set(job.hints) | {h for e in entries for h in e.hints}
    # The chapter's first result is read by later pages but written by this run: not an input.
    chapter_output = outputs[sketches[0]] if chapter else None
    all_inputs |= {e.reference for e in entries if e.reference is not None and e.reference != chapter_output}
    check_collisions(entries, job, all_inputs)
    for path, note in renames.items():
        stderr.print(f"sketchcolor: info: {path}: {note}", highlight=False, soft_wrap=True, markup=False)
    for e in entries:
        _status_of(e, job, overwrite)
    todo = [e for e in entries if e.status == "pending"]
    manifest = output_dir / manifest_name(shard_i, shard_n)
    params = {
        "sampler": job.sample.sampler, "steps": job.sample.steps, "eta": job.sample.eta,
        "guidance": job.sample.guidance, "pin_hints": job.sample.pin_hints, "flat": flat, "hint_regions": job.hint_regions, "num_samples": num_samples, "base_seed": seed,
        "shard": f"{shard_i}/{shard_n}", "model": str(model) if model else None,
        "reference": str(reference) if reference else None, "reference_dir": str(reference_dir) if reference_dir else None,
        "reference_scale": job.sample.reference_scale, "chapter": chapter, "precision": job.sample.precision,
        "reference_snap": job.sample.reference_snap,
        "sketchcolor_version": __version__,
    }  # fmt: skip
    if shard_source is not None:
        params["shard_source"] = shard_source
    manifest_lock = threading.Lock()  # written by the finishing thread and, at the end, by this one

    def write_manifest() -> None:
        from ..io import write_bytes_atomic

        with manifest_lock:
            doc = {"parameters": params, "entries": [e.row() for e in entries]}
            write_bytes_atomic(manifest, json.dumps(json_safe(doc), indent=2).encode(), overwrite=True)

    bundle = load_model(model, _local_device(str(device))) if todo else None
    # Each reference file is read, letterboxed and measured once, however many pages share it.
    references = ReferenceCache(bundle) if bundle is not None else None
    if bundle is not None:
        check_mode(bundle, mode)
        check_sample_config(job.sample, bundle)
        params["model_digest"] = bundle.digest
        # Said once, before any page, rather than as the same failure of every page.
        if any(e.reference is not None for e in todo):
            require_reference(bundle)
        if reference is not None and references is not None and any(e.reference == reference for e in todo):
            references.get(reference)  # the shared reference: an unreadable one stops the run here
    output_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(output_dir)
    if removed:
        stderr.print(
            f"sketchcolor: info: removed {len(removed)} temporary file(s) left by a killed run in {output_dir}",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip
    started = time.perf_counter()
    try:
        with progress_bar(quiet, "colourising") as progress:
            task = progress.add_task("batch", total=len(todo))
            if first_page is not None and first_page in todo:
                # Chapter mode: the first page first, alone; its result is the others' reference.
                todo.remove(first_page)
                _finish_chunk(_sample_chunk([first_page], job, bundle, references), job)
                progress.advance(task, 1)
                write_manifest()
                _chapter_ready(first_page, entries)
                todo = [e for e in todo if e.status == "pending"]

            def chunk_done(chunk: list[Entry]) -> None:
                progress.advance(task, len(chunk))
                write_manifest()

            chunks = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
            _run_chunks(chunks, job, bundle, chunk_done, references)
    finally:
        # Whatever happens (an interruption, a bug), what was done is on record.
        write_manifest()
    if shard_n > 1 and all(e.status != "pending" for e in entries):
        try:  # the last shard to finish writes the whole run's manifest
            merged, _ = merge_manifests(output_dir)
            _info(f"every shard of {shard_n} is done: merged their manifests into {merged}")
        except SketchcolorError:
            pass
    counts = {s: sum(e.status == s for e in entries) for s in ("done", "skipped", "failed")}
    failed = [e for e in entries if e.status == "failed"]
    for e in failed[:SHOWN_FAILURES]:
        reason = e.error or "unknown error"
        where = "" if reason.startswith(str(e.input)) else f"{e.input}: "
        stderr.print(f"sketchcolor: failed: {where}{reason}", highlight=False, soft_wrap=True, markup=False)
    if len(failed) > SHOWN_FAILURES:
        stderr.print(
            f"sketchcolor: ... and {len(failed) - SHOWN_FAILURES} more failures (see {manifest})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    seconds = round(time.perf_counter() - started, 2)
    summary = (
        f"{counts['done']} coloured, {counts['skipped']} skipped (already done), {counts['failed']} failed "
        f"in {seconds:.1f} s; manifest: {manifest}"
    )
    emit({**counts, "manifest": str(manifest), "seconds": seconds}, fmt, summary, quiet)
    if failed:
        raise typer.Exit(1)


def _chapter_reference(
    first: Path, first_output: Path, entries: list[Entry], shard_n: int, job: Any, input_dir: Path
) -> Entry | None:
    """Chapter mode: make the first page's output the reference of the pages without their own.

    Returns the first page's entry when this run colours it (then it goes first), else None.

    Raises:
        SketchcolorError: ``--chapter`` with ``--num-samples`` > 1, or a shard without the first
            page while its result does not exist yet.
    """
    if job.num_samples > 1:
        raise typer.BadParameter("--chapter needs one sample per page (drop --num-samples)")
    own = next((e for e in entries if e.input == first), None)
    for e in entries:
        if e is not own and e.reference is None:
            e.reference = first_output
            e.note = ((e.note + "; ") if e.note else "") + f"chapter reference {first_output.name}"
    if own is None and not first_output.is_file():
        raise SketchcolorError(
            f"{first_output}: the first page's result does not exist yet (chapter mode)",
            hint=f"run the shard holding {first.relative_to(input_dir)} first (shard 1)"
            if shard_n > 1
            else None,
        )
    return own


def _chapter_ready(first: Entry, entries: list[Entry]) -> None:
    """After the first page: pages waiting for its result fail with its reason if it failed."""
    if first.status == "done":
        return
    for e in entries:
        if e is not first and e.reference == first.output and e.status == "pending":
            e.status, e.error = "failed", f"the chapter's first page {first.input} failed: {first.error}"


def _failure(exc: BaseException) -> str:
    """One line for a failed item (see :func:`sketchcolor.errors.failure_text`)."""
    return failure_text(exc)


#: Chunks whose network work may be done ahead of the chunk being finished (composed and
#: written) on another thread; 0 runs the chunks one after another.
PIPELINE_DEPTH = 1


@dataclasses.dataclass
class _Ready:
    """One item of a sampled chunk: its inputs, where its results are, and its time so far."""

    entry: Entry
    inputs: Inputs
    seconds: float  # reading + its share of the chunk's sampling
    batch: Any  # pipeline.SampledBatch
    first: int  # index of its first sample in ``batch``


def _sample_chunk(
    chunk: list[Entry], job: Any, bundle: Any, references: ReferenceCache | None = None
) -> list[_Ready]:
    """Read a chunk's inputs and run the network on them; any failure of one file is recorded.

    A chunk that fails as a whole is sampled again item by item to find the culprit. References
    come from ``references`` (each file read once per run) when given.
    """
    from ..pipeline import sample_batch

    loaded: list[tuple[Entry, Inputs, float]] = []
    for e in chunk:
        t0 = time.perf_counter()
        try:
            loaded.append(
                (
                    e,
                    load_inputs(e.input, job, tuple(e.hints), e.reference, references),
                    time.perf_counter() - t0,
                )
            )
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            e.status, e.error = "failed", _failure(exc)
    n = job.num_samples

    def sample(items: list[tuple[Entry, Inputs, float]]) -> Any:
        return sample_batch(
            [r[1].sketch_image for r in items for _ in range(n)],
            [r[1].layer for r in items for _ in range(n)],
            bundle,
            job.sample,
            [r[0].seed + j for r in items for j in range(n)],
            flat=job.flat,
            hint_regions=job.hint_regions,
            keep_flats=job.save_flats,
            references=[r[1].reference for r in items for _ in range(n)],
        )

    groups = [loaded] if len(loaded) > 1 else []
    groups_single = [[r] for r in loaded]
    ready: list[_Ready] = []
    for attempt in (groups, groups_single):
        for items in attempt:
            t0 = time.perf_counter()
            try:
                batch = sample(items)
            except Exception as exc:  # noqa: BLE001 - find the culprit, finish the others
                if len(items) == 1:
                    items[0][0].status, items[0][0].error = "failed", _failure(exc)
                continue
            share = (time.perf_counter() - t0) / len(items)
            ready += [
                _Ready(e, inputs, load_s + share, batch, k * n) for k, (e, inputs, load_s) in enumerate(items)
            ]
        if ready:
            break
    return ready


def _finish_chunk(ready: list[_Ready], job: Any) -> None:
    """Compose and write a sampled chunk's items, one per thread; a failure is that item's alone."""
    from ..parallel import compose_threads, parallel_map

    n = job.num_samples
    threads = compose_threads()
    inner = 1 if len(ready) > 1 else threads  # items in parallel, or one item's bands in parallel

    def finish(r: _Ready) -> None:
        e = r.entry
        t1 = time.perf_counter()
        try:
            group = [r.batch.finish(r.first + j, threads=inner) for j in range(n)]
            merged = dataclasses.replace(
                group[0],
                images=[g.image for g in group],
                flats=[f for g in group for f in g.flats],
                records=[{**g.record, "sample_index": j, "num_samples": n} for j, g in enumerate(group)],
            )
            base = base_record(r.inputs, job, tuple(e.hints))
            written = save_outputs(merged, e.output, job, base, overwrite=True)
        except Exception as exc:  # noqa: BLE001 - one failing item must not stop the batch
            e.status, e.error = "failed", _failure(exc)
            return
        e.status = "done"
        e.outputs = [w["output"] for w in written]
        e.seconds = round(r.seconds + time.perf_counter() - t1, 3)

    parallel_map(finish, ready, threads)


def _run_chunks(
    chunks: list[list[Entry]],
    job: Any,
    bundle: Any,
    done: Callable[[list[Entry]], None],
    references: ReferenceCache | None = None,
) -> None:
    """Colourise the chunks in order, the network of one overlapping the composition of the last.

    :func:`sketchcolor.pipeline.run_pipelined`: this thread reads and samples chunk k+1 while
    another composes and writes chunk k (on every core: :func:`_finish_chunk`), with at most
    :data:`PIPELINE_DEPTH` sampled chunks waiting. Every item gets exactly what the sequential
    loop gives it: the same chunks go through the network together, and composition does not
    depend on threads. Interrupted, the chunks already through the network are still finished.
    ``done(chunk)`` is called after each chunk.
    """
    from ..pipeline import run_pipelined

    def finish(chunk: list[Entry], ready: list[_Ready]) -> None:
        _finish_chunk(ready, job)
        done(chunk)

    run_pipelined(chunks, lambda chunk: _sample_chunk(chunk, job, bundle, references), finish, PIPELINE_DEPTH)


def _local_device(device: str) -> str:
    """Under torchrun on a machine with several GPUs, process ``LOCAL_RANK`` takes ``cuda:LOCAL_RANK``."""
    local = os.environ.get("LOCAL_RANK")
    if local is None or device not in ("auto", "cuda"):
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count > 1:
        return f"cuda:{int(local) % count}"
    return device


def _info(text: str) -> None:
    stderr.print(f"sketchcolor: info: {text}", highlight=False, soft_wrap=True, markup=False)
