"""The bad-input catalogue (issue 10): whatever a user feeds a command, one clear line, never a traceback.

Every case runs a real command line through :func:`sketchcolor.cli.main` (or the Python API) and
asserts the exit code, the text of the one line, and that no traceback is printed. Inputs are
built in the test: tiny images, a tall thin PNG, truncated files, FIFOs, hand-made PNG headers.
docs/reliability.md lists what is guaranteed; this file is how it is tested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import sketchcolor
from sketchcolor.cli import main
from sketchcolor.errors import SketchcolorError

from .conftest import draw_hints, draw_sketch

# ----------------------------------------------------------------------------------------------
# Inputs, made in the test
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ctx:
    tmp: Path
    model: Path

    def path(self, name: str) -> Path:
        return self.tmp / name

    def sketch(self, name: str = "s.png", size: tuple[int, int] = (48, 32)) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_sketch(size).save(path)
        return path

    def hints(self, name: str = "h.png", size: tuple[int, int] = (48, 32)) -> Path:
        path = self.tmp / name
        draw_hints(size).save(path)
        return path

    def json(self, name: str, spec: object) -> Path:
        path = self.tmp / name
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        return path

    def blank(self, name: str, size: tuple[int, int]) -> Path:
        path = self.tmp / name
        Image.new("L", size, 255).save(path)
        return path

    def text_file(self, name: str = "notes.png") -> Path:
        path = self.tmp / name
        path.write_text("this is not a picture")
        return path

    def truncated(self, name: str = "cut.png") -> Path:
        path = self.tmp / name
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
        return path

    def huge_header(self, name: str = "huge.png", w: int = 9000, h: int = 9000) -> Path:
        """A few bytes claiming a 9000 x 9000 picture (a decompression bomb's header)."""
        path = self.tmp / name
        path.write_bytes(_png([(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)), (b"IEND", b"")]))
        return path

    def record_png(self, name: str, record: object) -> Path:
        """A picture with a hand-made sketchcolor record."""
        path = self.tmp / name
        info = PngImagePlugin.PngInfo()
        info.add_itxt("sketchcolor", record if isinstance(record, str) else json.dumps(record))
        Image.new("RGB", (48, 32), "white").save(path, pnginfo=info)
        return path

    def colorize(self, *extra: object, out: str = "made.png") -> Path:
        """A real output of colorize (for --from-png cases)."""
        sketch = self.sketch("src.png")
        code = main(["colorize", str(sketch), "-m", str(self.model), "--steps", "1", "-o", str(self.tmp / out), "-q",
                     *map(str, extra)])  # fmt: skip
        assert code == 0
        return self.tmp / out


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return out


def good_record(ctx: Ctx, **changes: object) -> dict:
    record = {"seed": 0, "sampler": "ddim", "steps": 1, "eta": 0.0, "guidance": 1.0,
              "input": str(ctx.sketch("rec_src.png")), "model": str(ctx.model)}  # fmt: skip
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


# ----------------------------------------------------------------------------------------------
# The catalogue: (id, command line built from the context, exit code, text of the line)
# ----------------------------------------------------------------------------------------------

Args = Callable[[Ctx], list[object]]


def colorize(*extra: object, sketch: Callable[[Ctx], object] | None = None, out: str = "o.png") -> Args:
    def build(c: Ctx) -> list[object]:
        s = sketch(c) if sketch is not None else c.sketch()
        return ["colorize", s, "-m", c.model, "--steps", 1, "-o", out if out == "-" else c.path(out),
                *[e(c) if callable(e) else e for e in extra]]  # fmt: skip

    return build


def args(fn: Callable[[Ctx], list[object]]) -> Args:
    return fn


