"""The web page of ``sketchcolor ui``: a canvas to scribble hints on, and what it is made of.

Owns: turning what the page holds (an uploaded sketch, the canvas's brush layer, point hints, a
reference picture, the settings) into the files ``sketchcolor colorize`` takes, one folder per
request: the sketch as uploaded, the hints as an 8-bit RGBA layer at the sketch's size
(transparent = no hint), the reference as uploaded. Also the views of a result's layers, the
palette of colours in use, the download bundle, and the Gradio page itself (:func:`build_app`,
the only code that imports Gradio, the ``ui`` extra).

The colourising is not done here: the ``ui`` command hands the page the CLI's own routine
(:data:`ColorizeFiles`), so every picture the page shows is the file ``sketchcolor colorize``
writes for the same files and seed, with the same record inside. Handlers return a message
instead of raising: a bad upload, a huge image or a model that does not load is a line in the
page, and the server goes on.

Must not import ``cli``. Never prints (problems go to the page and to ``logging``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import shlex
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
from PIL import Image

from .config import SEED_LIMIT, SampleConfig, SamplerName, check_seed
from .errors import HintError, SketchcolorError
from .io import IMAGE_SUFFIXES, MAX_PIXELS, decode_image, open_image, read_input_bytes, to_rgb_on_white
from .pipeline import build_hints, hints_from_image, load_model

log = logging.getLogger(__name__)

#: Sampling defaults of the page are the CLI's: the library's SampleConfig.
DEFAULTS = SampleConfig()
#: The samplers the page offers (all of the library's).
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
#: Most variations one press of "Colourise" makes (each is its own run: seed, seed + 1, ...).
MAX_VARIATIONS = 8
#: Request folders kept on disk (older ones are removed; Gradio keeps its own copies of results).
KEEP_REQUESTS = 32
#: Largest seed the page takes: integers above 2**53 do not survive a browser's numbers.
MAX_PAGE_SEED = 2**53 - 1
#: The brush's starting palette (the colour button also offers a picker and recent colours).
BRUSH_COLOURS = ["#d03030", "#e8892c", "#f2cf3d", "#3f9f4a", "#3a6fd0", "#8a4fc2", "#f0c4a2", "#7a5236"]
#: Names of the layers the result view can show.
LAYERS = ("Lines", "Flats", "Hints")


# ----------------------------------------------------------------------------------------------
# Inputs of one request
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Upload:
    """An uploaded picture, checked (decodable, within the pixel limit) and kept as its bytes.

    Attributes:
        name: File name as uploaded (no folder), used in messages and for the saved copy.
        data: The file's bytes, exactly as uploaded (so digests match the user's own file).
        size: (H, W) in pixels.
    """

    name: str
    data: bytes
    size: tuple[int, int]

    def decode(self) -> Image.Image:
        return decode_image(self.data, self.name)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the page's controls set, with the CLI's defaults.

    Raises:
        ConfigError: A seed, sampler, step count, eta or guidance out of range (via
            :class:`SampleConfig` and :func:`check_seed`), or too many variations.
    """

    seed: int = 0
    steps: int = DEFAULTS.steps
    sampler: str = DEFAULTS.sampler
    eta: float = DEFAULTS.eta
    guidance: float = DEFAULTS.guidance
    pin_hints: bool = DEFAULTS.pin_hints
    reference_scale: float = DEFAULTS.reference_scale
    reference_snap: float = DEFAULTS.reference_snap
    flat: bool = False
    hint_regions: bool = True
    variations: int = 1

    def __post_init__(self) -> None:
        from .errors import ConfigError

        check_seed(self.seed)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler = {self.sampler!r}: give one of {', '.join(SAMPLERS)}")
        if not 1 <= self.variations <= MAX_VARIATIONS:
            raise ConfigError(f"variations = {self.variations}: give 1 to {MAX_VARIATIONS}")
        self.sample_config()  # validates the sampling fields

    def sample_config(self) -> SampleConfig:
        return SampleConfig(
            sampler=self.sampler,  # type: ignore[arg-type]
            steps=self.steps,
            eta=self.eta,
            guidance=self.guidance,
            pin_hints=self.pin_hints,
            reference_scale=self.reference_scale,
            reference_snap=self.reference_snap,
        )


