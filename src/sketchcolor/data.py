"""Training data: folders of pictures become (x0, conditioning) pairs.

Owns: finding the pictures (a folder of colour images, paired ``sketch/`` + ``color/`` folders, or
Parquet files in the Diffusart layout), preparing them once into cached arrays (with XDoG line
extraction for plain colour images), the deterministic sampler that fixes the data order, and the
per-item augmentation and synthetic hints.

Determinism: the data order and every random choice of an item (crop, flip, line variant, hints,
hint dropout) are pure functions of (run seed, position in the stream). Nothing depends on worker
processes or on how far a previous run got, so a resumed run sees exactly the data an
uninterrupted one would.

Imports io, color, conditioning and config from the package.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import io as _io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .color import lab_to_model, lightness, rgb_to_lab
from .conditioning import (
    drop_hints,
    make_conditioning,
    normalize_sketch,
    reference_lab_from_rgb,
    sample_training_hints,
    warp_reference,
)
from .config import ColorizerConfig, DataConfig, DataFormat, HintConfig, LineStyleConfig, ReferenceConfig
from .errors import DataError, ImageError
from .io import IMAGE_SUFFIXES, image_to_tensor, open_image, to_rgb_on_white

log = logging.getLogger(__name__)

#: Bumped whenever preparation changes, so old caches are not reused.
PREPARE_VERSION = 2
SKETCH_DIRS = ("sketch", "sketches", "lineart", "line")
COLOR_DIRS = ("color", "colour", "colors", "colours")
#: Optional folder of real reference pictures beside ``sketch/`` and ``color/`` (matched by name).
REFERENCE_DIRS = ("reference", "references", "ref")


# ----------------------------------------------------------------------------------------------
# Line extraction
# ----------------------------------------------------------------------------------------------


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding (radius 3 sigma)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    kernel = kernel[radius - pad : radius + pad + 1]
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclasses.dataclass(frozen=True)
class XDoGParams:
    """Parameters of the extended difference-of-Gaussians line extractor (Winnemoeller et al. 2012).

    ``D = G_sigma(I) - tau * G_{k sigma}(I)``; the output is 1 where ``D >= eps`` and
    ``1 + tanh(phi * (D - eps))`` below (dark lines on white). With ``binarize`` the soft result is
    thresholded at 0.5.
    """

    sigma: float = 0.6
    k: float = 1.6
    tau: float = 0.98
    phi: float = 80.0
    eps: float = -0.02
    binarize: bool = False

    @staticmethod
    def random(generator: torch.Generator, scale: float = 1.0) -> XDoGParams:
        """Random parameters for varied line styles; ``scale`` = image size / 128."""
        u = torch.rand(5, generator=generator).tolist()
        return XDoGParams(
            sigma=(0.4 + 0.6 * u[0]) * scale,
            tau=0.95 + 0.035 * u[1],
            phi=30.0 + 170.0 * u[2],
            eps=-0.03 + 0.03 * u[3],
            binarize=u[4] < 0.4,
        )


def xdog(rgb: torch.Tensor, params: XDoGParams) -> torch.Tensor:
    """Extract line art from colour pictures: (N, 3, H, W) in [0, 1] -> (N, 1, H, W) lightness.

    The result has dark lines (towards 0) on white (1), like a sketch.
    """
    grey = lightness(rgb)
    d = gaussian_blur(grey, params.sigma) - params.tau * gaussian_blur(grey, params.sigma * params.k)
    e = torch.where(d >= params.eps, torch.ones_like(d), 1.0 + torch.tanh(params.phi * (d - params.eps)))
    e = e.clamp(0.0, 1.0)
    if params.binarize:
        e = (e > 0.5).to(e.dtype)
    return e


# ----------------------------------------------------------------------------------------------
# Finding pictures
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    """One training picture: a colour source and, for paired data, a sketch source."""

    name: str
    colour: Path | tuple[Path, int]  # a file, or (parquet file, row)
    sketch: Path | tuple[Path, int] | None = None
    reference: Path | None = None


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _subdir(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def detect_format(path: Path) -> DataFormat:
    """Guess the layout of ``path``: parquet, paired (sketch/ + color/) or a folder of images."""
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            return "parquet"
        raise DataError(f"{path}: a training set must be a folder or a .parquet file")
    if _subdir(path, SKETCH_DIRS) and _subdir(path, COLOR_DIRS):
        return "paired"
    if any(path.glob("*.parquet")):
        return "parquet"
    return "images"


def find_items(path: str | Path, fmt: DataFormat = "auto") -> tuple[list[Item], list[str]]:
    """List the pictures of a training set.

    Args:
        path: Folder or Parquet file.
        fmt: Layout, or ``auto`` to detect it.

    Returns:
        The items (sorted by name) and a list of warnings (e.g. unmatched pairs).

    Raises:
        DataError: The path does not exist or holds no pictures.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: training data not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    warnings: list[str] = []
    items: list[Item] = []
    if fmt == "paired":
        sk_dir, co_dir = _subdir(path, SKETCH_DIRS), _subdir(path, COLOR_DIRS)
        if sk_dir is None or co_dir is None:
            raise DataError(f"{path}: paired data needs sub-folders sketch/ and color/")
        sketches = {p.relative_to(sk_dir).with_suffix("").as_posix(): p for p in _images_under(sk_dir)}
        colours = {p.relative_to(co_dir).with_suffix("").as_posix(): p for p in _images_under(co_dir)}
        only_sk = sorted(set(sketches) - set(colours))
        only_co = sorted(set(colours) - set(sketches))
        for label, names in (
            ("sketches without a colour picture", only_sk),
            ("colour pictures without a sketch", only_co),
        ):
            if names:
                shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
                warnings.append(f"{path}: {len(names)} {label}: {shown}")
        ref_dir = _subdir(path, REFERENCE_DIRS)
        references = (
            {p.relative_to(ref_dir).with_suffix("").as_posix(): p for p in _images_under(ref_dir)}
            if ref_dir
            else {}
        )
        items = [
            Item(name, colours[name], sketches[name], references.get(name))
            for name in sorted(set(sketches) & set(colours))
        ]
    elif fmt == "parquet":
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        for f in files:
            for row in range(_parquet_rows(f)):
                items.append(Item(f"{f.stem}/{row:06d}", (f, row), (f, row)))
    else:
        items = [Item(p.relative_to(path).with_suffix("").as_posix(), p) for p in _images_under(path)]
    if not items:
        raise DataError(f"{path}: no training pictures found (format '{fmt}')")
    return items, warnings