OK = 0
CASES: list[tuple[str, Args, int, str]] = [
    # --- colorize: the sketch ------------------------------------------------------------------
    ("sketch-missing", colorize(sketch=lambda c: c.path("missing.png")), 1, "missing.png: file not found"),
    ("sketch-folder", colorize(sketch=lambda c: c.tmp), 1, "is a folder, not an image file"),
    ("sketch-text", colorize(sketch=lambda c: c.text_file()), 1, "notes.png: not an image file"),
    ("sketch-empty-file", colorize(sketch=lambda c: c.json("empty.png", "")), 1, "empty.png: is empty"),
    ("sketch-truncated", colorize(sketch=lambda c: c.truncated()), 1, "cut.png: corrupt or truncated image"),
    ("sketch-bomb-header", colorize(sketch=lambda c: c.huge_header()), 1, "over the limit of 67,108,864"),
    ("sketch-brackets-in-name", colorize(sketch=lambda c: c.path("page[1].png")), 1, "page[1].png: file not found"),
    ("sketch-tall-8x100000", colorize(sketch=lambda c: c.blank("tall.png", (8, 100000))), OK, "wrote"),
    ("sketch-wide-100000x8", colorize(sketch=lambda c: c.blank("wide.png", (100000, 8))), OK, "wrote"),
    ("sketch-1x1", colorize(sketch=lambda c: c.blank("dot.png", (1, 1))), OK, "wrote"),
    ("sketch-2x3", colorize(sketch=lambda c: c.blank("tiny.png", (2, 3))), OK, "wrote"),
    ("stdin-needs-output", args(lambda c: ["colorize", "-", "-m", c.model]), 2, "needs -o"),
    # --- colorize: options ---------------------------------------------------------------------
    ("steps-0", colorize("--steps", 0), 2, "Invalid value for '--steps'"),
    ("steps-100000", colorize("--steps", 100000), 1, "at most 1000 sampling steps"),
    ("ddpm-steps-2000", colorize("--sampler", "ddpm", "--steps", 2000), 1, "at most 1000 sampling steps"),
    ("sampler-unknown", colorize("--sampler", "euler"), 2, "Invalid value for '--sampler'"),
    ("seed-2**70", colorize("--seed", 2**70), 2, "Invalid value for '--seed'"),
    ("seed-negative", colorize("--seed", -1), 2, "Invalid value for '--seed'"),
    ("seed-2**64-1-works", colorize("--seed", 2**64 - 1, "-n", 2), OK, "seed 18446744073709551615"),
    ("guidance-inf", colorize("--guidance", "inf"), 2, "inf is not a finite number"),
    ("guidance-nan", colorize("--guidance", "nan"), 2, "Invalid value for '--guidance'"),
    ("guidance-negative", colorize("--guidance", -1), 2, "Invalid value for '--guidance'"),
    ("eta-2", colorize("--eta", 2), 2, "Invalid value for '--eta'"),
    ("eta-nan", colorize("--eta", "nan"), 2, "Invalid value for '--eta'"),
    ("num-samples-0", colorize("-n", 0), 2, "Invalid value for '--num-samples'"),
    ("device-unknown", colorize("--device", "tpu"), 2, "Invalid value for '--device'"),
    ("hint-radius-negative", colorize("--hint-radius", -5), 2, "Invalid value for '--hint-radius'"),
    ("hint-radius-nan", colorize("--hint-radius", "nan"), 2, "Invalid value for '--hint-radius'"),
    ("hint-malformed", colorize("--hint", "5,5"), 1, "must be X,Y,COLOR"),
    ("hint-bad-colour", colorize("--hint", "5,5,notacolour"), 1, "'notacolour' is not a colour"),
    ("hint-outside", colorize("--hint", "500,10,red"), 1, "hint point '500,10,red' is outside the 48x32 image"),
    ("hint-nan-coordinate", colorize("--hint", "nan,5,red"), 1, "is outside the 48x32 image"),
    # --- colorize: hint files (one rule for radius and width, wherever hints come from) -------
    ("json-radius-negative", colorize("--hints", lambda c: c.json("r.json", {"points": [{"x": 5, "y": 5, "color": "red", "radius": -5}]})),
     1, "r.json: points[0].radius must be a finite number of pixels >= 0, got -5"),  # fmt: skip
    ("json-width-negative", colorize("--hints", lambda c: c.json("w.json", {"strokes": [{"points": [[1, 1], [9, 9]], "color": "red", "width": -1}]})),
     1, "w.json: strokes[0].width must be a finite number of pixels >= 0"),  # fmt: skip
    ("json-radius-string", colorize("--hints", lambda c: c.json("rs.json", {"points": [{"x": 5, "y": 5, "color": "red", "radius": "big"}]})),
     1, "rs.json: points[0].radius must be a number of pixels"),  # fmt: skip
    ("json-x-nan", colorize("--hints", lambda c: c.json("n.json", '{"points": [{"x": NaN, "y": 5, "color": "red"}]}')),
     1, "n.json: points[0].x must be a finite number"),  # fmt: skip
    ("json-width-1e308-works", colorize("--hints", lambda c: c.json("big.json", {"strokes": [{"points": [[1, 1]], "color": "red", "width": 1e308}]})),
     OK, "wrote"),  # fmt: skip
    ("hint-radius-1e308-works", colorize("--hint", "5,5,red", "--hint-radius", 1e308), OK, "wrote"),
    ("json-invalid", colorize("--hints", lambda c: c.json("bad.json", "{nope")), 1, "bad.json: not valid JSON"),
    ("json-points-not-list", colorize("--hints", lambda c: c.json("p.json", {"points": 5})), 1, "p.json: 'points' must be a list"),
    ("json-unknown-key", colorize("--hints", lambda c: c.json("k.json", {"dots": []})), 1, "k.json: a hints file is an object"),
    ("json-missing-y", colorize("--hints", lambda c: c.json("y.json", {"points": [{"x": 1}]})), 1, "y.json: points[0].y must be a number"),
    ("hints-missing", colorize("--hints", lambda c: c.path("nohints.png")), 1, "nohints.png: file not found"),
    ("hints-corrupt", colorize("--hints", lambda c: c.truncated("hcut.png")), 1, "hcut.png: corrupt or truncated image"),
    ("hints-aspect", colorize("--hints", lambda c: c.hints("sq.png", (40, 40))), 1, "sq.png: hints are 40x40 but the sketch is 48x32"),
    # --- colorize: outputs ---------------------------------------------------------------------
    ("output-is-sketch", args(lambda c: ["colorize", c.sketch(), "-m", c.model, "-o", c.path("s.png"), "--overwrite"]),
     1, "s.png: is the sketch of this command; refusing to write over it"),  # fmt: skip
    ("output-is-hints", args(lambda c: ["colorize", c.sketch(), "--hints", c.hints(), "-m", c.model, "-o", c.path("h.png"), "--overwrite"]),
     1, "h.png: is a hints file of this command"),  # fmt: skip
    ("output-exists", args(lambda c: ["colorize", c.sketch(), "-m", c.model, "-o", c.text_file("taken.png")]), 1, "taken.png: already exists"),
    ("output-suffix-before-model", args(lambda c: ["colorize", c.sketch(), "-m", c.path("nomodel.safetensors"), "-o", c.path("o.xyz")]),
     1, "o.xyz: cannot write '.xyz' images"),  # fmt: skip
    ("output-is-folder", args(lambda c: ["colorize", c.sketch(), "-m", c.model, "-o", c.tmp]), 1, "is a folder (give a file name"),
    ("output-under-a-file", args(lambda c: ["colorize", c.sketch(), "-m", c.model, "-o", c.text_file("f.txt") / "o.png"]),
     1, "f.txt is a file, not a folder"),  # fmt: skip
    ("save-steps-not-gif", colorize("--save-steps", lambda c: c.path("steps.png")), 2, "the animation is a GIF"),
    ("output-gif-before-model", args(lambda c: ["colorize", c.sketch(), "-m", c.path("nomodel.safetensors"), "-o", c.path("o.gif")]),
     1, "o.gif: cannot write '.gif' images"),  # fmt: skip
    ("batch-hints-missing", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "--hints", c.path("gone.png"), "-m", c.model]),
     1, "gone.png: file not found"),  # fmt: skip
    ("stdout-and-json", colorize("--format", "json", out="-"), 2, "--format json cannot share it"),
    ("stdout-and-samples", colorize("-n", 2, out="-"), 2, "need a file name"),
    # --- colorize: models ----------------------------------------------------------------------
    ("model-missing", args(lambda c: ["colorize", c.sketch(), "-m", c.path("nope.safetensors"), "-o", c.path("o.png")]),
     1, "nope.safetensors: checkpoint not found"),  # fmt: skip
    ("model-not-safetensors", args(lambda c: ["colorize", c.sketch(), "-m", c.text_file("m.safetensors"), "-o", c.path("o.png")]),
     1, "m.safetensors"),  # fmt: skip
    ("mode-mismatch", colorize("--mode", "photo"), 1, "is a lineart model, not a photo model"),
    # --- colorize --from-png -------------------------------------------------------------------
    ("from-png-no-record", args(lambda c: ["colorize", "--from-png", c.sketch("plain.png")]), 1, "plain.png: holds no sketchcolor record"),
    ("from-png-empty-record", args(lambda c: ["colorize", "--from-png", c.record_png("e.png", {})]), 1, "e.png: its sketchcolor record is empty"),
    ("from-png-record-not-json", args(lambda c: ["colorize", "--from-png", c.record_png("nj.png", "{oops")]), 1, "nj.png: its sketchcolor record is not valid JSON"),
    ("from-png-record-a-list", args(lambda c: ["colorize", "--from-png", c.record_png("l.png", [1, 2])]), 1, "l.png: its sketchcolor record is empty or not a JSON object"),
    ("from-png-unknown-sampler", args(lambda c: ["colorize", "--from-png", c.record_png("u.png", good_record(c, sampler="euler"))]),
     1, "u.png: its sketchcolor record has a bad 'sampler'"),  # fmt: skip
    ("from-png-no-steps", args(lambda c: ["colorize", "--from-png", c.record_png("ns.png", good_record(c, steps=None))]),
     1, "ns.png: its sketchcolor record has no 'steps'"),  # fmt: skip
    ("from-png-bad-seed", args(lambda c: ["colorize", "--from-png", c.record_png("bs.png", good_record(c, seed=2**70))]),
     1, "bs.png: its sketchcolor record has a bad 'seed'"),  # fmt: skip
    ("from-png-steps-too-many", args(lambda c: ["colorize", "--from-png", c.record_png("st.png", good_record(c, steps=5000)), "-o", c.path("o.png")]),
     1, "at most 1000 sampling steps"),  # fmt: skip
    ("from-png-sketch-missing", args(lambda c: ["colorize", "--from-png", c.record_png("sm.png", good_record(c, input=str(c.path("gone.png"))))]),
     1, "gone.png: sketch recorded in"),  # fmt: skip
    ("from-png-sketch-changed", args(lambda c: ["colorize", "--from-png", _changed(c, "src.png"), "-o", c.path("again.png")]),
     1, "src.png: changed since"),  # fmt: skip
    ("from-png-hints-changed", args(lambda c: ["colorize", "--from-png", _changed(c, "hh.png", "--hints", c.hints("hh.png")), "-o", c.path("again.png")]),
     1, "hh.png: changed since"),  # fmt: skip
    ("from-png-hints-gone", args(lambda c: ["colorize", "--from-png", _gone(c, "hg.png", "--hints", c.hints("hg.png")), "-o", c.path("again.png")]),
     1, "hg.png: hints image recorded in"),  # fmt: skip
    ("from-png-with-steps", args(lambda c: ["colorize", "--from-png", c.colorize(), "--steps", 3]), 2, "drop --steps"),
    ("from-png-over-itself", args(lambda c: ["colorize", "--from-png", c.colorize(), "-o", c.path("made.png"), "--overwrite"]),
     1, "is the PNG being reproduced"),  # fmt: skip
    ("from-png-other-sketch", args(lambda c: ["colorize", c.blank("other.png", (48, 32)), "--from-png", c.colorize(), "-o", c.path("x.png")]),
     1, "other.png: is not the sketch"),  # fmt: skip
    # --- batch ---------------------------------------------------------------------------------
    ("batch-missing-folder", args(lambda c: ["batch", c.path("nope"), "-o", c.path("out"), "-m", c.model]), 1, "nope: folder not found"),
    ("batch-input-is-file", args(lambda c: ["batch", c.sketch(), "-o", c.path("out"), "-m", c.model]), 1, "s.png: is not a folder"),
    ("batch-empty-folder", args(lambda c: ["batch", _folder(c, "empty"), "-o", c.path("out"), "-m", c.model]), 1, "empty: no sketches found"),
    ("batch-output-is-input", args(lambda c: ["batch", _pages(c), "-o", c.path("pages"), "-m", c.model]), 1, "pages: is the input folder"),
    ("batch-output-is-a-file", args(lambda c: ["batch", _pages(c), "-o", c.text_file("out.txt"), "-m", c.model]), 1, "out.txt: is a file, not a folder"),
    ("batch-only-outputs-inside", args(lambda c: ["batch", _only_outputs(c), "-o", c.path("pg/colored"), "-r", "-m", c.model]),
     1, "the output folder"),  # fmt: skip
    ("batch-shard-3/2", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "--shard", "3/2"]), 2, "need 1 <= I <= N"),
    ("batch-shard-garbage", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "--shard", "x"]), 2, "expected I/N"),
    ("batch-hints-dir-missing", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "--hints-dir", c.path("nohints")]),
     1, "nohints: hints folder not found"),  # fmt: skip
    ("batch-steps-100000", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "-m", c.model, "--steps", 100000]),
     1, "at most 1000 sampling steps"),  # fmt: skip
    ("batch-seed-2**70", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "--seed", 2**70]), 2, "Invalid value for '--seed'"),
    ("batch-guidance-inf", args(lambda c: ["batch", _pages(c), "-o", c.path("out"), "--guidance", "inf"]), 2, "inf is not a finite number"),
    ("batch-unresolvable-collision", args(lambda c: ["batch", _pages(c, "page.png", "page.jpg", "page.jpg.png"), "-o", c.path("out"), "-m", c.model]),
     1, "would replace another result or an input"),  # fmt: skip
    ("batch-output-is-hints-file", args(lambda c: ["batch", _pages(c), "-o", c.path("hd"), "--hints-dir", _hints_dir(c, "hd"), "-m", c.model]),
     1, "which is an input"),  # fmt: skip
    ("batch-tall-page-works", args(lambda c: ["batch", _pages(c, tall=True), "-o", c.path("out"), "-m", c.model, "--steps", 1]), OK, "2 coloured"),
    # --- eval ----------------------------------------------------------------------------------
    ("eval-nothing", args(lambda c: ["eval"]), 2, "give --pred and --truth"),
    ("eval-pred-missing", args(lambda c: ["eval", "--pred", c.path("nope"), "--truth", _folder(c, "t")]), 1, "nope: prediction folder not found"),
    ("eval-pred-empty", args(lambda c: ["eval", "--pred", _folder(c, "p"), "--truth", _truths(c, 1)]), 1, "no prediction images found"),
    ("eval-both-modes", args(lambda c: ["eval", "--pred", c.tmp, "--truth", c.tmp, "--data", c.tmp]), 2, "not both"),
    ("eval-threshold-unknown", args(lambda c: ["eval", "--pred", _truths(c, 1), "--truth", _truths(c, 1), "--fail-under", "psnrr=1"]),
     2, "unknown metric 'psnrr'"),  # fmt: skip
    ("eval-threshold-inf", args(lambda c: ["eval", "--pred", _truths(c, 1), "--truth", _truths(c, 1), "--fail-under", "psnr=inf"]),
     2, "the value must be finite"),  # fmt: skip
    ("eval-data-layout", args(lambda c: ["eval", "--data", _folder(c, "flat"), "-m", c.model]), 1, "sketch/ and color/"),
    ("eval-model-missing", args(lambda c: ["eval", "--data", _test_set(c), "-m", c.path("gone.safetensors")]), 1, "gone.safetensors: checkpoint not found"),
    ("eval-steps-100000", args(lambda c: ["eval", "--data", _test_set(c), "-m", c.model, "--steps", 100000]), 1, "at most 1000 steps"),
    ("eval-sweep-garbage", args(lambda c: ["eval", "--data", _test_set(c), "-m", c.model, "--hints-sweep", "a,b"]), 2, "comma-separated stroke counts"),
    ("eval-seed-2**70", args(lambda c: ["eval", "--data", _test_set(c), "--seed", 2**70]), 2, "Invalid value for '--seed'"),
    # --- train ---------------------------------------------------------------------------------
    ("train-no-out", args(lambda c: ["train", "--data", c.tmp]), 2, "give a run folder with --out"),
    ("train-data-missing", args(lambda c: ["train", "--data", c.path("nodata"), "--out", c.path("run")]), 1, "nodata: training data not found"),
    ("train-resume-not-a-run", args(lambda c: ["train", "--resume", _folder(c, "notrun")]), 1, "not a training run folder"),
    ("train-resume-with-data", args(lambda c: ["train", "--resume", c.tmp, "--data", c.tmp]), 1, "do not combine it with"),
    ("train-seed-2**70", args(lambda c: ["train", "--data", c.tmp, "--out", c.path("run"), "--seed", 2**70]), 2, "Invalid value for '--seed'"),
    ("train-set-seed-negative", args(lambda c: ["train", "--data", c.tmp, "--out", c.path("run"), "--set", "run.seed=-1"]),
     2, "run.seed must be an integer from 0 to 2**64 - 1"),  # fmt: skip
    ("train-lr-nan", args(lambda c: ["train", "--data", c.tmp, "--out", c.path("run"), "--lr", "nan"]), 2, "Invalid value for '--lr'"),
    ("train-steps-0", args(lambda c: ["train", "--data", c.tmp, "--out", c.path("run"), "--steps", 0]), 2, "Invalid value for '--steps'"),
    ("train-unknown-key", args(lambda c: ["train", "--data", c.tmp, "--out", c.path("run"), "--set", "foo.bar=1"]), 1, "unknown config key 'foo.bar'"),
    ("train-set-malformed", args(lambda c: ["train", "--data", c.tmp, "--out", c.path("run"), "--set", "nokey"]), 2, "expected KEY=VALUE"),
]  # fmt: skip