@dataclasses.dataclass(frozen=True)
class Request:
    """One picture to make, as files in one folder: exactly what ``sketchcolor colorize`` is given.

    Attributes:
        sketch: The sketch (the uploaded bytes).
        hints: The RGBA hints layer at the sketch's size, or None (no hints).
        reference: The reference picture (the uploaded bytes), or None.
        output: Where the picture goes (PNG, with its record); its flats go beside it
            (``OUT.flats.png``), as ``--save-flats`` writes them.
        sample: Sampling settings.
        seed: The seed of this picture.
        flat: ``--flat``.
        hint_regions: False for ``--no-hint-regions``.
        model: ``--model`` (None: the bundled model).
        device: ``--device``.
    """

    sketch: Path
    hints: Path | None
    reference: Path | None
    output: Path
    sample: SampleConfig
    seed: int
    flat: bool = False
    hint_regions: bool = True
    model: str | None = None
    device: str = "auto"

    @property
    def flats(self) -> Path:
        return self.output.with_name(f"{self.output.stem}.flats.png")

    def command(self) -> str:
        """The ``sketchcolor colorize`` command that makes the same picture, run in the folder of
        the files (every setting spelled out, so later changes of defaults do not matter)."""
        s = self.sample
        args = ["sketchcolor", "colorize", self.sketch.name]
        if self.hints is not None:
            args += ["--hints", self.hints.name]
        if self.reference is not None:
            args += ["--reference", self.reference.name, "--reference-scale", repr(s.reference_scale)]
            args += ["--reference-snap", repr(s.reference_snap)]
        args += ["--seed", str(self.seed), "--steps", str(s.steps), "--sampler", s.sampler]
        args += ["--eta", repr(s.eta), "--guidance", repr(s.guidance)]
        args.append("--pin-hints" if s.pin_hints else "--no-pin-hints")
        if self.flat:
            args.append("--flat")
        if not self.hint_regions:
            args.append("--no-hint-regions")
        if self.model is not None:
            args += ["--model", str(Path(self.model).resolve())]
        args += ["--save-flats", "-o", self.output.name]
        return shlex.join(args)


