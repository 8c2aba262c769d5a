"""The Typer application, shared option aliases and the one output sink of the CLI."""

from __future__ import annotations

import enum
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .. import __version__
from ..config import SEED_LIMIT, SampleConfig

#: Sampling defaults of every command come from the library's SampleConfig (one source).
DEFAULTS = SampleConfig()

stderr = Console(stderr=True)
stdout = Console()

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
    dpmpp2m = "dpmpp2m"


class Device(enum.StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(enum.StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class OutputFormat(enum.StrEnum):
    human = "human"
    json = "json"


class Mode(enum.StrEnum):
    lineart = "lineart"
    photo = "photo"


class UsageProblem(Exception):
    """A usage error found by a command itself (exit 2, "see --help"), like the parser's own.

    :func:`sketchcolor.cli.main` reports usage errors by their interface (``format_message`` and
    ``exit_code``), so this needs neither click nor typer's vendored copy of it: click is not a
    dependency of typer any more, and a core install has no click to import.
    """

    exit_code = 2

    def format_message(self) -> str:
        return str(self)


def finite(value: float | None) -> float | None:
    """Option callback: refuse NaN and infinities (``inf`` passes ``min=0`` and NaN fails no range)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


# Shared option aliases: every command spells the same option the same way.
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m", help="Model file (.safetensors). Default: the model bundled with sketchcolor."
    ),
]
StepsOpt = Annotated[
    int,
    typer.Option(
        "--steps",
        min=1,
        help="Sampling steps (network evaluations), at most the model's noise levels "
        "(1000 for the bundled model; checked before sampling).",
    ),
]
SamplerOpt = Annotated[
    Sampler,
    typer.Option(
        "--sampler",
        help="Sampler: ddim (deterministic at eta 0), ddpm (ancestral) or dpmpp2m "
        "(DPM-Solver++(2M), deterministic, for few steps).",
    ),
]
EtaOpt = Annotated[
    float,
    typer.Option(
        "--eta",
        min=0.0,
        max=1.0,
        callback=finite,
        help="DDIM stochasticity: 0 deterministic, 1 like DDPM.",
    ),
]
GuidanceOpt = Annotated[
    float,
    typer.Option(
        "--guidance",
        min=0.0,
        callback=finite,
        help="Classifier-free guidance scale on the hints, finite; 1 = off.",
    ),
]
PinHintsOpt = Annotated[
    bool,
    typer.Option("--pin-hints/--no-pin-hints", help="Hold hinted pixels at their colour while sampling."),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        min=0,
        max=SEED_LIMIT - 1,
        help="Random seed, 0 to 2**64 - 1: the same seed gives the same picture.",
    ),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="The network's arithmetic: auto = bf16 on a CPU with native bfloat16 (AMX, AVX512-BF16, "
        "Arm BF16) and on CUDA, else fp32; fp16 is for GPUs. Recorded in the PNG.",
    ),
]
DeviceOpt = Annotated[
    Device, typer.Option("--device", help="Compute device; auto = CUDA, then MPS, then CPU.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or summary (errors still show).")
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Result on stdout: human summary or JSON.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace existing output files (never an input of the command)."),
]


class _Subject:
    """What the running command works on (its input), named by errors that are bugs; its argv."""

    value: str | None = None
    argv: list[str] = []


def working_on(thing: Any) -> None:
    """Record the input the command is working on, for :func:`sketchcolor.cli.main`'s last resort."""
    _Subject.value = None if thing is None else str(thing)


def current_subject() -> str | None:
    return _Subject.value


def set_command_line(argv: list[str]) -> None:
    _Subject.argv = list(argv)


def command_line() -> str:
    """The running command as typed: ``sketchcolor train --data ...`` (recorded in models)."""
    import shlex

    return shlex.join(["sketchcolor", *_Subject.argv])


def version_callback(value: bool) -> None:
    if value:
        stdout.print(f"sketchcolor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Colourise line-art sketches with diffusion models, guided by colour hints."""


class _CountColumn(ProgressColumn):
    """``done/total``; only ``done`` while the total is not known yet (never ``0/None``)."""

    def render(self, task: Task) -> Text:
        done = int(task.completed)
        return Text(f"{done}" if task.total is None else f"{done}/{int(task.total)}")


def progress_bar(quiet: bool, label: str) -> Progress:
    """A progress bar on stderr (disabled when quiet, or when stderr is not a terminal)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        _CountColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        # Only on a terminal: a pipe or a CI log gets no bar remnants, just the result lines.
        disable=quiet or not stderr.is_terminal,
        transient=True,
    )


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def emit(result: Mapping[str, Any] | list[Any], fmt: OutputFormat, human: str, quiet: bool) -> None:
    """The one output sink: JSON on stdout, or a human summary."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(json_safe(result), indent=2, sort_keys=True) + "\n")
    elif not quiet:
        stdout.print(human, highlight=False, soft_wrap=True, markup=False)
