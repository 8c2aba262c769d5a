"""Reading and writing images and files.

Owns: every touch of PIL and of the file system for images: decoding (PNG, JPEG, WebP, BMP,
TIFF, GIF first frame), EXIF orientation, the pixel limit that stops decompression bombs, mode
conversion (palette, 16-bit, greyscale, CMYK, alpha), uint8 <-> float tensors, padding to a size
multiple and cropping back, atomic writes (temporary file, then rename) so a killed process
never leaves a half-written output, reading an input once (files, pipes, standard input), and
removing only those temporary files that are provably stale.

Conventions: tensors are NCHW float32; RGB in [0, 1]; alpha in [0, 1] (1 = opaque).
Imports only :mod:`sketchcolor.errors` from the package.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from struct import error as struct_error
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import HintError, ImageError, OutputError, OutputExistsError

log = logging.getLogger(__name__)

#: Largest image accepted, in pixels (width x height): 8192 x 8192, about 67 megapixels.
#: Larger files are refused before decoding, which stops decompression bombs.
MAX_PIXELS = 8192 * 8192

#: Suffixes :func:`save_image` can write.
WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

#: Suffixes treated as images when scanning folders.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


#: The name that stands for standard input (as a sketch) or standard output (as ``-o``).
STDIO = "-"


def is_stdio(path: str | Path) -> bool:
    """Whether ``path`` is ``-``: standard input as an input, standard output as an output."""
    return str(path) == STDIO


def read_input_bytes(path: str | Path, *, what: str = "file") -> bytes:
    """Read an input completely, once: a file, a pipe (FIFO, ``<(...)``) or ``-`` for standard input.

    Pipes and standard input can be read only once, so callers keep the bytes and use them for
    everything (decoding, digests).

    Raises:
        ImageError: The path is missing, is a folder, or cannot be read.
    """
    if is_stdio(path):
        return sys.stdin.buffer.read()
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not {'an image file' if what == 'image' else 'a file'}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def is_regular_file(path: str | Path) -> bool:
    """A regular file (can be read again later), not a pipe, device or ``-``."""
    return not is_stdio(path) and Path(path).is_file()


def _decode(source: Any, name: str, max_pixels: int) -> Image.Image:
    """Decode an image from a path or a binary file object (the checks of :func:`open_image`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(source)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}",
                    hint="downscale it first",
                )
            if w == 0 or h == 0:
                raise ImageError(f"{name}: image has zero size ({w}x{h})")
            frames = int(getattr(img, "n_frames", 1) or 1)
            img.seek(0)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file, or a format that cannot be read") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct_error) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    if frames > 1:
        kind = "pages" if img.format == "TIFF" else "frames"
        log.warning("%s: has %d %s; only the first is used", name, frames, kind)
    try:
        transposed: Image.Image | None = ImageOps.exif_transpose(img)
        img = transposed or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop us; keep pixels as stored
        pass
    img.info[NAME_KEY] = name  # so later warnings about the picture can say which file it is
    return img


#: Key of a decoded picture's ``info`` that holds the name it was read under (:func:`image_name`).
NAME_KEY = "sketchcolor.name"


def image_name(image: Any, default: str) -> str:
    """What to call an input in messages: its path, the name it was decoded under, or ``default``."""
    if isinstance(image, str | Path):
        return str(image)
    if isinstance(image, Image.Image):
        return str(image.info.get(NAME_KEY) or getattr(image, "filename", "") or default)
    return default


def open_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, with EXIF orientation applied.

    A file with several pages or frames (multi-page TIFF, animated GIF) gives its first, with a
    warning.

    Args:
        path: Image file.
        max_pixels: Refuse images with more pixels than this (see :data:`MAX_PIXELS`).

    Returns:
        The decoded image, in whatever mode the file holds.

    Raises:
        ImageError: The file is missing, is not an image, is truncated or corrupt, or is too large.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    if not path.is_file():  # a pipe: read once into memory (PIL seeks)
        return decode_image(read_input_bytes(path, what="image"), str(path), max_pixels=max_pixels)
    return _decode(path, str(path), max_pixels)


