"""Reading and writing images and files.

Owns: every touch of PIL and of the file system for images: decoding (PNG, JPEG, WebP, BMP,
TIFF, GIF first frame), EXIF orientation, the pixel limit that stops decompression bombs, mode
conversion (palette, 16-bit, greyscale, CMYK, alpha), uint8 <-> float tensors, padding to a size
multiple and cropping back, and atomic writes (temporary file, then rename) so a killed process
never leaves a half-written output.

Conventions: tensors are NCHW float32; RGB in [0, 1]; alpha in [0, 1] (1 = opaque).
Imports only :mod:`sketchcolor.errors` from the package.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import HintError, ImageError, OutputExistsError

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


def open_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, with EXIF orientation applied.

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(path)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{path}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}",
                    hint="downscale it first",
                )
            if w == 0 or h == 0:
                raise ImageError(f"{path}: image has zero size ({w}x{h})")
            img.seek(0)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file, or a format that cannot be read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    try:
        transposed: Image.Image | None = ImageOps.exif_transpose(img)
        img = transposed or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop us; keep pixels as stored
        pass
    return img


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


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager giving a temporary path that replaces ``path`` on success only.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic: readers
    see either the old file or the complete new one, never a half-written file. On error the
    temporary file is removed and ``path`` is untouched.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists", hint="pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions (0666 minus umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(
            f"{path}: cannot write '{path.suffix or '(no suffix)'}' images",
            hint=f"use one of {', '.join(sorted(WRITE_FORMATS))}",
        )
    kwargs: dict[str, object] = {}
    if fmt == "PNG" and text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(k, v)
        kwargs["pnginfo"] = info
    if fmt == "JPEG":
        kwargs["quality"] = 95
        if img.mode == "RGBA":
            img = img.convert("RGB")
    with atomic_write(path, overwrite=overwrite) as tmp:
        img.save(tmp, format=fmt, **kwargs)
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
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
        return float(v), repr(v)

    def colour(entry: dict[str, Any], where: str) -> tuple[float, float, float]:
        if not isinstance(entry.get("color"), str):
            raise HintError(f"{path}: {where} needs a 'color' string")
        try:
            return parse_color(entry["color"])
        except HintError as exc:
            raise HintError(f"{path}: {where}: {exc.message}") from None

    points = []
    for i, p in enumerate(data.get("points", [])):
        where = f"points[{i}]"
        if not isinstance(p, dict) or set(p) - {"x", "y", "color", "radius"}:
            raise HintError(f"{path}: {where} must be an object with x, y, color and optional radius")
        x, xt = coord(p.get("x"), f"{where}.x")
        y, yt = coord(p.get("y"), f"{where}.y")
        radius = coord(p["radius"], f"{where}.radius")[0] if "radius" in p else None
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
        width = coord(s["width"], f"{where}.width")[0] if "width" in s else None
        strokes.append((pts, colour(s, where), width))
    return {"points": points, "strokes": strokes}


def save_gif(
    frames: list[Image.Image], path: str | Path, *, duration_ms: int = 120, overwrite: bool = False
) -> Path:
    """Write an animated GIF atomically (the last frame is held three times longer)."""
    path = Path(path)
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 3]
    with atomic_write(path, overwrite=overwrite) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
