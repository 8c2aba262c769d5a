"""``sketchcolor ui``: a local web page to colour sketches by hand (needs the ``ui`` extra).

Examples::

    pip install "sketchcolor[ui]"
    sketchcolor ui                                   # then open http://127.0.0.1:7860/
    sketchcolor ui --port 8000 --model runs/mine/last.safetensors
    sketchcolor ui --host 0.0.0.0 --max-pixels 16000000   # your local network, sketches up to 16 MP

The page (:mod:`sketchcolor.ui`) colourises with :func:`colorize_files`, which runs the functions
``sketchcolor colorize`` runs (``make_job``, ``load_inputs``, ``colorize``, ``save_outputs``) on
each request's files, so what the page shows is the file the command line writes for the same
files and seed, record included (docs/ui.md).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import SketchcolorError
from .app import DeviceOpt, ModelOpt, Sampler, app, stdout
from .colorize import (
    ReferenceCache,
    base_record,
    check_outputs,
    load_inputs,
    make_job,
    output_paths,
    save_outputs,
)

if TYPE_CHECKING:
    from ..ui import Request

log = logging.getLogger("sketchcolor")

#: ``--max-pixels`` at most (and by default): the command line's limit, ``sketchcolor.io.MAX_PIXELS``.
CLI_MAX_PIXELS = 8192 * 8192


def colorize_files(request: Request) -> dict[str, Any]:
    """``sketchcolor colorize SKETCH [--hints H] [--reference R] --seed S ... --save-flats -o OUT``.

    The same steps as :func:`sketchcolor.cli.colorize.colorize_cli` without ``--from-png``: the
    outputs are checked, every input is read once, the model comes from the library's cache, and
    the picture and its flats are written with the record the CLI writes.

    Returns:
        The picture's record.

    Raises:
        SketchcolorError: A bad input or setting, or a model that does not load.
    """
    from ..pipeline import check_sample_config, colorize, load_model

    s = request.sample
    job = make_job(
        steps=s.steps, sampler=Sampler(s.sampler), eta=s.eta, guidance=s.guidance, pin_hints=s.pin_hints,
        hints=[request.hints] if request.hints is not None else None, points=None, hint_radius=None,
        hints_in_sketch=False, stretch=False, flat=request.flat, save_flats=True, save_hints=False,
        model=Path(request.model) if request.model is not None else None, hint_regions=request.hint_regions,
        reference=request.reference, reference_scale=s.reference_scale, reference_snap=s.reference_snap,
    )  # fmt: skip
    inputs_used = [request.sketch, *job.hints] + ([job.reference] if job.reference is not None else [])
    check_outputs(output_paths(request.output, job), inputs_used, overwrite=False)
    bundle = load_model(job.model_path, request.device)
    inputs = load_inputs(request.sketch, job, references=_references(bundle))
    check_sample_config(job.sample, bundle)
    result = colorize(
        inputs.sketch_image, inputs.layer, bundle, job.sample, request.seed, num_samples=1, flat=job.flat,
        hint_regions=job.hint_regions, keep_flats=True, reference=inputs.reference,
    )  # fmt: skip
    return save_outputs(result, request.output, job, base_record(inputs, job), overwrite=False)[0]


_reference_caches: dict[str, ReferenceCache] = {}
_reference_caches_lock = threading.Lock()


def _references(bundle: Any) -> ReferenceCache:
    """The server's prepared references for one model: an artist tries many pictures against one
    reference, and each try writes it to a new folder, so they are known by their bytes."""
    with _reference_caches_lock:
        cache = _reference_caches.get(bundle.digest)
        if cache is None:
            cache = _reference_caches[bundle.digest] = ReferenceCache(bundle, size=4, by_content=True)
        return cache


def free_port(host: str, port: int) -> int:
    """``port`` if it can be listened on at ``host`` (0: any free port).

    Raises:
        SketchcolorError: The port is in use, or the address cannot be listened on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SketchcolorError(
                    f"port {port} on {host} is in use",
                    hint="pass another --port, or --port 0 for any free one",
                ) from None
            raise SketchcolorError(
                f"--host {host}: cannot listen there ({exc.strerror or exc})",
                hint="use 127.0.0.1 (this computer) or 0.0.0.0 (your local network)",
            ) from None
        return int(sock.getsockname()[1])


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM stop the server cleanly while the block runs.

    Set explicitly because a process started in the background of a script (``sketchcolor ui &``)
    inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt: the server would
    ignore the "Ctrl-C stops" the command prints. SIGTERM (``kill``, a service manager) takes the
    same path, so the temporary request folder is removed either way. The previous handlers are
    restored on the way out.
    """
    saved = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@app.command("ui")
def ui_cli(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on: 127.0.0.1 = this computer only; 0.0.0.0 = your local network too.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 = any free one.")] = 7860,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",  # type: ignore[assignment]
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels",
            min=1,
            max=CLI_MAX_PIXELS,
            help="Largest sketch or reference picture accepted, in pixels (width x height); "
            "default and most: the command line's 8192 x 8192.",
        ),
    ] = CLI_MAX_PIXELS,
    share: Annotated[
        bool,
        typer.Option(
            "--share", help="Refused: a public link needs the internet, and sketchcolor runs offline."
        ),
    ] = False,
) -> None:
    """Serve a local web page to colour sketches by hand (hints, variations, downloads).

    One model is loaded once for the server and requests are queued (one at a time). Pictures are
    those of `sketchcolor colorize` with the downloaded hints file and the shown seed, pixel for
    pixel, and carry the same record. Needs the ui extra: pip install "sketchcolor[ui]". Ctrl-C stops.

    Examples:

        sketchcolor ui

        sketchcolor ui --port 8000 --model runs/mine/last.safetensors
    """
    from ..ui import Studio, build_app, import_gradio, launch

    if share:
        raise typer.BadParameter(
            "a public link needs the internet, and this tool runs offline; the page is served on "
            "--host (127.0.0.1: this computer; 0.0.0.0: your local network)",
            param_hint="'--share'",
        )
    port = free_port(host, port)
    # Deprecation notes from Gradio's own use of its dependencies are not the user's business.
    warnings.filterwarnings("ignore", module="gradio")
    import_gradio()  # one line naming the extra when it is missing, before the model is read
    with tempfile.TemporaryDirectory(prefix="sketchcolor-ui-") as workdir:
        studio = Studio(colorize_files, workdir, model=model, device=str(device), max_pixels=max_pixels)
        status = studio.model_status()  # loads the model once (the library's cache)
        if not status.ok:
            log.warning("the page will say so and retry on every request")
        page = build_app(studio)
        url = launch(page, host, port)
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.info("listening on %s: other computers on your network can open the page", host)
        stdout.print(
            f"sketchcolor ui: open {url} (Ctrl-C stops)", highlight=False, markup=False, soft_wrap=True
        )
        try:
            with _stop_signals():
                while True:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            log.info("stopped")
        finally:
            page.close()
