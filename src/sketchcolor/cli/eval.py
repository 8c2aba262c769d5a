"""``sketchcolor eval``: colour-aware scores against ground truth, with thresholds for CI.

Examples::

    # Mode A: score existing outputs against ground truth (matched by file name)
    sketchcolor eval --pred coloured/ --truth test/color/ --hints test/hints/

    # Mode B: run a model over a test set (sketch/, color/, optional hints/) and score it
    sketchcolor eval --data test/ --model runs/mine/last.safetensors --steps 20

    # The hint curve: scores against the number of synthetic hint strokes
    sketchcolor eval --data test/ --model last.safetensors --hints-sweep 0,1,2,4,8,16 --csv sweep.csv

    # Several checkpoints: one row each, and a plot against training step
    sketchcolor eval --data test/ -m runs/mine/step-1000.safetensors -m runs/mine/step-2000.safetensors --plot curve.png

    # CI gate: exit code 1 when a threshold is not met or any item failed
    sketchcolor eval --data test/ -m last.safetensors --fail-under psnr=18 --fail-over ciede2000=8 --json eval.json
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import (
    DEFAULTS,
    DeviceOpt,
    EtaOpt,
    FormatOpt,
    GuidanceOpt,
    OutputFormat,
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
    stdout,
    working_on,
)

#: Failures listed on stderr before "... and N more".
SHOWN_FAILURES = 10


class ReferenceModeChoice(enum.StrEnum):
    none = "none"
    self_warped = "self-warped"


class RequiredMetric(enum.StrEnum):
    lpips = "lpips"
    fid = "fid"


def _say(kind: str, text: str) -> None:
    stderr.print(f"sketchcolor: {kind}: {text}", highlight=False, soft_wrap=True, markup=False)


def _optional_metric(name: str, build: Any, required: bool) -> Any:
    """Build an optional metric; if unavailable, warn and return None unless it is required."""
    from ..metrics import MetricUnavailableError

    try:
        return build()
    except MetricUnavailableError as exc:
        if required:
            raise
        _say("warning", f"{name} skipped: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        return None


def _cell(value: Any, metric: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf"
        if metric in ("ssim", "lpips"):
            return f"{value:.4f}"
        return f"{value:.3f}" if metric.endswith("_ratio") else f"{value:.2f}"
    return str(value)


def _strokes_cell(row: dict[str, Any]) -> str:
    if row.get("strokes") is not None:
        return str(row["strokes"])
    if row.get("hints") == "given":
        return "given"
    return f"random<={row.get('max_strokes')}" + ("+given" if "given" in str(row.get("hints")) else "")


def _table(rows: list[dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..evaluation import METRICS

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    model_mode = any(row.get("mode") == "model" for row in rows)
    with_reference = any(row.get("reference", "none") != "none" for row in rows)
    label_columns = (
        (["model", "step", "strokes"] + (["reference"] if with_reference else []))
        if model_mode
        else ["predictions"]
    )
    metrics = [m for m in METRICS if any(m in row for row in rows)]
    for name in label_columns:
        table.add_column(name, overflow="fold", min_width=len(name))
    for name in [*metrics, "scored", "failed"]:
        # Headers are the names --fail-under/--fail-over take: never truncated.
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for row in rows:
        if model_mode:
            # The path as given: several checkpoints are often all called model.safetensors.
            labels = [str(row.get("model") or "default"), str(row.get("step")), _strokes_cell(row)]
            if with_reference:
                labels.append(str(row.get("reference")))
        else:
            labels = [str(row.get("pred"))]
        table.add_row(
            *[Text(label) for label in labels],  # file names are text, not rich markup
            *[_cell(row.get(m), m) for m in metrics],
            str(row["n_scored"]),
            str(row["n_failed"]),
        )
    return table


def _print_table(table: Any) -> None:
    # In a terminal rich fits the table to its width; in a pipe or a CI log nothing wraps.
    if stdout.is_terminal:
        stdout.print(table)
    else:
        from rich.console import Console

        Console(width=200, color_system=None).print(table)


def _report_problems(reports: list[Any]) -> None:
    """Failures (each distinct one once) and notes on stderr."""
    seen: dict[tuple[str, str], None] = {}
    for report in reports:
        for item in report.failures:
            seen.setdefault((item.name, item.error or "unknown error"), None)
    failures = list(seen)
    for name, error in failures[:SHOWN_FAILURES]:
        _say("failed", error if error.startswith(name) else f"{name}: {error}")
    if len(failures) > SHOWN_FAILURES:
        _say("failed", f"... and {len(failures) - SHOWN_FAILURES} more (see --json for all)")
    notes = dict.fromkeys(note for report in reports for note in report.notes)
    for note in notes:
        _say("warning", note)


@app.command("eval")
def eval_cli(
    pred: Annotated[
        Path | None,
        typer.Option("--pred", help="Mode A: folder of outputs to score (matched to --truth by name)."),
    ] = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="Mode A: folder of ground-truth pictures.")
    ] = None,
    hints: Annotated[
        Path | None,
        typer.Option(
            "--hints",
            help="Folder of hint files by name (images or .json): the hints the outputs were made with "
            "(mode A), or hints to use instead of DATA/hints (mode B).",
        ),
    ] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="<path>",
            help="Mode B: model file (.safetensors); repeat for several checkpoints (one row each). "
            "Default: the bundled model.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Mode B: test set folder with sketch/ and color/ (and optional hints/)."),
    ] = None,
    steps: StepsOpt = DEFAULTS.steps,
    sampler: SamplerOpt = Sampler(DEFAULTS.sampler),
    eta: EtaOpt = DEFAULTS.eta,
    guidance: GuidanceOpt = DEFAULTS.guidance,
    pin_hints: PinHintsOpt = DEFAULTS.pin_hints,
    precision: PrecisionOpt = Precision(DEFAULTS.precision),
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",  # type: ignore[assignment]
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Mode B: sketches per model forward.")
    ] = 8,
    reference_mode: Annotated[
        ReferenceModeChoice,
        typer.Option(
            "--reference-mode",
            help="Mode B: none, or self-warped (each item's ground truth under a fixed held-out warp "
            "as its reference; models with reference conditioning).",
        ),
    ] = ReferenceModeChoice.none,
    reference_dir: Annotated[
        Path | None,
        typer.Option("--reference-dir", help="Mode B: folder of real reference pictures matched by name."),
    ] = None,
    reference_scale: Annotated[
        float,
        typer.Option("--reference-scale", min=0.0, max=20.0, help="Guidance on the reference; 1 = off."),
    ] = DEFAULTS.reference_scale,
    reference_snap: Annotated[
        float,
        typer.Option(
            "--reference-snap",
            min=0.0,
            help="One-colour regions within this CIE LAB distance of a reference colour take it; 0 = off.",
        ),
    ] = DEFAULTS.reference_snap,
    hints_sweep: Annotated[
        str | None,
        typer.Option(
            "--hints-sweep",
            metavar="<n,n,...>",
            help="Mode B: score with exactly these numbers of synthetic hint strokes (e.g. 0,1,2,4,8,16).",
        ),
    ] = None,
    max_strokes: Annotated[
        int,
        typer.Option("--max-strokes", min=0, help="Mode B: most strokes of randomly synthesised hints."),
    ] = 8,
    lpips_weights: Annotated[
        Path | None,
        typer.Option(
            "--lpips-weights",
            help="AlexNet backbone file for LPIPS (default: the torch hub cache, see docs/metrics.md).",
        ),
    ] = None,
    no_lpips: Annotated[bool, typer.Option("--no-lpips", help="Do not compute LPIPS.")] = False,
    fid: Annotated[
        bool, typer.Option("--fid", help="Also compute FID (needs pytorch-fid and its weights).")
    ] = False,
    require: Annotated[
        list[RequiredMetric] | None,
        typer.Option(
            "--require",
            metavar="<lpips|fid>",
            help="Fail (exit 1) if this optional metric is unavailable. Repeatable.",
        ),
    ] = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-under",
            metavar="<name=value>",
            help="NAME=VALUE: exit 1 if the mean of NAME is below VALUE. Repeatable.",
        ),
    ] = None,
    fail_over: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-over",
            metavar="<name=value>",
            help="NAME=VALUE: exit 1 if the mean of NAME is above VALUE. Repeatable.",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full report (rows and every item) as JSON.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write the summary rows as CSV.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Mode B: PNG of the metrics against training step (or hint strokes)."),
    ] = None,
    quiet: QuietOpt = False,
    fmt: FormatOpt = OutputFormat.human,
) -> None:
    """Score colourisations against ground truth, with thresholds for CI.

    Metrics: PSNR and SSIM on RGB, mean CIEDE2000, CIEDE2000 at hinted pixels, LPIPS (when its
    weights are available), FID (--fid), and the colourfulness (Hasler & Süsstrunk 2003) of the
    outputs and the ground truths with the ratio of their means. Mode A scores existing outputs (--pred, --truth). Mode B runs one or more models over a test
    set (--data) with fixed seeds; missing hints are synthesised from the ground truth with a seed
    per item. Items that cannot be scored, and ground-truth pictures without a prediction (or
    sketch), are listed and counted as failed, never dropped silently. PSNR is capped at 60 dB per
    item, so means stay finite. Exit code 1 if any item failed or a --fail-under/--fail-over
    threshold is not met.

    Metric names for thresholds: psnr, ssim, ciede2000, hint_ciede2000, lpips, fid, colourfulness,
    colourfulness_truth, colourfulness_ratio (e.g. --fail-under colourfulness_ratio=0.7).

    Examples:

        sketchcolor eval --pred coloured/ --truth test/color/ --hints test/hints/

        sketchcolor eval --data test/ -m last.safetensors --fail-under psnr=18 --fail-over ciede2000=8

        sketchcolor eval --data test/ -m last.safetensors --hints-sweep 0,1,2,4,8,16 --csv sweep.csv

        sketchcolor eval --data test/ -m step1k.safetensors -m step2k.safetensors --plot curve.png
    """
    from .. import evaluation as ev
    from ..config import HintConfig, SampleConfig
    from ..errors import ConfigError

    working_on(pred if pred is not None else data)
    mode_a = pred is not None or truth is not None
    if mode_a and (data is not None or model):
        raise typer.BadParameter("give --pred and --truth (score outputs) or --data (run a model), not both")
    if not mode_a and data is None:
        if model:
            raise typer.BadParameter("--model needs --data, a test set with sketch/ and color/")
        raise typer.BadParameter("give --pred and --truth (score outputs) or --data (run a model)")
    if mode_a and (pred is None or truth is None):
        raise typer.BadParameter("--pred and --truth go together")
    if mode_a and (hints_sweep is not None or plot is not None):
        raise typer.BadParameter("--hints-sweep and --plot need --data (mode B)")
    if hints_sweep is not None and hints is not None:
        raise typer.BadParameter("--hints-sweep synthesises its hints; it cannot be combined with --hints")
    if reference_dir is not None and reference_mode is not ReferenceModeChoice.none:
        raise typer.BadParameter("give --reference-mode self-warped or --reference-dir, not both")
    if mode_a and (reference_dir is not None or reference_mode is not ReferenceModeChoice.none):
        raise typer.BadParameter("--reference-mode and --reference-dir need --data (mode B)")
    ref_mode = "dir" if reference_dir is not None else reference_mode.value
    try:
        under = ev.parse_thresholds(fail_under or [])
        over = ev.parse_thresholds(fail_over or [])
        sweep: list[int | None] = list(ev.parse_sweep(hints_sweep)) if hints_sweep is not None else [None]
    except ConfigError as exc:
        raise typer.BadParameter(exc.message) from None
    required = {r.value for r in require or []}
    if no_lpips and "lpips" in required:
        raise typer.BadParameter("--no-lpips contradicts --require lpips")

    from ..checkpoint import default_model_path, read_config
    from ..device import inference_dtype, resolve_device
    from ..io import check_output_path
    from ..metrics import LpipsMetric

    # Fail fast on bad inputs (one line), before loading metrics or models.
    sample_config = SampleConfig(
        sampler=sampler.value, steps=steps, eta=eta, guidance=guidance, pin_hints=pin_hints,
        reference_scale=reference_scale, reference_snap=reference_snap, precision=precision.value,
    )  # fmt: skip
    if plot is not None:
        ev.check_plot_available()
    for report_path in (json_path, csv_path, plot):
        if report_path is not None:
            check_output_path(report_path)  # a folder or a path under a file: refused before the work
    if pred is not None and truth is not None:
        pairing = ev.find_pairs(pred, truth)
    elif data is not None:
        pairing = ev.find_pairs(*ev.find_test_set(data), pred_role="sketch", skip_side_files=False)
        for model_path in model or [default_model_path()]:
            levels = read_config(model_path).schedule.num_train_steps
            if steps > levels:
                raise ConfigError(
                    f"--steps {steps}: {model_path} has {levels} noise levels, so at most {levels} steps",
                    hint=f"use --steps 1 to {levels}",
                )
    total = len(pairing.pairs)
    dev = resolve_device(str(device))
    inference_dtype(sample_config.precision, dev)  # fp16 on the CPU: refused before any work
    lpips_metric = None
    if not no_lpips:
        lpips_metric = _optional_metric(
            "lpips", lambda: LpipsMetric(lpips_weights, device=dev), "lpips" in required
        )
    fid_metric = None
    if fid or "fid" in required:
        fid_metric = _optional_metric("fid", lambda: ev.FidMetric(device=dev), "fid" in required)

    reports = []
    with progress_bar(quiet, "evaluating") as progress:

        def advance(task: Any) -> Any:
            return lambda info: progress.update(task, total=info["total"], completed=info["done"])

        if pred is not None and truth is not None:
            task = progress.add_task("eval", total=total)
            reports.append(
                ev.evaluate_outputs(
                    pred, truth, hints_dir=hints, lpips=lpips_metric, fid=fid_metric, callback=advance(task)
                )
            )
        elif data is not None:
            from ..pipeline import load_model

            paths: list[Path | None] = [*model] if model else [None]
            hint_config = HintConfig(max_strokes=max_strokes)
            for path in paths:
                bundle = load_model(path, str(device))
                for strokes in sweep:
                    task = progress.add_task("eval", total=total)
                    reports.append(
                        ev.evaluate_model(
                            bundle, data, sample_config=sample_config, hint_config=hint_config, seed=seed,
                            num_strokes=strokes, hints_dir=hints, batch_size=batch_size, lpips=lpips_metric,
                            fid=fid_metric, callback=advance(task), reference_mode=ref_mode,  # type: ignore[arg-type]
                            reference_dir=reference_dir,
                        )
                    )  # fmt: skip
                    progress.remove_task(task)
                del bundle

    rows = [{"run": i, **report.summary()} for i, report in enumerate(reports)]
    violations = ev.check_thresholds(rows, under, over)
    parameters = {
        "mode": "outputs" if mode_a else "model",
        "pred": str(pred) if pred else None,
        "truth": str(truth) if truth else None,
        "data": str(data) if data else None,
        "hints": str(hints) if hints else None,
        "models": [str(p) for p in model or []],
        "sampler": sampler.value,
        "steps": steps,
        "eta": eta,
        "guidance": guidance,
        "seed": seed,
        "max_strokes": max_strokes,
        "hints_sweep": None if hints_sweep is None else [s for s in sweep if s is not None],
        "reference_mode": ref_mode,
        "reference_dir": str(reference_dir) if reference_dir else None,
        "reference_scale": reference_scale,
        "reference_snap": reference_snap,
        "lpips_backbone": str(lpips_metric.backbone_path) if lpips_metric is not None else None,
    }
    document = ev.report_document(
        reports, parameters=parameters, fail_under=under, fail_over=over, violations=violations
    )
    if json_path is not None:
        ev.write_json(document, json_path)
    if csv_path is not None:
        ev.write_csv(rows, csv_path)
    if plot is not None:
        ev.plot_metrics(rows, plot)

    _report_problems(reports)
    if fmt is OutputFormat.json:
        emit(document, fmt, "", quiet)
    elif not quiet:
        _print_table(_table(rows))
    for violation in violations:
        _say("threshold not met", violation)
    if violations or not document["ok"]:
        raise typer.Exit(1)