def decode_image(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image held in memory (see :func:`read_input_bytes`), with the checks of :func:`open_image`.

    Args:
        data: The file's bytes.
        name: What to call it in messages (its path, or ``-`` for standard input).
        max_pixels: Pixel limit (see :data:`MAX_PIXELS`).

    Raises:
        ImageError: Not an image, truncated or corrupt, empty, or too large.
    """
    if not data:
        raise ImageError(f"{'standard input' if name == STDIO else name}: is empty (no image data)")
    return _decode(io.BytesIO(data), "standard input" if name == STDIO else name, max_pixels)


def _sixteen_bit_to_u8(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float single-channel images to 8-bit 'L' (no clipping)."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        scale = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        out = np.clip(np.nan_to_num(arr) / scale, 0.0, 1.0) * 255.0
    else:
        arr = arr.astype(np.float64)
        top = 65535.0 if arr.size and arr.max() > 255 else 255.0
        out = np.clip(arr / top, 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(out).astype(np.uint8), mode="L")


def to_rgba(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGBA (palette transparency, 16-bit, CMYK, LA, ... handled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _sixteen_bit_to_u8(img)
    if img.mode == "P":
        img = img.convert("RGBA")  # honours the palette's transparency entry
    if img.mode == "CMYK":
        img = img.convert("RGB")
    if img.mode != "RGBA":
        img = img.convert("RGBA")
    return img


def to_rgb_on_white(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency onto white paper.

    Line art is often exported as black lines on a transparent layer; compositing onto white
    (not black, PIL's default when dropping alpha) keeps it line art.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV") and "transparency" not in img.info:
        return img.convert("RGB")  # nothing transparent: no compositing needed
    rgba = to_rgba(img)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit PIL image (L, RGB or RGBA) -> float32 tensor (1, C, H, W) in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """Float tensor (1, C, H, W) or (C, H, W) in [0, 1], C in {1, 3, 4} -> 8-bit PIL image.

    Values are clipped to [0, 1] and rounded to the nearest 8-bit level.

    Raises:
        ValueError: Wrong shape, or non-finite values (a silently grey or black picture is never
            written).
    """
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected (C, H, W) with C in 1, 3, 4; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("image tensor holds NaN or infinite values")
    arr = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    return Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode)


def load_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read an image as RGB on white paper: float32 (1, 3, H, W) in [0, 1].

    Raises:
        ImageError: See :func:`open_image`.
    """
    return image_to_tensor(to_rgb_on_white(open_image(path, max_pixels=max_pixels)))


def load_rgba(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read an image with its alpha: float32 (1, 4, H, W) in [0, 1]; opaque if it has no alpha.

    Raises:
        ImageError: See :func:`open_image`.
    """
    return image_to_tensor(to_rgba(open_image(path, max_pixels=max_pixels)))


def pad_to_multiple(
    x: torch.Tensor, multiple: int, *, value: float = 1.0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) on the right and bottom up to multiples of ``multiple``.

    Args:
        x: Images.
        multiple: Size multiple (the U-Net's ``size_multiple``).
        value: Fill value (1.0: white paper).

    Returns:
        The padded tensor and the original (H, W), for :func:`crop_to`.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=value)
    return x, (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (N, C, H, W) back to ``size`` = (H, W) from the top left (inverse of padding)."""
    return x[..., : size[0], : size[1]]


#: Temporary files of :func:`atomic_write` older than this (seconds) count as stale whoever wrote
#: them: no write of one image or report takes a day.
STALE_AFTER_S = 24 * 3600
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)~(?P<pid>\d+)~[A-Za-z0-9_]+\.tmp$")
#: Temporary names written before they carried host and process (sketchcolor 0.1.0 pre-release).
_LEGACY_TEMP_RE = re.compile(
    r"^\..+\.(png|jpe?g|webp|bmp|tiff?|gif|json|csv|toml|jsonl|safetensors)\.[A-Za-z0-9_]{8}\.tmp$",
    re.IGNORECASE,
)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def temporary_prefix(path: Path) -> str:
    """Prefix of :func:`atomic_write`'s temporary names: ``.NAME.HOST~PID~`` (then random, ``.tmp``).

    The writer's host and process id in the name let :func:`remove_stale_temporaries` tell a
    killed run's leftovers from a live writer's file (another ``--shard`` run, say).
    """
    return f".{path.name}.{_host()}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: keep the file
    return True


def is_stale_temporary(tmp: Path, *, now: float | None = None, max_age_s: float = STALE_AFTER_S) -> bool:
    """Whether ``tmp`` is a temporary file of :func:`atomic_write` that nobody is writing any more.

    Provably stale means: its name says it was written on this host by a process that no longer
    exists, or it has not been modified for ``max_age_s`` seconds. Anything else (a live writer's
    file, a file of another host younger than that, any file not named like ours) is not.
    """
    match = _TEMP_RE.match(tmp.name)
    if match is None and _LEGACY_TEMP_RE.match(tmp.name) is None:
        return False
    if match is not None and match["host"] == _host() and not _pid_alive(int(match["pid"])):
        return True
    try:
        age = (time.time() if now is None else now) - tmp.stat().st_mtime
    except OSError:
        return False
    return age > max_age_s


def remove_stale_temporaries(folder: str | Path, *, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete, under ``folder``, temporary files a killed writer left behind (:func:`is_stale_temporary`).

    Temporary files of live writers, such as another ``batch --shard`` run writing into the same
    folder, are never touched.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file() and is_stale_temporary(tmp, max_age_s=max_age_s):
            with contextlib.suppress(FileNotFoundError):  # another run removed it first
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_output_path(path: str | Path) -> Path:
    """Refuse an output path that is a folder or whose parent is a file (before any work).

    Raises:
        OutputError: Names ``path`` and the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder", hint="give a file name, e.g. out.png")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: cannot be written, {parent} is a file, not a folder")
            break
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager giving a temporary path that replaces ``path`` on success only.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic: readers
    see either the old file or the complete new one, never a half-written file. On error the
    temporary file is removed and ``path`` is untouched. Its name carries the writer's host and
    process id (:func:`temporary_prefix`).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: ``path`` is a folder, or its folder cannot be created or written (the message
            names ``path``, never the temporary file).
    """
    path = check_output_path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists", hint="pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            # mkstemp creates 0600 files; give the result the usual permissions (0666 minus umask).
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_format(path: str | Path) -> str:
    """The PIL format :func:`save_image` writes for ``path``'s suffix (``-``, standard output: PNG).

    Raises:
        ImageError: Unsupported suffix (checked before any work, so a run never ends on it).
    """
    path = Path(path)
    if is_stdio(path):
        return "PNG"
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(
            f"{path}: cannot write '{path.suffix or '(no suffix)'}' images",
            hint=f"use one of {', '.join(sorted(WRITE_FORMATS))}",
        )
    return fmt


def _save_kwargs(
    img: Image.Image, fmt: str, text: Mapping[str, str] | None
) -> tuple[Image.Image, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    if fmt == "PNG" and text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(k, v)
        kwargs["pnginfo"] = info
    if fmt == "JPEG":
        kwargs["quality"] = 95
        if img.mode == "RGBA":
            img = img.convert("RGB")
    return img, kwargs


def encode_image(img: Image.Image, fmt: str = "PNG", *, text: Mapping[str, str] | None = None) -> bytes:
    """The bytes of ``img`` in ``fmt`` (with PNG text chunks), e.g. for standard output."""
    img, kwargs = _save_kwargs(img, fmt, text)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def save_image(
    img: Image.Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    text: Mapping[str, str] | None = None,
) -> Path:
    """Write ``img`` atomically; the format follows the suffix.

    Args:
        img: Image to write.
        path: Destination (``.png``, ``.jpg``, ``.webp``, ``.bmp``, ``.tif``).
        overwrite: Replace an existing file.
        text: PNG text chunks (key -> value), e.g. the parameters that made the image.

    Returns:
        ``path``.

    Raises:
        ImageError: Unsupported suffix.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: ``path`` cannot be written (a folder, no permission, disk full); names ``path``.
    """
    path = Path(path)
    fmt = output_format(path)
    img, kwargs = _save_kwargs(img, fmt, text)
    with atomic_write(path, overwrite=overwrite) as tmp:
        try:
            img.save(tmp, format=fmt, **kwargs)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return Path(path)


def read_png_text(path: str | Path) -> dict[str, str]:
    """Text chunks of a PNG file (empty for other formats).

    Raises:
        ImageError: See :func:`open_image`.
    """
    path = Path(path)
    open_image(path)  # validates: exists, decodes, within the pixel limit
    with Image.open(path) as img:
        return {str(k): str(v) for k, v in getattr(img, "text", {}).items()}


def peek_png_text(path: str | Path, key: str) -> str | None:
    """One text chunk written before the pixel data (as :func:`save_image` writes them), without
    decoding the image; None if the file is not a readable PNG or has no such chunk."""
    try:
        with Image.open(path) as img:
            value = img.info.get(key)
    except (OSError, SyntaxError, ValueError, EOFError, struct_error, Image.DecompressionBombError):
        return None
    return str(value) if value is not None else None


def check_hint_extent(value: Any, what: str) -> float:
    """The one rule for hint sizes from every source (``--hint-radius``, JSON ``radius``/``width``).

    Args:
        value: The size in pixels.
        what: Names the value in the message (``--hint-radius``, ``hints.json: points[0].radius``).

    Returns:
        ``value`` as a float: finite and >= 0.

    Raises:
        HintError: Not a number, not finite, or negative.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HintError(f"{what} must be a number of pixels, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise HintError(f"{what} must be a finite number of pixels >= 0, got {value!r}")
    return float(value)


def parse_color(text: str) -> tuple[float, float, float]:
    """A colour written as hex (``#f80``, ``#ff8800``), a CSS name (``skyblue``) or ``rgb(255, 136, 0)``.

    Returns:
        (r, g, b) in [0, 1].

    Raises:
        HintError: The text is not a colour.
    """
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text.strip())
    except ValueError:
        raise HintError(
            f"'{text}' is not a colour (use #rrggbb, #rgb, rgb(r, g, b) or a CSS colour name)"
        ) from None
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


def read_hints_json(path: str | Path) -> dict[str, list[Any]]:
    """Read a JSON hints file.

    Format::

        {"points":  [{"x": 120, "y": 80, "color": "#d03030", "radius": 4},
                     {"x": 0.5, "y": 0.25, "color": "skyblue"}],
         "strokes": [{"points": [[10, 10], [50, 40]], "color": "red", "width": 6}]}

    Coordinates are pixels, or fractions of the width/height when written with a decimal point
    within [0, 1]. ``radius`` and ``width`` are optional (pixels).

    Returns:
        ``{"points": [(x, y, x_text, y_text, rgb, radius | None)], "strokes": [([(x, y, x_text,
        y_text)], rgb, width | None)]}`` with colours parsed.

    Raises:
        HintError: Unreadable file, invalid JSON or a malformed entry (named by its index).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HintError(f"{path}: cannot read hints file ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise HintError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) - {"points", "strokes"}:
        raise HintError(f"{path}: a hints file is an object with 'points' and/or 'strokes' lists")

    def coord(v: Any, where: str) -> tuple[float, str]:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise HintError(f"{path}: {where} must be a number")
        if not math.isfinite(v):
            raise HintError(f"{path}: {where} must be a finite number, got {v!r}")
        return float(v), repr(v)

    def colour(entry: dict[str, Any], where: str) -> tuple[float, float, float]:
        if not isinstance(entry.get("color"), str):
            raise HintError(f"{path}: {where} needs a 'color' string")
        try:
            return parse_color(entry["color"])
        except HintError as exc:
            raise HintError(f"{path}: {where}: {exc.message}") from None

    for key in ("points", "strokes"):
        if not isinstance(data.get(key, []), list):
            raise HintError(f"{path}: '{key}' must be a list")
    points = []
    for i, p in enumerate(data.get("points", [])):
        where = f"points[{i}]"
        if not isinstance(p, dict) or set(p) - {"x", "y", "color", "radius"}:
            raise HintError(f"{path}: {where} must be an object with x, y, color and optional radius")
        x, xt = coord(p.get("x"), f"{where}.x")
        y, yt = coord(p.get("y"), f"{where}.y")
        radius = check_hint_extent(p["radius"], f"{path}: {where}.radius") if "radius" in p else None
        points.append((x, y, xt, yt, colour(p, where), radius))
    strokes = []
    for i, s in enumerate(data.get("strokes", [])):
        where = f"strokes[{i}]"
        if (
            not isinstance(s, dict)
            or set(s) - {"points", "color", "width"}
            or not isinstance(s.get("points"), list)
            or not s["points"]
        ):
            raise HintError(
                f"{path}: {where} must be an object with a non-empty points list, color and optional width"
            )
        pts = []
        for j, xy in enumerate(s["points"]):
            if not isinstance(xy, list) or len(xy) != 2:
                raise HintError(f"{path}: {where}.points[{j}] must be [x, y]")
            x, xt = coord(xy[0], f"{where}.points[{j}]")
            y, yt = coord(xy[1], f"{where}.points[{j}]")
            pts.append((x, y, xt, yt))
        width = check_hint_extent(s["width"], f"{path}: {where}.width") if "width" in s else None
        strokes.append((pts, colour(s, where), width))
    return {"points": points, "strokes": strokes}


def save_gif(
    frames: list[Image.Image], path: str | Path, *, duration_ms: int = 120, overwrite: bool = False
) -> Path:
    """Write an animated GIF atomically (the last frame is held three times longer)."""
    path = Path(path)
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 3]
    if path.suffix.lower() != ".gif":
        raise ImageError(f"{path}: the denoising animation is a GIF", hint="give a .gif file name")
    with atomic_write(path, overwrite=overwrite) as tmp:
        try:
            frames[0].save(
                tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
            )
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
