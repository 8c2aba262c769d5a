"""``sketchcolor train``: train a colouriser on your own pictures.

Examples::

    sketchcolor train --data my_pictures/ --out runs/mine
    sketchcolor train --config configs/default.toml --data data/openmoji128/train --out runs/default
    sketchcolor train --resume runs/mine
    torchrun --nproc-per-node 2 -m sketchcolor train --data pics/ --out runs/ddp
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import SEED_LIMIT
from ..errors import SketchcolorError
from .app import (
    Device,
    FormatOpt,
    Mode,
    OutputFormat,
    QuietOpt,
    app,
    command_line,
    emit,
    finite,
    progress_bar,
    stderr,
    working_on,
)


class DataFormatChoice(enum.StrEnum):
    auto = "auto"
    images = "images"
    paired = "paired"
    parquet = "parquet"


def _parse_sets(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="'--set'")
        out[key.strip()] = value.strip()
    return out


def _resumed_recipe(run_dir: Path, command: str) -> str:
    """The recipe of a resumed run: the original command line (from its newest checkpoint), then this one."""
    from ..checkpoint import read_metadata
    from ..training import MODEL_FILE, checkpoints_in

    original = ""
    for folder in reversed(checkpoints_in(run_dir)):
        try:
            original = read_metadata(folder / MODEL_FILE).get("recipe", "")
        except SketchcolorError:
            continue
        break
    if not original:
        return command
    head = original.split(" ; resumed: ")[0]
    return f"{head} ; resumed: {command}"


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
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, callback=finite, help="Peak learning rate, finite.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", min=0, max=SEED_LIMIT - 1, help="Seed of every random draw of the run, 0 to 2**64 - 1."
        ),
    ] = None,
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
    from ..config import TrainConfig, apply_overrides, check_seed, load_config_file
    from ..errors import ConfigError
    from ..training import load_run_config, train

    working_on(resume or data or out)
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

    try:
        check_seed(config.run.seed, "run.seed")
    except ConfigError as exc:
        raise typer.BadParameter(exc.message) from None
    command = command_line()
    recipe = _resumed_recipe(resume, command) if resume is not None else command
    main_process = int(os.environ.get("RANK", "0")) == 0
    show = not quiet and main_process
    last = None
    with progress_bar(not show, "training") as progress:
        prep: list[Any] = []  # the preparation bar, shown once its total is known

        def on_prepare(done: int, total: int) -> None:
            if not prep:
                prep.append(progress.add_task("preparing data", total=total))
            progress.update(prep[0], completed=done, total=total)

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
                if prep:
                    progress.remove_task(prep[0])
                task = progress.add_task("train", total=info.total_steps, completed=info.step - 1)
            progress.update(
                task, completed=info.step,
                description=f"loss {info.loss:.4f}  {info.images_per_s:.1f} img/s",
            )  # fmt: skip
            if info.checkpoint is not None and show:
                val = f", val loss {info.val_loss:.4f}" if info.val_loss is not None else ""
                stderr.print(
                    f"step {info.step}: checkpoint {info.checkpoint}{val}",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
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
    emit(result, fmt, f"trained to step {result['steps']}; model: {result['model']}", quiet)
