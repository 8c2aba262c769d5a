"""The ``sketchcolor`` command line: a thin shell over the library.

Examples::

    # Colourise a sketch guided by a scribble layer (white or transparent = no hint)
    sketchcolor colorize sketch.png --hints scribble.png -o out.png

    # Train on your own colour pictures (sketches and hints are synthesised), resume after a crash
    sketchcolor train --data my_pictures/ --out runs/mine
    sketchcolor train --resume runs/mine

Each command builds configs from its options and calls library functions. Progress bars,
warnings and errors go to stderr; results go to stdout as a short human summary or, with
``--format json``, as JSON. Errors caused by input (a bad file, flag or checkpoint) print one line,
``sketchcolor: error: <what>: <problem>``, and exit with status 1 (2 for a bad flag). Any other
exception is a bug, and still gives one line naming the command's input, the exception and
"this is a bug"; set ``SKETCHCOLOR_DEBUG=1`` to see the traceback. No traceback is ever printed
otherwise (docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

import typer

from ..errors import SketchcolorError
from . import batch as _batch  # noqa: F401  (registers the command)
from . import colorize as _colorize  # noqa: F401  (registers the command)
from . import eval as _eval  # noqa: F401  (registers the command)
from . import train as _train  # noqa: F401  (registers the command)
from . import ui as _ui  # noqa: F401  (registers the command)
from .app import app, current_subject, set_command_line, stderr, stdout, working_on

__all__ = ["app", "main"]


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        # markup=False everywhere: file names such as page[1].png are text, not rich markup.
        text = " ".join(record.getMessage().split())
        stderr.print(f"sketchcolor: {level}: {text}", highlight=False, soft_wrap=True, markup=False)


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """Python warnings (from PIL, torch, ...) as one line each, like the package's own."""
    text = " ".join(str(message).split())
    stderr.print(f"sketchcolor: warning: {text}", highlight=False, soft_wrap=True, markup=False)


def _fail(message: str, hint: str | None = None) -> None:
    line = " ".join((f"sketchcolor: error: {message}" + (f" ({hint})" if hint else "")).split())
    stderr.print(line, highlight=False, soft_wrap=True, markup=False)


def _describe_unexpected(exc: BaseException) -> tuple[str, str]:
    """One line for an exception that is not a user error: the input, the exception, "a bug"."""
    if "OutOfMemoryError" in type(exc).__name__ or "out of memory" in str(exc).lower():
        return "out of memory", "try a smaller image, a smaller --batch-size or --device cpu"
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 300:
        text = text[:297] + "..."
    subject = current_subject()
    where = f"{subject}: " if subject else ""
    return (
        f"{where}unexpected {type(exc).__name__}: {text}",
        "this is a bug; SKETCHCOLOR_DEBUG=1 shows the traceback",
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
    working_on(None)
    set_command_line(args)
    saved_showwarning = warnings.showwarning
    if not debug:
        warnings.showwarning = _show_warning
    try:
        rv = app(args=args, prog_name="sketchcolor", standalone_mode=False)
        if rv == 130:  # newer typer turns Ctrl-C into a returned 130 without a word (commands return None)
            _fail("interrupted")
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
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if type(exc).__name__ == "NoArgsIsHelpError":
                stdout.print(exc.format_message(), highlight=False, markup=False)
                return 0
            _fail(exc.format_message().replace("\n", " "), "see --help" if int(exc.exit_code) == 2 else None)
            return int(exc.exit_code)
        if debug:
            raise
        _fail(*_describe_unexpected(exc))
        return 1
    finally:
        warnings.showwarning = saved_showwarning
        logger.removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
