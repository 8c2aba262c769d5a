"""`sketchcolor ui` without a browser: the page's handlers, pixel identity with the CLI, bad input.

The handlers (`sketchcolor.ui.Studio`) take what the page holds (upload paths, the canvas's RGBA
layers as numpy arrays, point texts, settings) and return files and messages, so everything but
the browser itself is tested here; tests/test_ui_browser.py drives the real page.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sketchcolor.cli import main
from sketchcolor.cli.ui import colorize_files
from sketchcolor.errors import HintError
from sketchcolor.ui import (
    MAX_VARIATIONS,
    Request,
    Settings,
    Studio,
    colours_in_use,
    layer_view,
    merge_layers,
    paint_points,
)

from .conftest import draw_sketch, random_model
from .test_reference import ref_config

RED = (220, 30, 30)


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def record(path: Path) -> dict:
    return json.loads(Image.open(path).text["sketchcolor"])


def comparable(rec: dict) -> dict:
    """A record without what depends on where its files were."""
    rec = {k: v for k, v in rec.items() if k not in ("output", "input", "model_rel", "model_abs")}
    rec["inputs"] = [(e["role"], e["rel"], e["digest"]) for e in rec["inputs"]]
    rec["hint_sources"]["images"] = [Path(p).name for p in rec["hint_sources"]["images"]]
    return rec


def stroke_layer(size: tuple[int, int], colour=RED, box=(0.2, 0.4, 0.4, 0.5)) -> np.ndarray:
    """What the canvas sends: an RGBA brush layer at the sketch's size (W, H = size)."""
    w, h = size
    layer = np.zeros((h, w, 4), dtype=np.uint8)
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    layer[y0:y1, x0:x1, :3] = colour
    layer[y0:y1, x0:x1, 3] = 255
    return layer


@pytest.fixture
def sketch_path(tmp_path: Path) -> Path:
    path = tmp_path / "uploads" / "my page.png"  # a space: the saved copy gets a clean name
    path.parent.mkdir()
    draw_sketch((48, 32)).save(path)
    return path


@pytest.fixture
def ref_model(tmp_path: Path) -> Path:
    """A tiny random model with reference conditioning."""
    from sketchcolor.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path / "ref.safetensors", random_model(ref_config(), seed=3), ref_config())


@pytest.fixture
def studio(tmp_path: Path, tiny_checkpoint: Path) -> Studio:
    return Studio(colorize_files, tmp_path / "work", model=tiny_checkpoint, device="cpu")


def cli_in_copy(capsys, monkeypatch, folder: Path, files: list[Path], *args: object) -> Path:
    """Copy the downloaded ``files`` into a new ``folder`` and run ``sketchcolor ARGS`` there."""
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    monkeypatch.chdir(folder)
    code, _, err = run(capsys, *args)
    assert code == 0, err
    return folder


# --- the pieces ---------------------------------------------------------------------------------


def test_merge_layers_keeps_the_librarys_alpha_rule_and_paints_later_layers_over():
    size = (3, 2)  # H, W
    a = np.zeros((3, 2, 4), dtype=np.uint8)
    a[0, 0] = (10, 20, 30, 255)
    a[0, 1] = (10, 20, 30, 127)  # below 0.5 alpha: no hint
    a[1, 0] = (10, 20, 30, 128)  # 0.5: a hint, stored opaque
    b = np.zeros_like(a)
    b[0, 0] = (200, 0, 0, 255)  # the later layer wins
    out = merge_layers([a, None, b], size)
    assert out.dtype == np.uint8 and out.shape == (3, 2, 4)
    assert tuple(out[0, 0]) == (200, 0, 0, 255)
    assert tuple(out[0, 1]) == (0, 0, 0, 0)
    assert tuple(out[1, 0]) == (10, 20, 30, 255)
    assert not out[2].any()
    assert set(np.unique(out[..., 3])) <= {0, 255}
    with pytest.raises(HintError, match="the canvas layer is 5x3 but the sketch is 2x3"):
        merge_layers([np.zeros((3, 5, 4), dtype=np.uint8)], size)