def _folder(c: Ctx, name: str) -> Path:
    (c.tmp / name).mkdir(parents=True, exist_ok=True)
    return c.tmp / name


def _pages(c: Ctx, *names: str, tall: bool = False) -> Path:
    root = _folder(c, "pages")
    for name in names or ("p1.png",):
        draw_sketch((40, 30)).save(root / name, format="PNG")
    if tall:
        Image.new("L", (8, 100000), 255).save(root / "tall.png")
    return root


def _only_outputs(c: Ctx) -> Path:
    root = _folder(c, "pg/colored")
    draw_sketch((40, 30)).save(root / "already.png")
    return c.tmp / "pg"


def _hints_dir(c: Ctx, name: str) -> Path:
    folder = _folder(c, name)
    draw_hints((40, 30)).save(folder / "p1.png")
    return folder


def _truths(c: Ctx, n: int, name: str = "truth") -> Path:
    folder = _folder(c, name)
    for i in range(n):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"t{i}.png")
    return folder


def _test_set(c: Ctx) -> Path:
    from .conftest import write_dataset

    return write_dataset(c.tmp / "set", n=2, paired=True, size=32)


def _changed(c: Ctx, changed: str, *extra: object) -> Path:
    made = c.colorize(*extra, out="made_changed.png")
    Image.new("RGB", (48, 32), "white").save(c.tmp / changed)
    return made


