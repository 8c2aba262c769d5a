"""The ``sketchcolor`` command line: a thin shell over the library.

Examples::

    # Colourise a sketch guided by a scribble layer (white or transparent = no hint)
    sketchcolor colorize sketch.png --hints scribble.png -o out.png

    # Choose a model file, a sampler and a seed; print the record as JSON
    sketchcolor colorize sketch.png --model my.safetensors --sampler ddpm --steps 100 --seed 7 \\
        -o out.png --format json

    # Train on your own colour pictures (sketches and hints are synthesised), resume after a crash
    sketchcolor train --data my_pictures/ --out runs/mine
    sketchcolor train --resume runs/mine

Each command builds configs from its options and calls one library function. Progress bars,
warnings and errors go to stderr; results go to stdout as a short human summary or, with
``--format json``, as JSON. Errors caused by input (a bad file, flag or checkpoint) print one line,
``sketchcolor: error: <what>: <problem>``, and exit with status 1 (2 for a bad flag); set
``SKETCHCOLOR_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import __version__
from .errors import SketchcolorError

stderr = Console(stderr=True)
stdout = Console()
log = logging.getLogger("sketchcolor")

app = typer.Typer(
    name="sketchcolor",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    # Fixed help width: docs/cli.md is generated from --help and checked by a test.
    context_settings={"max_content_width": 100, "terminal_width": 100},
    help="Colourise line-art sketches with diffusion models, guided by colour hints.",
)


class Sampler(enum.StrEnum):
    ddim = "ddim"
    ddpm = "ddpm"


class Device(enum.StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class OutputFormat(enum.StrEnum):
    human = "human"
    json = "json"


# Shared option aliases: every command spells the same option the same way.
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m", help="Model file (.safetensors). Default: the model bundled with sketchcolor."
    ),
]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Sampling steps (network evaluations).")]
SamplerOpt = Annotated[
    Sampler, typer.Option("--sampler", help="Sampler: ddim (deterministic at eta 0) or ddpm.")
]
EtaOpt = Annotated[
    float, typer.Option("--eta", min=0.0, max=1.0, help="DDIM stochasticity: 0 deterministic, 1 like DDPM.")
]
GuidanceOpt = Annotated[
    float, typer.Option("--guidance", min=0.0, help="Classifier-free guidance scale on the hints; 1 = off.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same picture.")]
DeviceOpt = Annotated[
    Device, typer.Option("--device", help="Compute device; auto = CUDA, then MPS, then CPU.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or summary (errors still show).")
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Result on stdout: human summary or JSON.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]


def _version_callback(value: bool) -> None:
    if value:
        stdout.print(f"sketchcolor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Colourise line-art sketches with diffusion models, guided by colour hints."""


def _progress(quiet: bool, label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet,
        transient=True,
    )