def test_points_are_painted_with_the_cli_syntax_and_named_when_bad():
    rgba = np.zeros((32, 48, 4), dtype=np.uint8)
    out = paint_points(rgba, ["10,5,#00ff00", "0.5,0.5,skyblue"])
    assert tuple(out[5, 10]) == (0, 255, 0, 255)
    assert tuple(out[16, 24]) == (135, 206, 235, 255)
    assert not rgba.any()  # the input is not changed
    with pytest.raises(HintError, match="hint point '500,10,red' is outside the 48x32 image"):
        paint_points(rgba, ["500,10,red"])


def test_colours_in_use_most_used_first():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2, :, :] = (255, 0, 0, 255)
    rgba[2, :1, :] = (0, 0, 255, 255)
    rgba[3, :, :] = (0, 255, 0, 100)  # not a hint
    assert colours_in_use(rgba) == ["#ff0000", "#0000ff"]
    assert colours_in_use(np.zeros((2, 2, 4), dtype=np.uint8)) == [] and colours_in_use(None) == []


def test_layer_view_toggles():
    sketch = np.full((2, 2, 3), 200, dtype=np.uint8)
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    flats = np.full((2, 2, 3), 150, dtype=np.uint8)
    hints = np.zeros((2, 2, 4), dtype=np.uint8)
    hints[0, 0] = (1, 2, 3, 255)
    assert (layer_view(sketch, image, flats, hints, ["Lines", "Flats"]) == 100).all()
    assert (layer_view(sketch, image, flats, hints, ["Flats"]) == 150).all()
    assert (layer_view(sketch, image, flats, hints, ["Lines"]) == 200).all()
    assert (layer_view(sketch, image, flats, hints, []) == 255).all()
    shown = layer_view(sketch, image, flats, hints, ["Lines", "Flats", "Hints"])
    assert tuple(shown[0, 0]) == (1, 2, 3) and tuple(shown[1, 1]) == (100, 100, 100)


def test_settings_default_to_the_clis_and_are_checked():
    from sketchcolor.config import SampleConfig
    from sketchcolor.errors import ConfigError

    assert Settings().sample_config() == SampleConfig()
    for bad in ({"steps": 0}, {"sampler": "euler"}, {"seed": -1}, {"variations": MAX_VARIATIONS + 1}):
        with pytest.raises(ConfigError):
            Settings(**bad)


def test_request_command_spells_out_every_setting(tmp_path):
    from sketchcolor.config import SampleConfig

    req = Request(
        tmp_path / "a b.png", tmp_path / "a.hints.png", None, tmp_path / "a.colored.png",
        SampleConfig(steps=3, guidance=2.0), seed=7, flat=True, hint_regions=False, model="m.safetensors",
    )  # fmt: skip
    assert shlex.split(req.command()) == [
        "sketchcolor", "colorize", "a b.png", "--hints", "a.hints.png", "--seed", "7", "--steps", "3",
        "--sampler", "ddim", "--eta", "0.0", "--guidance", "2.0", "--no-pin-hints", "--flat",
        "--no-hint-regions", "--model", str(Path("m.safetensors").resolve()), "--save-flats", "-o", "a.colored.png",
    ]  # fmt: skip


# --- the same pictures as the CLI ---------------------------------------------------------------