def _parquet_module() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("Parquet data needs pyarrow", hint="pip install 'sketchcolor[parquet]'") from None
    return pq


def _parquet_rows(path: Path) -> int:
    pq = _parquet_module()
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure is a bad file
        raise DataError(f"{path}: cannot read Parquet file ({exc})") from None


@functools.lru_cache(maxsize=4)
def _parquet_column(path: Path, column: str) -> Any:
    """One column of a Parquet file, read once per process (rows are then indexed)."""
    pq = _parquet_module()
    try:
        return pq.read_table(path, columns=[column]).column(column)
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure is a bad file or missing column
        raise ImageError(f"{path}: cannot read column '{column}' ({exc})") from None


def _parquet_image(path: Path, row: int, column: str) -> Image.Image:
    table_column = _parquet_column(path, column)
    value = table_column[row].as_py()
    if isinstance(value, dict):  # Hugging Face image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes")
    if not isinstance(value, bytes | bytearray):
        raise ImageError(f"{path} row {row}: column '{column}' holds no image bytes")
    try:
        img = Image.open(_io.BytesIO(value))
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{path} row {row}: column '{column}' is not a readable image ({exc})") from None
    return img


# ----------------------------------------------------------------------------------------------
# Preparing arrays (once, cached)
# ----------------------------------------------------------------------------------------------