def _emit(result: Mapping[str, Any], fmt: OutputFormat, human: str, quiet: bool) -> None:
    """The one output sink: JSON on stdout, or a one-line human summary."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    elif not quiet:
        stdout.print(human, highlight=False, soft_wrap=True)


@app.command("colorize")
def colorize_cli(
    sketch: Annotated[
        Path, typer.Argument(help="Line-art sketch (PNG, JPEG, WebP, BMP, TIFF).", show_default=False)
    ],
    hints: Annotated[
        Path | None,
        typer.Option("--hints", help="Colour hints image: transparent or white pixels mean no hint."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output image. Default: SKETCH_STEM.colored.png beside it."),
    ] = None,
    model: ModelOpt = None,
    steps: StepsOpt = 20,
    sampler: SamplerOpt = Sampler.ddim,
    eta: EtaOpt = 0.0,
    guidance: GuidanceOpt = 1.0,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    fmt: FormatOpt = OutputFormat.human,
) -> None:
    """Colourise one sketch, guided by optional colour hints.

    The output has the sketch's own size; the sketch's lines are kept on top of the colour.

    Example:

        sketchcolor colorize sketch.png --hints scribble.png -o out.png
    """
    from .config import SampleConfig
    from .io import load_rgba, save_image
    from .pipeline import colorize, load_model, read_sketch

    out_path = output or sketch.with_name(f"{sketch.stem}.colored.png")
    if out_path.exists() and not overwrite:
        raise SketchcolorError(f"{out_path}: already exists", hint="pass --overwrite to replace it")
    sample_config = SampleConfig(sampler=sampler.value, steps=steps, eta=eta, guidance=guidance)
    # Read the inputs before loading the model, so a bad file fails fast.
    sketch_rgb = read_sketch(sketch)
    hints_rgba = load_rgba(hints) if hints is not None else None
    bundle = load_model(model, device.value)
    start = time.perf_counter()
    with _progress(quiet, "colourising") as progress:
        task = progress.add_task("sample", total=steps)
        result = colorize(
            sketch_rgb, hints_rgba, bundle, sample_config, seed, callback=lambda info: progress.advance(task)
        )
    record = dict(result.record)
    record.update({"input": str(sketch), "hints": str(hints) if hints else None, "output": str(out_path)})
    save_image(
        result.image, out_path, overwrite=overwrite, text={"sketchcolor": json.dumps(record, sort_keys=True)}
    )
    record["seconds"] = round(time.perf_counter() - start, 3)
    w, h = result.image.size
    _emit(
        record,
        fmt,
        f"wrote {out_path} ({w}x{h}, seed {seed}, {sampler.value} {steps} steps, {record['seconds']:.1f} s)",
        quiet,
    )


class DataFormatChoice(enum.StrEnum):
    auto = "auto"
    images = "images"
    paired = "paired"
    parquet = "parquet"


class Mode(enum.StrEnum):
    lineart = "lineart"
    photo = "photo"


def _parse_sets(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="'--set'")
        out[key.strip()] = value.strip()
    return out


@app.command("train")
def train_cli(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Training pictures: a folder of colour images, sketch/ + color/ folders, or Parquet.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder for checkpoints, logs and samples.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML file with the run's settings (see configs/).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run in this folder from its newest checkpoint."),
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option("--init-from", help="Start from this model's weights (fine-tuning).")
    ] = None,
    data_format: Annotated[
        DataFormatChoice, typer.Option("--data-format", help="Layout of --data; auto detects it.")
    ] = DataFormatChoice.auto,
    mode: Annotated[
        Mode | None,
        typer.Option("--mode", help="lineart (sketch -> colour) or photo (grey photo -> colour)."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps in total.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Pictures per step and process.")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of every random draw of the run.")] = None,
    device: Annotated[
        Device | None, typer.Option("--device", help="Compute device; auto = CUDA, then MPS, then CPU.")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Data-loading processes.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config key: --set optim.ema_decay=0.9995 (repeatable)."),
    ] = None,
    quiet: QuietOpt = False,
    fmt: FormatOpt = OutputFormat.human,
) -> None:
    """Train a colouriser on your own pictures.

    Sketches and colour hints are synthesised from colour pictures, so no paired data is needed;
    paired sketch/ + color/ folders and Diffusart-style Parquet files work too.

    Examples:

        sketchcolor train --data my_pictures/ --out runs/mine

        sketchcolor train --config configs/default.toml --data data/openmoji/train --out runs/default

        sketchcolor train --resume runs/mine            # after a crash or to continue

        torchrun --nproc-per-node 2 -m sketchcolor train --data pics/ --out runs/ddp
    """
    from .config import TrainConfig, apply_overrides, load_config_file
    from .training import load_run_config, train

    if resume is not None:
        if config_file is not None or data is not None or out is not None and out != resume:
            raise SketchcolorError(
                "--resume continues a run with its saved settings; do not combine it with --config, --data or --out"
            )
        config = load_run_config(resume)
        run_dir = resume
    else:
        if out is None:
            raise typer.BadParameter("give a run folder with --out", param_hint="'--out'")
        config = load_config_file(TrainConfig, config_file) if config_file else TrainConfig()
        run_dir = out
    overrides: dict[str, Any] = {}
    if data is not None:
        overrides["data.path"] = str(data)
    if data_format is not DataFormatChoice.auto or (data is not None and resume is None):
        overrides["data.format"] = data_format.value
    if mode is not None:
        overrides["model.conditioning.mode"] = mode.value
    for key, value in (
        ("optim.steps", steps), ("optim.batch_size", batch_size), ("optim.lr", lr), ("run.seed", seed),
        ("run.num_workers", workers), ("run.device", device.value if device else None),
    ):  # fmt: skip
        if value is not None:
            overrides[key] = value
    overrides.update(_parse_sets(sets))
    config = apply_overrides(config, overrides)
    if not config.data.path:
        raise typer.BadParameter(
            "give the training pictures with --data (or data.path in --config)", param_hint="'--data'"
        )

    recipe = "sketchcolor train " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:])
    main_process = int(os.environ.get("RANK", "0")) == 0
    show = not quiet and main_process
    last = None
    with _progress(not show, "training") as progress:
        prep = progress.add_task("preparing data", total=None)

        def on_prepare(done: int, total: int) -> None:
            progress.update(prep, completed=done, total=total)

        task = None
        for info in train(
            config,
            run_dir,
            resume=resume is not None,
            init_from=init_from,
            recipe=recipe,
            on_prepare=on_prepare,
        ):
            if task is None:
                progress.remove_task(prep)
                task = progress.add_task("train", total=info.total_steps, completed=info.step - 1)
            progress.update(
                task, completed=info.step,
                description=f"loss {info.loss:.4f}  {info.images_per_s:.1f} img/s",
            )  # fmt: skip
            if info.checkpoint is not None and show:
                val = f", val loss {info.val_loss:.4f}" if info.val_loss is not None else ""
                stderr.print(f"step {info.step}: checkpoint {info.checkpoint}{val}", highlight=False)
            last = info
    if not main_process:
        return
    result = {
        "run": str(run_dir),
        "steps": last.step if last else None,
        "loss": last.loss if last else None,
        "model": str(run_dir / "last.safetensors"),
        "best_model": str(run_dir / "best.safetensors") if (run_dir / "best.safetensors").exists() else None,
    }
    _emit(result, fmt, f"trained to step {result['steps']}; model: {result['model']}", quiet)


# ----------------------------------------------------------------------------------------------
# Entry point and error mapping
# ----------------------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        stderr.print(f"sketchcolor: {level}: {record.getMessage()}", highlight=False, soft_wrap=True)


def _fail(message: str, hint: str | None = None) -> None:
    stderr.print(
        f"sketchcolor: error: {message}" + (f" ({hint})" if hint else ""), highlight=False, soft_wrap=True
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 failed, 2 bad usage, 130 interrupted).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    debug = os.environ.get("SKETCHCOLOR_DEBUG", "") not in ("", "0")
    handler = _StderrHandler()
    logger = logging.getLogger("sketchcolor")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=args, prog_name="sketchcolor", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted")
        return 130
    except SketchcolorError as exc:
        if debug:
            raise
        _fail(exc.message, exc.hint)
        return 1
    except MemoryError:
        if debug:
            raise
        _fail("out of memory", "try a smaller image or --device cpu")
        return 1
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(f"{where}{exc.strerror or exc}")
        return 1
    except Exception as exc:
        # Usage errors of the command-line parser (click, or the copy vendored in newer typer):
        # recognised by their interface so any typer version works.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            stdout.print(exc.format_message(), highlight=False, markup=False)
            return 0
        _fail(exc.format_message().replace("\n", " "), "see --help" if int(exc.exit_code) == 2 else None)
        return int(exc.exit_code)
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