@pytest.mark.parametrize("canvas", ["stroke", "stroke+points", "empty"])
def test_page_pictures_equal_the_clis_pixel_for_pixel(
    capsys, monkeypatch, tmp_path, studio, sketch_path, tiny_checkpoint, canvas
):
    sketch, message = studio.open_sketch(sketch_path)
    assert sketch is not None and sketch.name == "my page.png", message
    layers = [] if canvas == "empty" else [stroke_layer((48, 32))]
    points = "40,20,#3060d0\n\n0.1,0.9,gold" if canvas == "stroke+points" else ""
    outcome = studio.colourise(sketch, layers, points, None, Settings(seed=11, steps=2, variations=2))
    assert outcome.ok, outcome.message
    assert [v.seed for v in outcome.variations] == [11, 12]
    folder = outcome.variations[0].image.parent
    saved_sketch = folder / "my_page.png"
    assert saved_sketch.read_bytes() == sketch_path.read_bytes()  # the upload, byte for byte
    if canvas == "empty":
        assert outcome.hints is None and "without hints" in outcome.message
    else:
        hints = pixels(outcome.hints) if outcome.hints else None
        assert hints is not None and Image.open(outcome.hints).mode == "RGBA"
        assert "#dc1e1e" in outcome.palette
    for v in outcome.variations:
        # What the page shows is the file the CLI's routine wrote (the view of Lines + Flats).
        assert studio.view(sketch, v, outcome.hints, ["Lines", "Flats"]) == str(v.image)
        # The brief's command: the downloaded sketch and hints file, the shown seed and steps.
        files = [saved_sketch] + ([outcome.hints] if outcome.hints is not None else [])
        hint_args = ["--hints", outcome.hints.name] if outcome.hints is not None else []
        cli = cli_in_copy(
            capsys, monkeypatch, tmp_path / f"cli-{v.seed}", files, "colorize", saved_sketch.name, *hint_args,
            "--seed", v.seed, "--steps", 2, "-m", tiny_checkpoint, "-o", "cli.png",
        )  # fmt: skip
        assert np.array_equal(pixels(cli / "cli.png"), pixels(v.image))
        # The command shown on the page, run in a copy of the request folder, makes it and its
        # flats again.
        again = tmp_path / f"again-{v.seed}"
        inputs = [f for f in folder.iterdir() if ".colored" not in f.name and f.suffix == ".png"]
        cli_in_copy(capsys, monkeypatch, again, inputs, *shlex.split(v.command)[1:])
        assert np.array_equal(pixels(again / v.image.name), pixels(v.image))
        assert np.array_equal(pixels(again / v.flats.name), pixels(v.flats))
        # The same record as the CLI's (the shown command's), but for where the files were.
        assert comparable(record(v.image)) == comparable(record(again / v.image.name))
        assert record(cli / "cli.png")["model_digest"] == record(v.image)["model_digest"]


def test_unzipped_bundle_reproduces_with_from_png(capsys, tmp_path, studio, sketch_path):
    sketch, _ = studio.open_sketch(sketch_path)
    outcome = studio.colourise(sketch, [stroke_layer((48, 32))], "", None, Settings(seed=3, variations=2))
    assert outcome.ok and outcome.bundle is not None
    unzipped = tmp_path / "downloaded"
    with zipfile.ZipFile(outcome.bundle) as zf:
        zf.extractall(unzipped)
        names = set(zf.namelist())
    assert {
        "my_page.png",
        "my_page.hints.png",
        "my_page.colored-1.png",
        "my_page.colored-2.flats.png",
    } <= names
    assert "commands.txt" in names
    for v in outcome.variations:
        code, _, err = run(
            capsys,
            "colorize",
            "--from-png",
            unzipped / v.image.name,
            "-o",
            tmp_path / "again.png",
            "--overwrite",
        )
        assert code == 0, err
        assert np.array_equal(pixels(tmp_path / "again.png"), pixels(v.image))


def test_a_reference_used_for_many_pictures_is_prepared_once(monkeypatch, tmp_path, sketch_path, ref_model):
    import sketchcolor.cli.ui as ui_cli
    import sketchcolor.pipeline as pipeline

    monkeypatch.setattr(ui_cli, "_reference_caches", {})  # the server's: other tests used it
    calls = []
    real = pipeline.reference_palette
    monkeypatch.setattr(pipeline, "reference_palette", lambda rgb: calls.append(1) or real(rgb))
    studio = Studio(colorize_files, tmp_path / "w", model=ref_model, device="cpu")
    ref_file = tmp_path / "uploads" / "hero.png"
    Image.new("RGB", (40, 30), (30, 160, 40)).save(ref_file)
    sketch, _ = studio.open_sketch(sketch_path)
    reference, _ = studio.open_reference(ref_file)
    settings = Settings(seed=4, steps=1)
    first = studio.colourise(sketch, [], "", reference, settings)
    second = studio.colourise(sketch, [], "", reference, settings)
    assert first.ok and second.ok
    assert len(calls) == 1  # each try writes the upload to a new folder: known by its bytes
    a, b = first.variations[0].image, second.variations[0].image
    assert a.parent != b.parent and np.array_equal(pixels(a), pixels(b))
    # Each record names the reference beside its own picture.
    for image in (a, b):
        entry = next(e for e in record(image)["inputs"] if e["role"] == "reference")
        assert Path(entry["abs"]).parent == image.parent
    # Another reference is prepared anew.
    Image.new("RGB", (40, 30), (200, 30, 30)).save(ref_file)
    other, _ = studio.open_reference(ref_file)
    assert studio.colourise(sketch, [], "", other, settings).ok and len(calls) == 2