def _gone(c: Ctx, gone: str, *extra: object) -> Path:
    made = c.colorize(*extra, out="made_gone.png")
    (c.tmp / gone).unlink()
    return made


def assert_clean(code: int, out: str, err: str, want_code: int, text: str) -> None:
    """The exit code, the text, no traceback; a failure is exactly one line on stderr."""
    assert "Traceback" not in out and "Traceback" not in err, err
    assert code == want_code, f"exit {code}, stderr: {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("sketchcolor: ") for line in lines), lines
    if want_code == 0:
        assert text in out + err
        return
    errors = [
        line for line in lines if not line.startswith(("sketchcolor: warning: ", "sketchcolor: info: "))
    ]
    assert len(errors) == 1, f"expected one line, got {errors!r}"
    assert errors[0].startswith("sketchcolor: error: ")
    assert text in errors[0], errors[0]


@pytest.fixture
def ctx(tmp_path, tiny_checkpoint) -> Ctx:
    work = tmp_path / "work"
    work.mkdir()
    return Ctx(work, tiny_checkpoint)


@pytest.mark.parametrize(("build", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_catalogue(capsys, ctx, build, code, text):
    argv = [str(a) for a in build(ctx)]
    capsys.readouterr()
    got = main(argv)
    out, err = capsys.readouterr()
    assert_clean(got, out, err, code, text)


def test_the_catalogue_is_big_enough():
    assert len(CASES) + len(API_CASES) >= 60
    ids = [c[0] for c in CASES]
    assert len(set(ids)) == len(ids)
    for command in ("batch", "eval", "train"):
        assert sum(i.startswith(command) for i in ids) >= 8, command


# ----------------------------------------------------------------------------------------------
# Cases that need more than a command line
# ----------------------------------------------------------------------------------------------


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_output_never_replaces_the_sketch_and_readme_example_works(capsys, ctx):
    sketch = ctx.sketch("page.png")
    before = sketch.read_bytes()
    code, out, err = run(
        capsys, "colorize", sketch, "-m", ctx.model, "-o", sketch, "--overwrite", "--steps", 1
    )
    assert_clean(code, out, err, 1, "refusing to write over it")
    assert sketch.read_bytes() == before
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "-o page.png" not in readme  # the README's own example must be a command that works
    code, out, err = run(capsys, "colorize", sketch, "--hint", "10,10,#d03030", "--flat", "--save-flats",
                         "-m", ctx.model, "-o", ctx.path("page.colored.png"), "--steps", 1)  # fmt: skip
    assert_clean(code, out, err, 0, "wrote")
    assert sketch.read_bytes() == before and ctx.path("page.colored.flats.png").exists()


def test_fifo_sketch_is_read_once(capsys, ctx):
    fifo = ctx.path("pipe.png")
    os.mkfifo(fifo)
    data = (ctx.sketch()).read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    code, out, err = run(capsys, "colorize", fifo, "-m", ctx.model, "--steps", 1, "-o", ctx.path("f.png"))
    writer.join(timeout=30)
    assert_clean(code, out, err, 0, "wrote")
    assert Image.open(ctx.path("f.png")).size == (48, 32)
    record = json.loads(Image.open(ctx.path("f.png")).text["sketchcolor"])
    assert record["inputs"][0]["stream"] is True
    # Reproducing it says where the sketch came from, and takes it again.
    code, out, err = run(capsys, "colorize", "--from-png", ctx.path("f.png"), "-o", ctx.path("g.png"))
    assert_clean(code, out, err, 1, "its sketch was read from a pipe")
    code, out, err = run(
        capsys, "colorize", ctx.path("s.png"), "--from-png", ctx.path("f.png"), "-o", ctx.path("g.png")
    )
    assert_clean(code, out, err, 0, "wrote")
    assert np.array_equal(
        np.asarray(Image.open(ctx.path("f.png"))), np.asarray(Image.open(ctx.path("g.png")))
    )


def test_json_hints_from_a_pipe_are_refused_clearly(capsys, ctx):
    fifo = ctx.path("hints.json")
    os.mkfifo(fifo)
    code, out, err = run(
        capsys, "colorize", ctx.sketch(), "--hints", fifo, "-m", ctx.model, "-o", ctx.path("o.png")
    )
    assert_clean(code, out, err, 1, "hints.json: JSON hints must be a regular file")


def test_multi_page_tiff_warns_that_page_one_is_used(capsys, ctx):
    first = draw_sketch((48, 32))
    first.save(ctx.path("multi.tif"), save_all=True, append_images=[Image.new("RGB", (48, 32), "black")])
    code, out, err = run(
        capsys, "colorize", ctx.path("multi.tif"), "-m", ctx.model, "--steps", 1, "-o", ctx.path("m.png")
    )
    assert_clean(code, out, err, 0, "wrote")
    assert "sketchcolor: warning: " in err and "multi.tif: has 2 pages; only the first is used" in err


def test_unexpected_exception_is_one_line_naming_the_input(capsys, ctx, monkeypatch):
    import sketchcolor.pipeline as pipeline

    def broken(*args, **kwargs):
        raise ValueError("zero-size array to reduction operation maximum which has no identity")

    monkeypatch.setattr(pipeline, "colorize", broken)
    sketch = ctx.sketch()
    code, out, err = run(capsys, "colorize", sketch, "-m", ctx.model, "-o", ctx.path("o.png"))
    assert_clean(code, out, err, 1, f"{sketch}: unexpected ValueError: zero-size array")
    assert "this is a bug; SKETCHCOLOR_DEBUG=1 shows the traceback" in err
    monkeypatch.setenv("SKETCHCOLOR_DEBUG", "1")
    with pytest.raises(ValueError, match="zero-size"):
        main(["colorize", str(sketch), "-m", str(ctx.model), "-o", str(ctx.path("o.png"))])


def test_unwritable_output_names_the_output_not_a_temporary(capsys, ctx, monkeypatch):
    import tempfile as tempfile_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(ctx.path(".o.png.host~1~abcdefgh.tmp")))

    monkeypatch.setattr(tempfile_module, "mkstemp", refuse)
    code, out, err = run(
        capsys, "colorize", ctx.sketch(), "-m", ctx.model, "--steps", 1, "-o", ctx.path("o.png")
    )
    assert_clean(code, out, err, 1, f"{ctx.path('o.png')}: cannot write here (Permission denied)")
    assert ".tmp" not in err


def test_batch_finishes_good_pages_when_one_fails_unexpectedly(capsys, ctx, monkeypatch):
    import sketchcolor.pipeline as pipeline

    root = _folder(ctx, "mixed")
    for i, size in enumerate([(40, 30), (13, 30), (40, 30), (30, 40)]):
        draw_sketch(size).save(root / f"p{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnothing")
    real = pipeline.sample_batch

    def fragile(sketches, *args, **kwargs):
        if any(getattr(s, "width", None) == 13 for s in sketches):  # the decoded pictures
            raise ValueError("zero-size array to reduction operation")
        return real(sketches, *args, **kwargs)

    monkeypatch.setattr(pipeline, "sample_batch", fragile)
    out_dir = ctx.path("out")
    code, out, err = run(
        capsys, "batch", root, "-o", out_dir, "-m", ctx.model, "--steps", 1, "--format", "json"
    )
    assert code == 1 and "Traceback" not in err
    summary = json.loads(out)
    assert (summary["done"], summary["failed"]) == (3, 2)
    doc = json.loads((out_dir / "sketchcolor-manifest.json").read_text())
    rows = {Path(e["input"]).name: e for e in doc["entries"]}
    assert len(rows) == 5
    assert "unexpected ValueError: zero-size array" in rows["p1.png"]["error"]
    assert rows["broken.png"]["status"] == "failed" and rows["p0.png"]["status"] == "done"
    assert all(line.startswith("sketchcolor: ") for line in err.splitlines() if line.strip())


def test_batch_manifest_is_written_when_interrupted(capsys, ctx, monkeypatch):
    import sketchcolor.cli.batch as batch

    root = _pages(ctx, "a.png", "b.png")
    real = batch._sample_chunk
    calls = []

    def interrupt(chunk, job, bundle, *rest):
        calls.append(chunk)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(chunk, job, bundle, *rest)

    monkeypatch.setattr(batch, "_sample_chunk", interrupt)
    code, out, err = run(capsys, "batch", root, "-o", ctx.path("out"), "-m", ctx.model, "--steps", 1, "-b", 1)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    doc = json.loads(ctx.path("out/sketchcolor-manifest.json").read_text())
    assert [e["status"] for e in doc["entries"]] == ["done", "pending"]


def test_batch_names_colliding_inputs_apart(capsys, ctx):
    root = _folder(ctx, "pages")
    draw_sketch((40, 30)).save(root / "page.png")
    draw_sketch((30, 40)).save(root / "page.jpg")
    out_dir = ctx.path("out")
    code, out, err = run(
        capsys, "batch", root, "-o", out_dir, "-m", ctx.model, "--steps", 1, "--format", "json"
    )
    assert code == 0, err
    assert json.loads(out)["done"] == 2
    assert Image.open(out_dir / "page.png").size == (40, 30)
    assert Image.open(out_dir / "page.jpg.png").size == (30, 40)
    assert "page.jpg: shares its name with page.png; written as page.jpg.png" in err
    # A rerun skips both, because both are really there.
    code, out, err = run(
        capsys, "batch", root, "-o", out_dir, "-m", ctx.model, "--steps", 1, "--format", "json"
    )
    assert code == 0 and json.loads(out)["skipped"] == 2


def test_batch_never_replaces_an_output_it_did_not_make(capsys, ctx):
    root = _pages(ctx, "a.png", "b.png")
    out_dir = _folder(ctx, "out")
    Image.new("RGB", (5, 5), "red").save(out_dir / "a.png")  # someone else's file
    stranger = (out_dir / "a.png").read_bytes()
    code, out, err = run(capsys, "batch", root, "-o", out_dir, "-m", ctx.model, "--steps", 1)
    assert code == 1 and "Traceback" not in err
    assert "a.png: already exists and was not written by sketchcolor; pass --overwrite" in err
    assert (out_dir / "a.png").read_bytes() == stranger and (out_dir / "b.png").exists()


def test_batch_output_inside_the_input_is_skipped_and_said(capsys, ctx):
    root = _pages(ctx, "a.png")
    code, out, err = run(capsys, "batch", root, "-o", root / "colored", "-r", "-m", ctx.model, "--steps", 1)
    assert code == 0, err
    assert "is inside" in err and "skipped while scanning" in err
    code, out, err = run(capsys, "batch", root, "-o", root / "colored", "-r", "-m", ctx.model, "--steps", 1,
                         "--format", "json")  # fmt: skip
    assert code == 0 and json.loads(out)["skipped"] == 1  # its own outputs are not read back as sketches


def test_shards_never_delete_each_others_live_temporaries(capsys, ctx):
    import socket
    import subprocess
    import sys
    import time

    from sketchcolor.io import temporary_prefix

    root = _pages(ctx, "a.png")
    out_dir = _folder(ctx, "out")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        host = temporary_prefix(out_dir / "x.png")[len(".x.png.") :].split("~")[0]
        live_tmp = out_dir / f".b.png.{host}~{live.pid}~abcdefgh.tmp"
        dead_tmp = out_dir / f".c.png.{host}~{dead.pid}~abcdefgh.tmp"
        old_tmp = out_dir / ".d.png.otherhost~1~abcdefgh.tmp"
        young_other = out_dir / ".e.png.otherhost~1~abcdefgh.tmp"
        user_file = out_dir / ".notes.tmp"
        for p in (live_tmp, dead_tmp, old_tmp, young_other, user_file):
            p.write_bytes(b"partial")
        two_days = time.time() - 2 * 24 * 3600
        os.utime(old_tmp, (two_days, two_days))
        code, out, err = run(capsys, "batch", root, "-o", out_dir, "-m", ctx.model, "--steps", 1)
        assert code == 0, err
        assert live_tmp.exists() and young_other.exists() and user_file.exists()
        assert not dead_tmp.exists() and not old_tmp.exists()
        assert "removed 2 temporary file(s)" in err
        assert socket.gethostname()  # the host name is part of every temporary name
    finally:
        live.kill()
        live.wait()


def test_eval_missing_predictions_fail(capsys, ctx):
    truth = _truths(ctx, 3)
    pred = _folder(ctx, "pred")
    Image.open(truth / "t0.png").save(pred / "t0.png")
    code, out, err = run(capsys, "eval", "--pred", pred, "--truth", truth, "--format", "json")
    assert code == 1 and "Traceback" not in err
    doc = json.loads(out)
    assert {f["name"] for f in doc["failures"]} == {"t1", "t2"}
    assert "sketchcolor: failed: t1: no prediction t1.* in" in err


def test_eval_gate_can_fail_with_a_perfect_item(capsys, ctx):
    truth = _truths(ctx, 2)
    pred = _folder(ctx, "pred")
    Image.open(truth / "t0.png").save(pred / "t0.png")  # perfect: 60 dB, not +inf
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(pred / "t1.png")  # 40 vs 90: about 14 dB
    code, out, err = run(
        capsys, "eval", "--pred", pred, "--truth", truth, "--fail-under", "psnr=40", "--format", "json"
    )
    doc = json.loads(out)
    assert code == 1 and "psnr = " in err and "is under 40" in err
    assert doc["rows"][0]["psnr"] == pytest.approx((60 + doc["items"][1]["psnr"]) / 2)


def test_eval_plot_without_matplotlib_fails_before_the_work(capsys, ctx, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    import sketchcolor.evaluation as ev

    ran = []
    monkeypatch.setattr(ev, "evaluate_model", lambda *a, **k: ran.append(1))
    code, out, err = run(
        capsys, "eval", "--data", _test_set(ctx), "-m", ctx.model, "--plot", ctx.path("p.png")
    )
    assert_clean(
        code, out, err, 1, '--plot needs matplotlib, which is not installed (pip install "sketchcolor[plot]")'
    )
    assert ran == []


def test_eval_fid_says_pytorch_fid_is_missing(capsys, ctx, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # as if not installed
    truth = _truths(ctx, 2)
    code, out, err = run(capsys, "eval", "--pred", truth, "--truth", truth, "--require", "fid", "--no-lpips")
    assert_clean(code, out, err, 1, "FID needs the pytorch-fid package, which is not installed")
    assert 'pip install "sketchcolor[fid]"' in err


def test_eval_table_names_checkpoints_by_path(capsys, ctx, monkeypatch):
    from sketchcolor.checkpoint import save_checkpoint

    from .conftest import random_model, tiny_config

    config = tiny_config()
    paths = []
    for step in (1, 2):
        folder = _folder(ctx, f"run/step-{step}")
        paths.append(save_checkpoint(folder / "model.safetensors", random_model(config), config, step=step))
    monkeypatch.chdir(ctx.tmp)
    rel = [p.relative_to(ctx.tmp) for p in paths]
    code, out, err = run(
        capsys, "eval", "--data", _test_set(ctx), "-m", rel[0], "-m", rel[1], "--steps", 1, "--no-lpips"
    )
    assert code == 0, err
    assert "step-1" in out and "step-2" in out


# ----------------------------------------------------------------------------------------------
# The Python API: a SketchcolorError with one line naming the problem, nothing else
# ----------------------------------------------------------------------------------------------

API_CASES = [
    ("missing-sketch", lambda c: dict(sketch=c.path("missing.png")), "missing.png: file not found"),
    ("steps-100000", lambda c: dict(steps=100000), "at most 1000 sampling steps"),
    ("seed-2**70", lambda c: dict(seed=2**70), "seed must be an integer from 0 to 2**64 - 1"),
    ("seed-negative", lambda c: dict(seed=-1), "seed must be an integer from 0 to 2**64 - 1"),
    ("seed-float", lambda c: dict(seed=1.5), "seed must be an integer"),
    ("guidance-inf", lambda c: dict(guidance=float("inf")), "guidance must be finite and >= 0"),
    ("guidance-nan", lambda c: dict(guidance=float("nan")), "guidance must be finite and >= 0"),
    ("sampler-unknown", lambda c: dict(sampler="euler"), "sampler"),
    ("unknown-setting", lambda c: dict(colour="red"), "colour"),
    ("hints-aspect", lambda c: dict(hints=c.hints("sq.png", (40, 40))), "different aspect ratio"),
    (
        "model-missing",
        lambda c: dict(model=c.path("nope.safetensors")),
        "nope.safetensors: checkpoint not found",
    ),
]


@pytest.mark.parametrize(("make", "text"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_raises_one_line_errors(ctx, make, text):
    kwargs = {"sketch": ctx.sketch(), "model": ctx.model, "steps": 1, **make(ctx)}
    with pytest.raises(SketchcolorError) as info:
        sketchcolor.colorize(kwargs.pop("sketch"), **kwargs)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_python_api_takes_degenerate_sketches(ctx):
    for size in ((8, 100000), (1, 1), (3, 700)):
        image = sketchcolor.colorize(ctx.blank(f"d{size[0]}.png", size), model=ctx.model, steps=1)
        assert image.size == size


def test_python_api_hint_radius_follows_the_one_rule():
    from sketchcolor.errors import HintError
    from sketchcolor.pipeline import build_hints

    for bad in (-5, float("nan"), float("inf")):
        with pytest.raises(HintError, match="hint radius must be a finite number of pixels >= 0"):
            build_hints((10, 10), points=["1,1,red"], point_radius=bad)


# ----------------------------------------------------------------------------------------------
# Small things users notice (issue 10, item 8)
# ----------------------------------------------------------------------------------------------


def test_progress_counts_never_show_none():
    from rich.progress import Progress

    from sketchcolor.cli.app import _CountColumn

    with Progress(disable=True) as progress:
        unknown = progress.add_task("x", total=None, completed=3)
        known = progress.add_task("y", total=10, completed=3)
        column = _CountColumn()
        assert column.render(progress.tasks[unknown]).plain == "3"
        assert column.render(progress.tasks[known]).plain == "3/10"


def test_manifest_seconds_are_per_item(capsys, ctx):
    root = _pages(ctx, "a.png", "b.png", "c.png")
    code, out, err = run(capsys, "batch", root, "-o", ctx.path("out"), "-m", ctx.model, "--steps", 2, "-b", 3,
                         "--format", "json")  # fmt: skip
    assert code == 0, err
    total = json.loads(out)["seconds"]
    doc = json.loads(ctx.path("out/sketchcolor-manifest.json").read_text())
    seconds = [e["seconds"] for e in doc["entries"]]
    assert all(s > 0 for s in seconds)
    assert sum(seconds) <= total + 0.05  # each is its own share, not the whole chunk's time


def test_side_files_carry_the_record_and_reproduce(capsys, ctx):
    made = ctx.colorize("--save-flats", "--save-hints", "--hint", "10,10,red", out="side.png")
    flats = made.with_name("side.flats.png")
    assert json.loads(Image.open(flats).text["sketchcolor"])["side_file"] == "flats"
    code, out, err = run(capsys, "colorize", "--from-png", flats, "-o", ctx.path("again.png"), "-q")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(flats)), np.asarray(Image.open(ctx.path("again.flats.png"))))
    assert np.array_equal(
        np.asarray(Image.open(made.with_name("side.hints.png"))),
        np.asarray(Image.open(ctx.path("again.hints.png"))),
    )


def test_resume_keeps_the_original_recipe_and_small_sets_warn(capsys, tmp_path):
    from sketchcolor.checkpoint import read_metadata
    from sketchcolor.config import dumps_toml, to_dict

    from .conftest import tiny_train_config, write_dataset

    data = write_dataset(tmp_path / "pictures", 8)
    cfg_path = tmp_path / "recipe.toml"
    cfg_path.write_text(dumps_toml(to_dict(tiny_train_config(data, tmp_path, **{"optim.steps": 2}))))
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--config", cfg_path, "--out", run_dir, "--set", "data.val_count=10", "-q"
    )
    assert code == 0, err
    assert "validation uses 4 of them, not data.val_count = 10" in err
    first = read_metadata(run_dir / "last.safetensors")["recipe"]
    assert first.startswith("sketchcolor train --config") and "--set data.val_count=10" in first
    code, out, err = run(capsys, "train", "--resume", run_dir, "--steps", 4, "-q")
    assert code == 0, err
    recipe = read_metadata(run_dir / "last.safetensors")["recipe"]
    assert recipe == f"{first} ; resumed: sketchcolor train --resume {run_dir} --steps 4 -q"


def test_a_long_json_stroke_does_not_hang():
    """A stroke across a page is thousands of dots; each is painted in its own window only."""
    import time

    import torch

    from sketchcolor.conditioning import from_points, from_strokes

    start = time.perf_counter()
    layer = from_strokes([([(0, 0), (1023, 1023)], (1.0, 0.0, 0.0), 4)], (1024, 1024))
    assert time.perf_counter() - start < 20  # was about 100 s
    assert layer.mask[0, 0, 512, 512] == 1 and layer.mask[0, 0, 0, 1023] == 0
    # The same pixels as the disc test over the whole image.
    rng = np.random.default_rng(3)
    for radius in (0.0, 1.0, 2.5, 7.0, float("inf")):
        h, w = 23, 31
        points = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)), (0.2, 0.4, 0.6)) for _ in range(4)]
        _, mask = from_points(points, (h, w), radius=radius)
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        want = torch.zeros(h, w, dtype=torch.bool)
        for x, y, _ in points:
            want |= ((xx - float(int(x))) ** 2 + (yy - float(int(y))) ** 2) <= radius**2
            want[int(y), int(x)] = True
        assert torch.equal(mask[0, 0].bool(), want), radius