#: Colourises one :class:`Request` the way ``sketchcolor colorize --save-flats`` does: writes
#: ``request.output`` (with its ``sketchcolor`` record) and ``request.flats``, and returns the
#: record. Raises :class:`~sketchcolor.errors.SketchcolorError` for bad inputs or a bad model.
#: The ``ui`` command passes the CLI's own routine (``sketchcolor.cli.ui.colorize_files``).
ColorizeFiles = Callable[[Request], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Variation:
    """One result on the page: its picture and flats (files written by the CLI's routine)."""

    seed: int
    image: Path
    flats: Path
    record: Mapping[str, Any]
    command: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one press of "Colourise" gave.

    Attributes:
        variations: The pictures, seed, seed + 1, ... (empty when it failed).
        hints: The hints file given to the CLI's routine (None: no hints).
        bundle: A zip of the folder: sketch, hints, reference, pictures, flats and the commands,
            from which ``sketchcolor colorize --from-png`` re-makes every picture.
        message: One line for the page (the problem, or what was made).
        palette: Colours in use in the hints (hex, most used first).
    """

    variations: list[Variation]
    hints: Path | None
    bundle: Path | None
    message: str
    palette: list[str]

    @property
    def ok(self) -> bool:
        return bool(self.variations)


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """Whether the server's model loads, and what it takes."""

    ok: bool
    takes_reference: bool
    message: str


def describe(exc: BaseException) -> str:
    """One line for the page: a user error's message and hint, or an unexpected exception."""
    if isinstance(exc, SketchcolorError):
        return exc.message + (f" ({exc.hint})" if exc.hint else "")
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "out of memory (try a smaller sketch)"
    text = " ".join(str(exc).split()) or "(no message)"
    return f"unexpected {type(exc).__name__}: {text[:300]} (this is a bug)"


def safe_name(name: str, fallback: str) -> str:
    """A file name made of letters, digits, ``.``, ``_`` and ``-`` (the upload's name, cleaned)."""
    base = re.sub(r"[^\w.-]+", "_", Path(name).name).strip("._")
    return base or fallback


def read_upload(path: str | Path, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Upload:
    """Read an uploaded picture once and check it as the CLI does (decodable, at most ``max_pixels``).

    The pixel limit is checked from the header, before decoding.

    Raises:
        ImageError: Not an image, empty, corrupt, or over ``max_pixels`` (named by ``name``, by
            default the file's name).
    """
    shown = name or Path(path).name
    data = read_input_bytes(path, what="image")
    image = decode_image(data, shown, max_pixels=max_pixels)
    return Upload(shown, data, (image.height, image.width))


def sketch_rgb(sketch: Upload) -> np.ndarray:
    """The sketch as the pipeline sees it: RGB on white, uint8 (H, W, 3)."""
    return np.asarray(to_rgb_on_white(sketch.decode()), dtype=np.uint8)


def merge_layers(layers: Sequence[np.ndarray | None], size: tuple[int, int]) -> np.ndarray:
    """The canvas's brush layers as one RGBA hints layer, uint8 (H, W, 4) at the sketch's size.

    A pixel is a hint where a layer's alpha is at least 128 (the library's rule, alpha >= 0.5); it
    then has the layer's colour and alpha 255, later layers painting over earlier ones. Elsewhere
    it is fully transparent (0, 0, 0, 0).

    Raises:
        HintError: A layer whose size is not the sketch's.
    """
    h, w = size
    out = np.zeros((h, w, 4), dtype=np.uint8)
    for layer in layers:
        if layer is None:
            continue
        arr = np.asarray(layer)
        if arr.ndim != 3 or arr.shape[:2] != (h, w) or arr.shape[2] not in (3, 4):
            got = f"{arr.shape[1]}x{arr.shape[0]}" if arr.ndim >= 2 else "not a picture"
            raise HintError(
                f"the canvas layer is {got} but the sketch is {w}x{h}", hint="drop the sketch again"
            )
        arr = arr.astype(np.uint8, copy=False)
        on = arr[..., 3] >= 128 if arr.shape[2] == 4 else np.ones((h, w), dtype=bool)
        out[on, :3] = arr[on, :3]
        out[on, 3] = 255
    return out


def parse_points(text: str | None) -> list[str]:
    """Point hints, one ``X,Y,COLOR`` per line (the syntax of ``--hint``); blank lines ignored."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def paint_points(rgba: np.ndarray, points: Sequence[str]) -> np.ndarray:
    """``rgba`` with point hints painted over it (radius: the library's default for the size).

    Raises:
        HintError: A malformed point or one outside the sketch (named, as ``--hint`` names it).
    """
    if not points:
        return rgba
    h, w = rgba.shape[:2]
    layer = build_hints((h, w), points=points)
    mask = layer.mask[0, 0].numpy() > 0.5
    colours = (layer.rgb[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    out = rgba.copy()
    out[mask, :3] = colours[mask]
    out[mask, 3] = 255
    return out


def has_hints(rgba: np.ndarray) -> bool:
    """Whether an RGBA layer holds any hint by the rule the CLI reads hints files with."""
    h, w = rgba.shape[:2]
    return not hints_from_image(Image.fromarray(rgba), (h, w)).is_empty


def colours_in_use(rgba: np.ndarray | None, limit: int = 8) -> list[str]:
    """The hint colours of an RGBA layer as hex, most used first (at most ``limit``)."""
    if rgba is None:
        return []
    on = rgba[..., 3] >= 128
    if not on.any():
        return []
    rgb = rgba[on][:, :3].astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    values, counts = np.unique(packed, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    return [f"#{int(values[i]):06x}" for i in order]


def layer_view(
    sketch: np.ndarray,
    image: np.ndarray | None,
    flats: np.ndarray | None,
    hints: np.ndarray | None,
    show: Sequence[str],
) -> np.ndarray:
    """The result with some layers hidden, RGB uint8 (H, W, 3).

    Lines and flats together are the picture itself; flats alone are the colour layer; lines alone
    are the sketch; neither is white paper. Hints, when shown, are painted on top.
    """
    lines, colour = "Lines" in show, "Flats" in show
    if lines and colour and image is not None:
        view = image.copy()
    elif colour and flats is not None:
        view = flats.copy()
    elif lines:
        view = sketch.copy()
    else:
        view = np.full_like(sketch, 255)
    if "Hints" in show and hints is not None:
        on = hints[..., 3] >= 128
        view[on] = hints[on][:, :3]
    return view


def add_point(points: str | None, x: float, y: float, colour: str) -> str:
    """``points`` with one more ``X,Y,COLOR`` line (pixel position of a click on the sketch)."""
    lines = parse_points(points)
    lines.append(f"{int(round(x))},{int(round(y))},{colour}")
    return "\n".join(lines)


def read_rgb(path: Path) -> np.ndarray:
    """A picture file as RGB uint8 (H, W, 3) (read by :mod:`sketchcolor.io`)."""
    return np.asarray(open_image(path).convert("RGB"), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# The server's state and the page's handlers (no Gradio here: tested without a browser)
# ----------------------------------------------------------------------------------------------


class Studio:
    """What one ``sketchcolor ui`` server holds; its methods are the page's handlers.

    Args:
        colorize_files: The CLI's colourise-files routine (:data:`ColorizeFiles`).
        workdir: Folder for request folders (one per press of "Colourise").
        model: ``--model`` path, or None for the bundled model.
        device: ``--device``.
        max_pixels: Largest sketch or reference accepted (at most :data:`~sketchcolor.io.MAX_PIXELS`).
    """

    def __init__(
        self,
        colorize_files: ColorizeFiles,
        workdir: str | Path,
        *,
        model: str | Path | None = None,
        device: str = "auto",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        from .errors import ConfigError

        if not 1 <= max_pixels <= MAX_PIXELS:
            raise ConfigError(f"max_pixels = {max_pixels}: give 1 to {MAX_PIXELS:,}")
        self.colorize_files = colorize_files
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model = str(model) if model is not None else None
        self.device = device
        self.max_pixels = max_pixels

    def model_status(self) -> ModelStatus:
        """Load the model (the library's cache: once per server) and say what it takes."""
        try:
            bundle = load_model(self.model, self.device)
        except Exception as exc:  # noqa: BLE001 - any failure is a line in the page, not a crash
            log.warning("the model did not load: %s", describe(exc))
            return ModelStatus(False, False, f"The model did not load: {describe(exc)}")
        name = self.model or "the bundled model"
        takes = bool(bundle.config.conditioning.reference)
        extra = " It follows a reference picture." if takes else ""
        return ModelStatus(True, takes, f"Model: {name} ({bundle.config.conditioning.mode}).{extra}")

    def open_sketch(self, path: str | Path | None) -> tuple[Upload | None, str]:
        """Check an uploaded sketch. Returns it (None if refused or cleared) and a message."""
        if path is None:
            return None, "Drop a sketch to start."
        try:
            upload = read_upload(path, max_pixels=self.max_pixels)
        except Exception as exc:  # noqa: BLE001
            return None, f"Refused: {describe(exc)}"
        h, w = upload.size
        return upload, f"{upload.name}: {w}x{h}. Paint hints on it, then press Colourise."

    def open_reference(self, path: str | Path | None) -> tuple[Upload | None, str]:
        """Check an uploaded reference picture. Returns it (None if refused or cleared) and a message."""
        if path is None:
            return None, "No reference picture."
        try:
            upload = read_upload(path, max_pixels=self.max_pixels)
        except Exception as exc:  # noqa: BLE001
            return None, f"Refused: {describe(exc)}"
        h, w = upload.size
        return upload, f"Reference {upload.name}: {w}x{h}."

    def hints(self, sketch: Upload, layers: Sequence[np.ndarray | None], points: str | None) -> np.ndarray:
        """The brush layers and point hints as one RGBA layer at the sketch's size (uint8 H, W, 4).

        Raises:
            HintError: A layer of another size, or a bad point.
        """
        return paint_points(merge_layers(layers, sketch.size), parse_points(points))

    def _new_folder(self) -> Path:
        folders = sorted(p for p in self.workdir.iterdir() if p.is_dir())
        for old in folders[: max(0, len(folders) - KEEP_REQUESTS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        folder = self.workdir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def colourise(
        self,
        sketch: Upload | None,
        layers: Sequence[np.ndarray | None],
        points: str | None,
        reference: Upload | None,
        settings: Settings,
    ) -> Outcome:
        """Write the request's files, colourise them with the CLI's routine, bundle the results.

        Each variation ``i`` is its own run with seed ``settings.seed + i``, so it is exactly what
        ``sketchcolor colorize --seed SEED+i`` makes from the same files. Never raises: a problem
        is the outcome's message.
        """
        if sketch is None:
            return Outcome([], None, None, "Drop a sketch first.", [])
        try:
            rgba = self.hints(sketch, layers, points)
        except Exception as exc:  # noqa: BLE001
            return Outcome([], None, None, f"Hints: {describe(exc)}", [])
        palette = colours_in_use(rgba)
        folder = None
        try:
            folder = self._new_folder()
            return self._run(folder, sketch, rgba, reference, settings, palette)
        except Exception as exc:  # noqa: BLE001 - a failed request must leave the server serving
            if not isinstance(exc, SketchcolorError):
                log.exception("unexpected error while colourising %s", sketch.name)
            message = describe(exc)
            if folder is not None:  # the request folder's files are named by their own names only
                message = message.replace(f"{folder}{os.sep}", "")
            return Outcome([], None, None, f"Could not colourise: {message}", palette)

    def _run(
        self,
        folder: Path,
        sketch: Upload,
        rgba: np.ndarray,
        reference: Upload | None,
        settings: Settings,
        palette: list[str],
    ) -> Outcome:
        from .io import encode_image

        name = safe_name(sketch.name, "sketch.png")
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            name += ".png"
        stem = Path(name).stem
        sketch_path = folder / name
        sketch_path.write_bytes(sketch.data)
        hints_path = None
        if has_hints(rgba):
            hints_path = folder / f"{stem}.hints.png"
            hints_path.write_bytes(encode_image(Image.fromarray(rgba), "PNG"))
        n = settings.variations
        outputs = [
            folder / (f"{stem}.colored.png" if n == 1 else f"{stem}.colored-{i + 1}.png") for i in range(n)
        ]
        reference_path = None
        if reference is not None:
            taken = {sketch_path.name, *(p.name for p in outputs)}
            taken |= {p.with_name(f"{p.stem}.flats.png").name for p in outputs}
            taken |= {hints_path.name} if hints_path is not None else set()
            ref_name = safe_name(reference.name, "reference.png")
            reference_path = folder / (ref_name if ref_name not in taken else f"reference-{ref_name}")
            reference_path.write_bytes(reference.data)
        sample = settings.sample_config()
        start = time.perf_counter()
        variations = []
        for i, output in enumerate(outputs):
            request = Request(
                sketch=sketch_path, hints=hints_path, reference=reference_path, output=output, sample=sample,
                seed=(settings.seed + i) % SEED_LIMIT, flat=settings.flat, hint_regions=settings.hint_regions,
                model=self.model, device=self.device,
            )  # fmt: skip
            record = self.colorize_files(request)
            variations.append(Variation(request.seed, output, request.flats, dict(record), request.command()))
        seconds = time.perf_counter() - start
        bundle = folder / f"{stem}.sketchcolor.zip"
        write_bundle(bundle, folder, [v.command for v in variations])
        h, w = sketch.size
        seeds = ", ".join(str(v.seed) for v in variations)
        hinted = "with hints" if hints_path is not None else "without hints (the canvas is empty)"
        message = f"{w}x{h} {hinted}; seed {seeds}; {sample.sampler}, {sample.steps} steps; {seconds:.1f} s."
        return Outcome(variations, hints_path, bundle, message, palette)

    def view(
        self, sketch: Upload | None, variation: Variation | None, hints: Path | None, show: Sequence[str]
    ) -> Any:
        """What the result panel shows: the picture file itself, or an array with layers toggled."""
        if sketch is None or variation is None:
            return None
        if "Lines" in show and "Flats" in show and "Hints" not in show:
            return str(variation.image)  # the very file the CLI's routine wrote
        hints_rgba = None
        if hints is not None and "Hints" in show:
            hints_rgba = np.asarray(open_image(hints).convert("RGBA"), dtype=np.uint8)
        return layer_view(
            sketch_rgb(sketch), read_rgb(variation.image), read_rgb(variation.flats), hints_rgba, show
        )

    def points_view(
        self, sketch: Upload | None, layers: Sequence[np.ndarray | None], points: str | None
    ) -> tuple[Any, str]:
        """The sketch with its current hints on top (where clicks add points), and a message."""
        if sketch is None:
            return None, "Drop a sketch first."
        base = sketch_rgb(sketch)
        try:
            rgba = self.hints(sketch, layers, points)
        except Exception as exc:  # noqa: BLE001
            return base, f"Hints: {describe(exc)}"
        return layer_view(base, None, None, rgba, ("Lines", "Hints")), ""


def write_bundle(path: Path, folder: Path, commands: Sequence[str]) -> Path:
    """Zip every file of a request folder (flat) plus ``commands.txt``: unzipped anywhere, each
    picture is re-made by its command or by ``sketchcolor colorize --from-png PICTURE``."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p != path)
    text = "\n".join(
        [
            "# Each picture, again, from this folder (pixel for pixel on the same machine and torch):",
            *commands,
            "# or from the record inside a picture:",
            *[
                f"sketchcolor colorize --from-png {shlex.quote(c.rsplit(' -o ', 1)[-1])} -o again.png"
                for c in commands[:1]
            ],
            "",
        ]
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.name)
        zf.writestr("commands.txt", text)
    path.write_bytes(buffer.getvalue())
    return path


# ----------------------------------------------------------------------------------------------
# The page (Gradio)
# ----------------------------------------------------------------------------------------------


def import_gradio() -> Any:
    """Gradio, the ``ui`` extra.

    Raises:
        SketchcolorError: Gradio is not installed (names the extra).
    """
    try:
        import gradio
    except ImportError:
        raise SketchcolorError(
            "sketchcolor ui needs Gradio, which is not installed", hint='pip install "sketchcolor[ui]"'
        ) from None
    return gradio


CSS = """
#status, #model-status {min-height: 1.5em}
#palette .gallery-item, #palette button {min-width: 2.2em}
footer {display: none !important}
"""


def build_app(studio: Studio) -> Any:
    """The page as a Gradio ``Blocks`` (not launched; see :func:`launch`).

    Every element a test or a user's script may look for has an ``elem_id``: ``sketch-file``,
    ``canvas``, ``points``, ``points-view``, ``point-colour``, ``palette``, ``reference-group``,
    ``reference-file``, ``colourise``, ``variations-count``, ``status``, ``result``, ``layers``,
    ``variations``, ``downloads``, ``command``, ``model-status``.

    Raises:
        SketchcolorError: Gradio is not installed.
    """
    gr = import_gradio()
    status = studio.model_status()

    def warn(message: str) -> None:
        gr.Warning(message)

    with gr.Blocks(title="sketchcolor", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        sketch_state = gr.State(None)
        reference_state = gr.State(None)
        outcome_state = gr.State(None)
        picked_state = gr.State(0)

        gr.Markdown("## sketchcolor: colour a sketch with hints")
        model_md = gr.Markdown(status.message, elem_id="model-status")
        with gr.Row():
            with gr.Column(scale=3):
                sketch_file = gr.File(
                    label="Sketch (drop a line-art picture: PNG, JPEG, WebP, BMP, TIFF)",
                    file_types=list(IMAGE_SUFFIXES), type="filepath", elem_id="sketch-file", height=110,
                )  # fmt: skip
                with gr.Tabs():
                    with gr.Tab("Brush", id="brush-tab"):
                        canvas = gr.ImageEditor(
                            label="Hints: paint colour scribbles on the sketch (brush, eraser, colours)",
                            type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False,
                            brush=gr.Brush(colors=BRUSH_COLOURS, default_color=BRUSH_COLOURS[0], color_mode="defaults"),
                            eraser=gr.Eraser(), format="png", elem_id="canvas", height=560,
                        )  # fmt: skip
                    with gr.Tab("Points", id="points-tab") as points_tab:
                        points_view = gr.Image(
                            label="Click on the sketch to add a point hint of the point colour",
                            type="numpy", interactive=False, format="png", elem_id="points-view", height=480,
                        )  # fmt: skip
                        with gr.Row():
                            point_colour = gr.ColorPicker(
                                value=BRUSH_COLOURS[0], label="Point colour", elem_id="point-colour"
                            )
                            palette = gr.Dataset(
                                components=[gr.ColorPicker(visible=False)], samples=[[c] for c in BRUSH_COLOURS],
                                label="Colours in use (click one to pick it)", elem_id="palette", samples_per_page=16,
                            )  # fmt: skip
                        points = gr.Textbox(
                            label="Point hints, one X,Y,COLOR per line (pixels or fractions; as --hint)",
                            lines=3, elem_id="points", placeholder="120,80,#d03030",
                        )  # fmt: skip
                        clear_points = gr.Button("Clear points", size="sm")
                with gr.Group(visible=status.takes_reference, elem_id="reference-group") as reference_group:
                    with gr.Row():
                        reference_file = gr.File(
                            label="Reference picture (optional): its colours are followed; hints win",
                            file_types=list(IMAGE_SUFFIXES), type="filepath", elem_id="reference-file", height=110,
                        )  # fmt: skip
                        reference_preview = gr.Image(
                            label="Reference", interactive=False, height=140, elem_id="reference-preview"
                        )
                    reference_scale = gr.Slider(
                        0.0, 20.0, value=DEFAULTS.reference_scale, step=0.1, label="Reference guidance (1 = off)",
                        elem_id="reference-scale",
                    )  # fmt: skip
                    reference_snap = gr.Slider(
                        0.0, 60.0, value=DEFAULTS.reference_snap, step=1.0, elem_id="reference-snap",
                        label="Snap to the reference's colours (CIE LAB distance; 0 = off)",
                    )  # fmt: skip
                with gr.Row():
                    variations = gr.Slider(
                        1, MAX_VARIATIONS, value=1, step=1, label="Variations (seed, seed + 1, ...)",
                        elem_id="variations-count", scale=2,
                    )  # fmt: skip
                    go = gr.Button("Colourise", variant="primary", elem_id="colourise", scale=1)
                with gr.Accordion("Advanced (the command line's defaults)", open=False):
                    with gr.Row():
                        seed = gr.Number(
                            value=0,
                            precision=0,
                            minimum=0,
                            maximum=MAX_PAGE_SEED,
                            label="Seed",
                            elem_id="seed",
                        )
                        new_seed = gr.Button("New seed", size="sm")
                    with gr.Row():
                        steps = gr.Number(
                            value=DEFAULTS.steps,
                            precision=0,
                            minimum=1,
                            maximum=1000,
                            label="Steps",
                            elem_id="steps",
                        )
                        sampler = gr.Radio(
                            list(SAMPLERS), value=DEFAULTS.sampler, label="Sampler", elem_id="sampler"
                        )
                    with gr.Row():
                        eta = gr.Slider(
                            0.0, 1.0, value=DEFAULTS.eta, step=0.05, label="Eta (ddim)", elem_id="eta"
                        )
                        guidance = gr.Slider(
                            0.0, 10.0, value=DEFAULTS.guidance, step=0.1, label="Hint guidance (1 = off)",
                            elem_id="guidance",
                        )  # fmt: skip
                    with gr.Row():
                        flat = gr.Checkbox(False, label="Flat: one colour per region", elem_id="flat")
                        hint_regions = gr.Checkbox(
                            True, label="Fill hinted regions with their hints", elem_id="hint-regions"
                        )
                        pin_hints = gr.Checkbox(
                            DEFAULTS.pin_hints, label="Pin hints while sampling", elem_id="pin-hints"
                        )
            with gr.Column(scale=2):
                status_md = gr.Markdown("Drop a sketch to start.", elem_id="status")
                result = gr.Image(
                    label="Result", type="filepath", format="png", interactive=False, elem_id="result"
                )
                layers = gr.CheckboxGroup(
                    list(LAYERS), value=["Lines", "Flats"], label="Show layers", elem_id="layers"
                )
                gallery = gr.Gallery(
                    label="Variations (click one to pick it)", columns=4, height=180, allow_preview=False,
                    object_fit="contain", elem_id="variations", format="png",
                )  # fmt: skip
                downloads = gr.File(
                    label="Downloads: picture, flats, hints, and a zip that re-makes it with the CLI",
                    file_count="multiple", interactive=False, elem_id="downloads",
                )  # fmt: skip
                command_md = gr.Markdown("", elem_id="command")

        # --- handlers: thin wrappers around Studio ------------------------------------------------

        def page_status() -> tuple[Any, Any]:
            s = studio.model_status()
            if not s.ok:
                warn(s.message)
            return s.message, gr.update(visible=s.takes_reference)

        sketch_outputs = [
            sketch_state, sketch_file, canvas, outcome_state, status_md, result, points_view, gallery, downloads,
            command_md,
        ]  # fmt: skip

        def on_sketch(path: str | None) -> tuple[Any, ...]:
            upload, message = studio.open_sketch(path)
            background = None
            if upload is not None:
                background = sketch_rgb(upload)
            elif path is not None:
                warn(message)
            # A refused file is taken out of the drop zone, so that another can be dropped.
            keep = gr.update() if upload is not None else None
            editor: dict[str, Any] = {"background": background, "layers": [], "composite": None}
            return upload, keep, editor, None, message, None, None, [], None, ""

        sketch_file.upload(on_sketch, sketch_file, sketch_outputs)
        sketch_file.clear(lambda: on_sketch(None), None, sketch_outputs)

        def on_reference(path: str | None) -> tuple[Any, ...]:
            upload, message = studio.open_reference(path)
            if upload is None:
                if path is not None:
                    warn(message)
                return None, None, None, message
            return upload, gr.update(), np.asarray(to_rgb_on_white(upload.decode())), message

        reference_outputs = [reference_state, reference_file, reference_preview, status_md]
        reference_file.upload(on_reference, reference_file, reference_outputs)
        reference_file.clear(lambda: on_reference(None), None, reference_outputs)

        def editor_layers(editor: Mapping[str, Any] | None) -> list[Any]:
            return list((editor or {}).get("layers") or [])

        def on_points_view(
            sketch: Upload | None, editor: Mapping[str, Any] | None, text: str
        ) -> tuple[Any, Any]:
            view, message = studio.points_view(sketch, editor_layers(editor), text)
            if message:
                warn(message)
            return view, gr.update() if not message else message

        points_tab.select(on_points_view, [sketch_state, canvas, points], [points_view, status_md])

        def on_click(
            sketch: Upload | None, editor: Mapping[str, Any] | None, text: str, colour: str, evt: Any
        ) -> tuple[Any, ...]:
            if sketch is None:
                return text, None, "Drop a sketch first.", gr.update()
            x, y = evt.index
            text = add_point(text, x, y, colour)
            view, message = studio.points_view(sketch, editor_layers(editor), text)
            rgba = None
            try:
                rgba = studio.hints(sketch, editor_layers(editor), text)
            except SketchcolorError:
                pass
            used = colours_in_use(rgba) or [colour]
            return (
                text,
                view,
                message or f"Point {int(round(x))},{int(round(y))} {colour} added.",
                gr.Dataset(samples=[[c] for c in used]),
            )

        # Gradio finds the event data by the annotation's object (this module's annotations are text).
        on_click.__annotations__ = {"evt": gr.SelectData}
        points_view.select(
            on_click, [sketch_state, canvas, points, point_colour], [points, points_view, status_md, palette]
        )
        palette.click(lambda sample: sample[0], palette, point_colour)

        def on_clear_points(sketch: Upload | None, editor: Mapping[str, Any] | None) -> tuple[str, Any]:
            return "", studio.points_view(sketch, editor_layers(editor), "")[0]

        clear_points.click(on_clear_points, [sketch_state, canvas], [points, points_view])
        new_seed.click(lambda: int(np.random.default_rng().integers(0, 2**31)), None, seed)

        def downloads_for(outcome: Outcome, i: int) -> list[str]:
            v = outcome.variations[i]
            files = [v.image, v.flats] + ([outcome.hints] if outcome.hints is not None else [])
            return [str(f) for f in files] + ([str(outcome.bundle)] if outcome.bundle is not None else [])

        def command_text(outcome: Outcome, i: int) -> str:
            return (
                "The same picture from the command line, in the unzipped folder:\n\n"
                f"```\n{outcome.variations[i].command}\n```"
            )

        def on_colourise(
            sketch: Upload | None, editor: Mapping[str, Any] | None, text: str, reference: Upload | None,
            seed_v: float | None, steps_v: float | None, sampler_v: str, eta_v: float, guidance_v: float,
            pin_v: bool, ref_scale_v: float, ref_snap_v: float, flat_v: bool, regions_v: bool, count_v: float, show: list[str],
        ) -> tuple[Any, ...]:  # fmt: skip
            try:
                settings = Settings(
                    seed=int(seed_v or 0), steps=int(steps_v or DEFAULTS.steps), sampler=sampler_v, eta=float(eta_v),
                    guidance=float(guidance_v), pin_hints=bool(pin_v), reference_scale=float(ref_scale_v),
                    reference_snap=float(ref_snap_v), flat=bool(flat_v), hint_regions=bool(regions_v), variations=int(count_v or 1),
                )  # fmt: skip
            except SketchcolorError as exc:
                warn(describe(exc))
                return (
                    gr.update(),
                    gr.update(),
                    describe(exc),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                )
            takes_reference = studio.model_status().takes_reference
            outcome = studio.colourise(
                sketch, editor_layers(editor), text, reference if takes_reference else None, settings
            )
            used = gr.Dataset(samples=[[c] for c in (outcome.palette or BRUSH_COLOURS)])
            if not outcome.ok:
                warn(outcome.message)
                return (
                    gr.update(),
                    gr.update(),
                    outcome.message,
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    used,
                )
            items = [(str(v.image), f"seed {v.seed}") for v in outcome.variations]
            view = studio.view(sketch, outcome.variations[0], outcome.hints, show)
            return (
                outcome, 0, outcome.message, view, items, downloads_for(outcome, 0), command_text(outcome, 0), used,
            )  # fmt: skip

        go.click(
            on_colourise,
            [sketch_state, canvas, points, reference_state, seed, steps, sampler, eta, guidance, pin_hints,
             reference_scale, reference_snap, flat, hint_regions, variations, layers],
            [outcome_state, picked_state, status_md, result, gallery, downloads, command_md, palette],
            concurrency_limit=1, concurrency_id="model",
        )  # fmt: skip

        def on_pick(
            sketch: Upload | None, outcome: Outcome | None, show: list[str], evt: Any
        ) -> tuple[Any, ...]:
            if outcome is None or not outcome.ok:
                return 0, gr.update(), gr.update(), gr.update(), gr.update()
            i = min(int(evt.index), len(outcome.variations) - 1)
            v = outcome.variations[i]
            message = f"Picked seed {v.seed}."
            return (
                i,
                studio.view(sketch, v, outcome.hints, show),
                downloads_for(outcome, i),
                command_text(outcome, i),
                message,
            )

        on_pick.__annotations__ = {"evt": gr.SelectData}
        gallery.select(
            on_pick,
            [sketch_state, outcome_state, layers],
            [picked_state, result, downloads, command_md, status_md],
        )

        def on_layers(sketch: Upload | None, outcome: Outcome | None, i: int, show: list[str]) -> Any:
            if outcome is None or not outcome.ok:
                return gr.update()
            return studio.view(
                sketch, outcome.variations[min(i, len(outcome.variations) - 1)], outcome.hints, show
            )

        layers.change(on_layers, [sketch_state, outcome_state, picked_state, layers], result)
        app.load(page_status, None, [model_md, reference_group])
    return app


def launch(app: Any, host: str, port: int) -> str:
    """Serve ``app`` on ``host:port`` in a background thread (requests queued, one at a time).

    Returns:
        The page's URL. Stop the server with ``app.close()``.
    """
    gr = import_gradio()
    app.queue(default_concurrency_limit=1, max_size=64)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # system fonts: the page loads nothing from the internet
    app.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
        quiet=True, show_error=True, ssr_mode=False, theme=theme, css=CSS,
    )  # fmt: skip
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


__all__ = [
    "ColorizeFiles",
    "ModelStatus",
    "Outcome",
    "Request",
    "Settings",
    "Studio",
    "Upload",
    "Variation",
    "build_app",
    "colours_in_use",
    "launch",
    "layer_view",
    "merge_layers",
    "paint_points",
]