def test_reference_input_exactly_when_the_model_takes_one(
    capsys, monkeypatch, tmp_path, sketch_path, ref_model, tiny_checkpoint
):
    plain = Studio(colorize_files, tmp_path / "w1", model=tiny_checkpoint, device="cpu")
    assert plain.model_status().ok and not plain.model_status().takes_reference
    studio = Studio(colorize_files, tmp_path / "w2", model=ref_model, device="cpu")
    status = studio.model_status()
    assert status.ok and status.takes_reference and "reference" in status.message
    ref_file = tmp_path / "uploads" / "hero.png"
    Image.new("RGB", (40, 30), (30, 160, 40)).save(ref_file)
    sketch, _ = studio.open_sketch(sketch_path)
    reference, message = studio.open_reference(ref_file)
    assert reference is not None, message
    settings = Settings(seed=4, steps=2, reference_scale=2.5, reference_snap=30.0)
    outcome = studio.colourise(sketch, [stroke_layer((48, 32))], "", reference, settings)
    assert outcome.ok, outcome.message
    v = outcome.variations[0]
    assert "--reference hero.png --reference-scale 2.5 --reference-snap 30.0" in v.command
    assert record(v.image)["reference_snap"] == 30.0
    folder = v.image.parent
    files = [folder / "my_page.png", outcome.hints, folder / "hero.png"]
    cli = cli_in_copy(
        capsys, monkeypatch, tmp_path / "cli", files, "colorize", "my_page.png", "--hints", outcome.hints.name,
        "--reference", "hero.png", "--reference-scale", 2.5, "--reference-snap", 30, "--seed", 4, "--steps", 2,
        "-m", ref_model,
        "-o", "ref.png",
    )  # fmt: skip
    out = cli / "ref.png"
    assert np.array_equal(pixels(out), pixels(v.image))
    assert record(v.image)["reference_digest"] == record(out)["reference_digest"] is not None
    # A model without reference conditioning is never handed one (the page hides the input).
    outcome = plain.colourise(sketch, [], "", None, Settings())
    assert outcome.ok


# --- bad input: a message, and the server goes on -----------------------------------------------