def _square(img: Image.Image, size: int) -> np.ndarray:
    """RGB on white, long side resized to ``size`` (area filter), padded to a white square."""
    rgb = to_rgb_on_white(img)
    w, h = rgb.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    rgb = rgb.resize((nw, nh), Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(rgb, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8).transpose(2, 0, 1)


def _open(source: Path | tuple[Path, int], column: str) -> tuple[Image.Image, bytes]:
    if isinstance(source, tuple):
        img = _parquet_image(source[0], source[1], column)
        return img, img.tobytes()
    return open_image(source), source.read_bytes()


def _prepare_item(
    args: tuple[Item, int, int, bool, int],
) -> tuple[str, np.ndarray | None, np.ndarray | None, str, np.ndarray | None]:
    """Worker: load one item -> (name, colour (3,S,S), sketch (V,S,S) uint8, digest or error,
    real reference (3,S,S) uint8 or None)."""
    item, size, variants, need_sketch, seed = args
    try:
        reference = None
        if item.reference is not None:
            reference = _square(open_image(item.reference), size)
        img, raw = _open(item.colour, "full_colour")
        colour = _square(img, size)
        digest = hashlib.sha256(raw).hexdigest()
        sketch = None
        if need_sketch:
            if item.sketch is not None:
                sk_img, sk_raw = _open(item.sketch, "sketch")
                sk = image_to_tensor(Image.fromarray(_square(sk_img, size).transpose(1, 2, 0)))
                sketch = (lightness(sk)[0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
                digest = hashlib.sha256((digest + hashlib.sha256(sk_raw).hexdigest()).encode()).hexdigest()
            else:
                rgb = torch.from_numpy(colour.copy()).float().unsqueeze(0) / 255.0
                # XDoG parameters depend only on the item's name and the seed: stable across runs.
                name_seed = int.from_bytes(
                    hashlib.sha256(f"{seed}:{item.name}".encode()).digest()[:8], "little"
                )
                gen = torch.Generator().manual_seed(name_seed)
                lines = [xdog(rgb, XDoGParams.random(gen, size / 128)) for _ in range(variants)]
                sketch = (torch.cat(lines, dim=1)[0] * 255).round().to(torch.uint8).numpy()
        if item.reference is not None:
            digest = hashlib.sha256(
                (digest + hashlib.sha256(item.reference.read_bytes()).hexdigest()).encode()
            ).hexdigest()
        return item.name, colour, sketch, digest, reference
    except (ImageError, OSError) as exc:
        return item.name, None, None, f"error: {exc}", None


@dataclasses.dataclass
class PreparedData:
    """Pictures prepared as arrays (memory-mapped from the cache).

    Attributes:
        colour: (N, 3, S, S) uint8 RGB on white.
        sketch: (N, V, S, S) uint8 lightness of V line-art variants, or None (photo mode).
        names: Item names, sorted.
        digest: SHA-256 over the names and file contents (the data digest of checkpoints).
        skipped: (name, reason) of unreadable pictures.
        reference: (N, 3, S, S) uint8 real reference pictures (white where an item has none), or
            None when the set has no ``reference/`` folder.
        has_reference: (N,) bool, which items have a real reference, or None.
    """

    colour: np.ndarray
    sketch: np.ndarray | None
    names: list[str]
    digest: str
    skipped: list[tuple[str, str]]
    reference: np.ndarray | None = None
    has_reference: np.ndarray | None = None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sketchcolor" / "datasets"


def prepare_data(
    config: DataConfig,
    resolution: int,
    *,
    need_sketch: bool = True,
    workers: int = 0,
    seed: int = 0,
    progress: Any = None,
) -> tuple[PreparedData, list[str]]:
    """Load (or reuse from the cache) every picture of a training set as arrays.

    Args:
        config: Data settings (path, format, load size, cache folder, line variants).
        resolution: The model's working resolution (``load_size`` defaults to 1.25 x this).
        need_sketch: False in photo mode (the sketch is the picture's own lightness).
        workers: Processes decoding pictures (0 = in this process).
        seed: Seeds the XDoG parameter draws.
        progress: Optional ``callable(done, total)``.

    Returns:
        The prepared data and warnings (unmatched pairs, skipped files).

    Raises:
        DataError: No readable pictures.
    """
    items, warnings = find_items(config.path, config.format)
    size = config.load_size or int(round(resolution * 1.25))
    variants = config.line_variants
    stat: list[tuple[Any, ...]] = []
    for it in items:
        for src in (it.colour, it.sketch):
            if isinstance(src, Path):
                st = src.stat()
                stat.append((str(src.resolve()), st.st_size, st.st_mtime_ns))
            elif isinstance(src, tuple):
                st = src[0].stat()
                stat.append((str(src[0].resolve()), src[1], st.st_size, st.st_mtime_ns))
        if it.reference is not None:
            st = it.reference.stat()
            stat.append((str(it.reference.resolve()), st.st_size, st.st_mtime_ns))
    key_src = json.dumps(
        [PREPARE_VERSION, size, variants, need_sketch, seed, config.format, stat], sort_keys=True
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    cached = cache_root / key
    if (cached / "meta.json").exists():
        meta = json.loads((cached / "meta.json").read_text())
        colour = np.load(cached / "colour.npy", mmap_mode="r")
        sketch = np.load(cached / "sketch.npy", mmap_mode="r") if need_sketch else None
        reference = has_ref = None
        if (cached / "reference.npy").exists():
            reference = np.load(cached / "reference.npy", mmap_mode="r")
            has_ref = np.load(cached / "has_reference.npy")
        skipped = [tuple(s) for s in meta["skipped"]]
        warnings += _skip_warning(config.path, skipped)
        return (
            PreparedData(colour, sketch, meta["names"], meta["digest"], skipped, reference, has_ref),  # type: ignore[arg-type]
            warnings,
        )

    jobs = [(it, size, variants, need_sketch, seed) for it in items]
    results: list[tuple[str, np.ndarray | None, np.ndarray | None, str, np.ndarray | None]] = []
    if progress:
        progress(0, len(jobs))  # the total is known now, before the first picture is decoded
    if workers > 0 and len(jobs) > 64:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            for i, r in enumerate(pool.map(_prepare_item, jobs, chunksize=32)):
                results.append(r)
                if progress:
                    progress(i + 1, len(jobs))
    else:
        for i, job in enumerate(jobs):
            results.append(_prepare_item(job))
            if progress:
                progress(i + 1, len(jobs))
    good = [r for r in results if r[1] is not None]
    skipped = [(r[0], r[3].removeprefix("error: ")) for r in results if r[1] is None]
    if not good:
        raise DataError(f"{config.path}: none of the {len(items)} pictures could be read")
    names = [r[0] for r in good]
    digest = hashlib.sha256(
        "\n".join(f"{n} {r[3]}" for n, r in zip(names, good, strict=True)).encode()
    ).hexdigest()[:16]
    colour = np.stack([r[1] for r in good])  # type: ignore[misc]
    sketch = np.stack([r[2] for r in good]) if need_sketch else None  # type: ignore[misc]
    reference = has_ref = None
    if any(r[4] is not None for r in good):
        blank = np.full_like(colour[0], 255)
        reference = np.stack([r[4] if r[4] is not None else blank for r in good])
        has_ref = np.array([r[4] is not None for r in good], dtype=bool)

    # Write the cache atomically: a temporary folder renamed into place.
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
    try:
        np.save(tmp / "colour.npy", colour)
        if sketch is not None:
            np.save(tmp / "sketch.npy", sketch)
        if reference is not None and has_ref is not None:
            np.save(tmp / "reference.npy", reference)
            np.save(tmp / "has_reference.npy", has_ref)
        (tmp / "meta.json").write_text(
            json.dumps({"names": names, "digest": digest, "skipped": skipped, "size": size})
        )
        try:
            os.replace(tmp, cached)
        except OSError:  # another process prepared the same data meanwhile
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    warnings += _skip_warning(config.path, skipped)
    return PreparedData(colour, sketch, names, digest, skipped, reference, has_ref), warnings


def _skip_warning(path: str, skipped: Sequence[tuple[str, str]]) -> list[str]:
    if not skipped:
        return []
    shown = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
    return [
        f"{path}: skipped {len(skipped)} unreadable picture(s) ({shown}{' ...' if len(skipped) > 3 else ''})"
    ]


def split_indices(n: int, val_count: int) -> tuple[list[int], list[int]]:
    """Hold out ``val_count`` items spread evenly through the sorted list (train, val)."""
    if val_count <= 0 or n < 2:
        return list(range(n)), []
    val_count = min(val_count, n // 2)
    step = n / val_count
    val = sorted({min(n - 1, int(i * step + step / 2)) for i in range(val_count)})
    vs = set(val)
    return [i for i in range(n) if i not in vs], val


# ----------------------------------------------------------------------------------------------
# Items -> training samples
# ----------------------------------------------------------------------------------------------


def item_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, epoch, position, ...), via NumPy's SeedSequence."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1
    )


def augment_lines(
    sketch: torch.Tensor, config: LineStyleConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Change the line style of a training sketch at random (see :class:`LineStyleConfig`).

    Effects, each with its own probability and in this order: thinner or thicker lines, broken
    outlines (discs erased on the lines), wobbly lines, lighter lines, blur, tinted paper, scan
    noise, JPEG compression. Every draw comes from ``generator`` in a fixed order.

    Args:
        sketch: (1, 1, H, W) lightness in [0, 1] (dark lines on white paper).
        config: Probabilities and strengths.
        generator: CPU generator.

    Returns:
        The new sketch (1, 1, H, W) in [0, 1] and, when gaps were made, a (1, 1, H, W) map that is
        1 on the erased discs (where hints next to a gap may start), else None.
    """

    def uniform(lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    def happens(p: float) -> bool:
        return uniform() < p

    _, _, h, w = sketch.shape
    if not happens(config.p_any):
        return sketch, None
    ink = 1.0 - sketch
    if happens(config.p_width) and config.max_width > 0:
        k = 2 * int(torch.randint(1, config.max_width + 1, (), generator=generator)) + 1
        if happens(0.5):
            ink = F.max_pool2d(ink, k, stride=1, padding=k // 2)  # thicker
        else:
            # Thinner: erode, but keep a faint trace of lines too thin to survive erosion.
            ink = torch.maximum(-F.max_pool2d(-ink, k, stride=1, padding=k // 2), 0.5 * ink)
    gaps = None
    if happens(config.p_gaps) and config.max_gaps > 0 and config.gap_radius > 0:
        on_line = (ink[0, 0] > 0.5).flatten().nonzero().flatten()
        if len(on_line):
            count = int(torch.randint(1, config.max_gaps + 1, (), generator=generator))
            picks = on_line[torch.randint(0, len(on_line), (count,), generator=generator)]
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            gaps = torch.zeros(1, 1, h, w)
            for p in picks.tolist():
                cy, cx = divmod(p, w)
                r = uniform(1.0, max(1.0, config.gap_radius))
                disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
                gaps[0, 0][disc] = 1.0
            ink = ink * (1.0 - gaps)
    if happens(config.p_jitter) and config.jitter > 0:
        field = torch.randn((1, 2, 5, 5), generator=generator) * (2.0 * config.jitter / max(h, w))
        field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False) + field
        ink = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if happens(config.p_light):
        ink = ink * uniform(1.0 - config.light_min, 1.0)
    if happens(config.p_blur) and config.blur > 0:
        ink = gaussian_blur(ink, uniform(0.3, max(0.3, config.blur)))
    out = (1.0 - ink).clamp(0.0, 1.0)
    if happens(config.p_paper):
        out = out * uniform(config.paper_min, 1.0)
    if happens(config.p_noise):
        out = out + torch.randn(out.shape, generator=generator) * uniform(0.0, config.noise)
    out = out.clamp(0.0, 1.0)
    if happens(config.p_jpeg):
        quality = int(torch.randint(config.jpeg_min, 91, (), generator=generator))
        buf = _io.BytesIO()
        Image.fromarray((out[0, 0] * 255).round().to(torch.uint8).numpy(), mode="L").save(
            buf, format="JPEG", quality=quality
        )
        buf.seek(0)
        decoded = np.asarray(Image.open(buf).convert("L"), dtype=np.float32) / 255.0
        out = torch.from_numpy(decoded.copy()).view(1, 1, h, w)
    return out, gaps


class TrainingSet(torch.utils.data.Dataset):
    """Serves augmented training samples; keys are (index, seed) pairs from :class:`StreamSampler`.

    Each sample is a dict of tensors: ``x0`` (C, R, R) in model space, ``cond`` (C_cond, R, R),
    for models with reference conditioning ``reference`` (4, S, S) (see
    :meth:`~sketchcolor.conditioning.Conditioning.as_reference`), and for previews ``rgb``
    (3, R, R), ``sketch`` (1, R, R), ``hint_rgb`` (3, R, R), ``hint_mask`` (1, R, R) and
    ``reference_lab`` (3, S, S), with R the model's working resolution.

    Per sample, in this order and all from the sample's own generator: the line variant, the
    line-style augmentation (line-art models), sketch normalisation (when the model asks for it),
    one random square crop and flip of picture and sketch alike, synthetic hints and hint dropout,
    and the reference (a warped copy of the whole picture, or the item's real reference) with
    reference dropout.
    """

    def __init__(
        self,
        data: PreparedData,
        indices: Sequence[int],
        model: ColorizerConfig,
        hints: HintConfig,
        data_config: DataConfig,
        *,
        augment: bool = True,
        lines: LineStyleConfig | None = None,
        reference: ReferenceConfig | None = None,
    ) -> None:
        self.data = data
        self.indices = list(indices)
        self.model = model
        self.hints = hints
        self.data_config = data_config
        self.augment = augment
        self.lines = lines if lines is not None else LineStyleConfig(enabled=False)
        self.reference = reference if reference is not None else ReferenceConfig()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        position, seed = key
        index = self.indices[position]
        gen = torch.Generator().manual_seed(int(seed))
        layout = self.model.conditioning
        colour = torch.from_numpy(np.array(self.data.colour[index])).float().unsqueeze(0) / 255.0
        photo = layout.mode == "photo"
        if self.data.sketch is not None and not photo:
            v = int(torch.randint(0, self.data.sketch.shape[1], (), generator=gen))
            sketch = (
                torch.from_numpy(np.array(self.data.sketch[index, v : v + 1])).float().unsqueeze(0) / 255.0
            )
        else:
            sketch = None
        gaps = None
        if sketch is not None and self.augment and self.lines.enabled:
            sketch, gaps = augment_lines(sketch, self.lines, gen)
        if sketch is not None and layout.normalize_sketch:
            sketch = normalize_sketch(sketch)
        # Augment: one random square crop and flip, applied to picture and sketch alike.
        size = colour.shape[-1]
        if self.augment:
            frac = self.data_config.min_crop + (1 - self.data_config.min_crop) * float(
                torch.rand((), generator=gen)
            )
            crop = max(1, int(round(size * frac)))
            top = int(torch.randint(0, size - crop + 1, (), generator=gen))
            left = int(torch.randint(0, size - crop + 1, (), generator=gen))
            flip = self.data_config.flip and bool(torch.rand((), generator=gen) < 0.5)
        else:
            crop, top, left, flip = size, 0, 0, False
        r = self.model.resolution

        def view(x: torch.Tensor) -> torch.Tensor:
            x = x[..., top : top + crop, left : left + crop]
            if crop != r:
                x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp(0.0, 1.0)
            return x.flip(-1) if flip else x

        rgb = view(colour)
        sketch = view(sketch) if sketch is not None else lightness(rgb)
        # Hints from the ground truth (some starting in a gap of a broken outline), then hint
        # dropout (classifier-free guidance needs both).
        starts = None
        if gaps is not None and bool(torch.rand((), generator=gen) < self.lines.gap_hints):
            starts = (view(gaps)[0, 0] > 0.05).flatten().nonzero().flatten()
        hint_rgb, hint_mask = sample_training_hints(rgb[0], sketch[0], self.hints, gen, first_starts=starts)
        if not drop_hints(self.hints.drop, gen):
            hint_rgb, hint_mask = torch.zeros_like(hint_rgb), torch.zeros_like(hint_mask)
        cond = make_conditioning(sketch, hint_rgb[None], hint_mask[None], layout)
        x0 = lab_to_model(rgb_to_lab(rgb), self.model.color)
        if photo:
            x0 = x0[:, 1:]
        sample = {
            "x0": x0[0],
            "cond": cond.as_channels(layout, self.model.color)[0],
            "rgb": rgb[0],
            "sketch": sketch[0],
            "hint_rgb": hint_rgb,
            "hint_mask": hint_mask,
        }
        if layout.reference:
            ref_lab, has = self._reference(index, colour[0], gen)
            plane = torch.full((1, layout.reference_size, layout.reference_size), float(has))
            sample["reference"] = torch.cat(
                [lab_to_model(ref_lab[None], self.model.color)[0] * float(has), plane]
            )
            sample["reference_lab"] = ref_lab
        return sample

    def _reference(self, index: int, colour: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, bool]:
        """(reference LAB (3, S, S), whether the sample has one), reference dropout included.

        The draws are the same whether or not the reference is kept, so dropout does not shift
        the random stream of later samples.
        """
        config, size = self.reference, self.model.conditioning.reference_size
        keep = bool(torch.rand((), generator=gen) < config.p_reference)
        use_real = bool(torch.rand((), generator=gen) < config.p_paired)
        warped = warp_reference(colour, config, size, gen)
        if (
            use_real
            and self.data.reference is not None
            and self.data.has_reference is not None
            and bool(self.data.has_reference[index])
        ):
            real = torch.from_numpy(np.array(self.data.reference[index])).float().unsqueeze(0) / 255.0
            warped = reference_lab_from_rgb(real, size)[0]
        return warped, keep


class StreamSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """An endless, deterministic stream of micro-batches of (position, item seed) keys.

    Epoch ``e`` is a permutation of the data drawn from (seed, e); with several processes the
    epoch is cut to a multiple of ``world_size * batch_size`` and process ``rank`` takes every
    ``world_size``-th batch (the DistributedSampler idea). Micro-batch ``b`` of this rank is a pure
    function of (seed, b), so starting at ``start`` reproduces an uninterrupted run exactly.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1, start: int = 0
    ):
        if n < batch_size * world_size:
            raise DataError(
                f"only {n} training pictures for a batch of {batch_size} x {world_size} process(es)",
                hint="add pictures or lower --batch-size",
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.batches_per_epoch = n // (batch_size * world_size)

    def __len__(self) -> int:  # endless; DataLoader only needs this for its own bookkeeping
        return 2**62

    def batch(self, b: int) -> list[tuple[int, int]]:
        """Micro-batch ``b`` of this rank."""
        epoch, within = divmod(b, self.batches_per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(item_seed(self.seed, epoch)))
        first = (within * self.world_size + self.rank) * self.batch_size
        positions = perm[first : first + self.batch_size].tolist()
        return [(p, item_seed(self.seed, epoch, p, 1)) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.start
        while True:
            yield self.batch(b)
            b += 1
