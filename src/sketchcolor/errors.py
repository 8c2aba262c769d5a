"""Exception types shared by the whole package.

Owns: the small hierarchy of user-facing errors. Every error a user can cause (a bad file, a bad
flag, a corrupt checkpoint) is a :class:`SketchcolorError` whose message is one line naming the
thing and the problem, optionally with a ``hint`` saying what to do. The CLI prints exactly that
line and exits non-zero. Any other exception is a bug: the CLI still prints one line naming the
command's input and the exception (``SKETCHCOLOR_DEBUG=1`` shows the traceback).

Must not import anything from the package (it is the first module in the import order).
"""

from __future__ import annotations


class SketchcolorError(Exception):
    """Base class of errors caused by the user's input, not by a bug.

    Args:
        message: One line: the file or setting concerned, then the problem.
        hint: Optional one-line suggestion of what to do about it.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(SketchcolorError, ValueError):
    """A configuration value or key is invalid (unknown key, out of range, wrong type)."""


class ImageError(SketchcolorError, ValueError):
    """An image cannot be read, is too large, or does not fit with the other inputs."""


class HintError(SketchcolorError, ValueError):
    """Colour hints are malformed (bad colour, point outside the image, size mismatch)."""


class CheckpointError(SketchcolorError, ValueError):
    """A checkpoint is missing, corrupt, of an unknown format or does not match the model."""


class DeviceError(SketchcolorError, RuntimeError):
    """The requested compute device is not available."""


class OutputError(SketchcolorError, OSError):
    """An output cannot be written: a folder, an unwritable place, or one of the command's inputs."""


class OutputExistsError(SketchcolorError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class DataError(SketchcolorError, ValueError):
    """A training or evaluation data set is empty, too small, or laid out wrongly."""


class ModelError(SketchcolorError, ValueError):
    """The model cannot do what was asked (e.g. a reference picture for a model trained without)."""


def failure_text(exc: BaseException, *, with_hint: bool = True) -> str:
    """One line for a failure of one item (a batch page, an eval item): what the user reads.

    The tool's own errors give their message (and hint); out of memory and file-system errors a
    short plain line; anything else is a bug, named as one, but still one line.
    """
    if isinstance(exc, SketchcolorError):
        return exc.message + (f" ({exc.hint})" if with_hint and exc.hint else "")
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return f"{where}{exc.strerror or exc}"
    text = " ".join(str(exc).split()) or "(no message)"
    return f"unexpected {type(exc).__name__}: {text[:300]} (this is a bug; please report it)"