def png_header(path: Path, w: int, h: int) -> Path:
    """A few bytes claiming a w x h picture (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_bad_uploads_are_messages(tmp_path, studio, sketch_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    upload, message = studio.open_sketch(text)
    assert (
        upload is None and message == "Refused: notes.png: not an image file, or a format that cannot be read"
    )
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty.png: is empty" in studio.open_sketch(empty)[1]
    huge = png_header(tmp_path / "huge.png", 9000, 9000)
    assert (
        "huge.png: image is 9000x9000 = 81,000,000 pixels, over the limit of 67,108,864"
        in studio.open_sketch(huge)[1]
    )
    assert "over the limit" in studio.open_reference(huge)[1]
    small_limit = Studio(colorize_files, tmp_path / "w", device="cpu", max_pixels=1000)
    upload, message = small_limit.open_sketch(sketch_path)  # 48 x 32 = 1536 pixels
    assert upload is None and "1,536 pixels, over the limit of 1,000" in message
    assert studio.colourise(None, [], "", None, Settings()).message == "Drop a sketch first."
    sketch, _ = studio.open_sketch(sketch_path)
    bad_points = studio.colourise(sketch, [], "500,10,red", None, Settings())
    assert not bad_points.ok and "hint point '500,10,red' is outside the 48x32 image" in bad_points.message
    wrong_size = studio.colourise(sketch, [np.zeros((5, 5, 4), np.uint8)], "", None, Settings())
    assert not wrong_size.ok and "drop the sketch again" in wrong_size.message
    assert studio.colourise(sketch, [], "", None, Settings()).ok  # still serving


def test_a_model_that_fails_to_load_is_a_message(tmp_path, sketch_path, caplog):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    studio = Studio(colorize_files, tmp_path / "w", model=broken, device="cpu")
    status = studio.model_status()
    assert not status.ok and not status.takes_reference
    assert status.message.startswith("The model did not load: ") and "broken.safetensors" in status.message
    sketch, _ = studio.open_sketch(sketch_path)
    for _ in range(2):  # the next request gets the same message: nothing is left half-done
        outcome = studio.colourise(sketch, [stroke_layer((48, 32))], "", None, Settings())
        assert not outcome.ok and outcome.message.startswith(f"Could not colourise: {broken}: ")
        assert str(tmp_path / "w") not in outcome.message  # request folders are not shown


def test_an_unexpected_exception_is_a_message_too(tmp_path, sketch_path):
    def explode(request):
        raise RuntimeError("boom")

    studio = Studio(explode, tmp_path / "w", device="cpu")
    sketch, _ = studio.open_sketch(sketch_path)
    outcome = studio.colourise(sketch, [], "", None, Settings())
    assert outcome.message == "Could not colourise: unexpected RuntimeError: boom (this is a bug)"


def test_request_folders_are_bounded(tmp_path, studio, sketch_path, monkeypatch):
    import sketchcolor.ui as ui

    monkeypatch.setattr(ui, "KEEP_REQUESTS", 3)
    sketch, _ = studio.open_sketch(sketch_path)
    for _ in range(5):
        assert studio.colourise(sketch, [], "", None, Settings(steps=1)).ok
    assert len([p for p in studio.workdir.iterdir() if p.is_dir()]) == 3


# --- the command --------------------------------------------------------------------------------


def test_share_is_refused_with_one_line(capsys):
    code, _, err = run(capsys, "ui", "--share")
    assert code == 2
    assert "--share" in err and "needs the internet" in err and "runs offline" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "text"),
    [(["--max-pixels", "0"], "--max-pixels"), (["--max-pixels", str(8192 * 8192 + 1)], "--max-pixels"),
     (["--port", "70000"], "--port")],
)  # fmt: skip
def test_bad_options_are_usage_errors(capsys, args, text):
    code, _, err = run(capsys, "ui", *args)
    assert code == 2 and text in err


def test_missing_gradio_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    code, _, err = run(capsys, "ui", "--port", 0)
    assert code == 1
    assert (
        err.strip()
        == 'sketchcolor: error: sketchcolor ui needs Gradio, which is not installed (pip install "sketchcolor[ui]")'
    )


def test_a_port_in_use_is_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "ui", "--port", port)
    assert code == 1 and f"port {port} on 127.0.0.1 is in use" in err


def test_reference_group_is_shown_exactly_for_reference_models(tmp_path, tiny_checkpoint, ref_model):
    pytest.importorskip("gradio")
    from sketchcolor.ui import build_app

    for model, shown in ((tiny_checkpoint, False), (ref_model, True)):
        app = build_app(Studio(colorize_files, tmp_path / "w", model=model, device="cpu"))
        group = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "reference-group")
        assert group.visible is shown


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "inherit_sigint_ignored"),
    [("SIGINT", False), ("SIGINT", True), ("SIGTERM", True)],
    ids=["ctrl-c", "ctrl-c-as-background-job", "sigterm"],
)
def test_ui_command_serves_the_page_and_stops_on_ctrl_c(
    tmp_path, tiny_checkpoint, stop, inherit_sigint_ignored
):
    """A real `sketchcolor ui` process: prints its URL, serves the page, stops cleanly on SIGINT/SIGTERM.

    A job started in the background of a script inherits SIGINT ignored (POSIX shells do that);
    the server must stop on Ctrl-C all the same, which is how this test once hung inside CI.
    """
    pytest.importorskip("gradio")

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": env_src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sketchcolor", "ui", "--port", str(port), "-m", str(tiny_checkpoint), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        preexec_fn=ignore_sigint if inherit_sigint_ignored else None,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == f"sketchcolor ui: open http://127.0.0.1:{port}/ (Ctrl-C stops)"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the page never answered"
                time.sleep(0.3)
        assert "sketchcolor" in page
        proc.send_signal(getattr(signal, stop))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "sketchcolor: info: stopped" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
