import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sketchcolor.checkpoint import FORMAT_VERSION, read_metadata
from sketchcolor.cli import app, main
from sketchcolor.io import read_png_text


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("sketchcolor: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", [[], ["colorize"]])
def test_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    if command:
        assert "sketchcolor colorize sketch.png --hints scribble.png -o out.png" in result.output
        for opt in (
            "--hints",
            "--output",
            "--model",
            "--steps",
            "--sampler",
            "--eta",
            "--guidance",
            "--seed",
            "--device",
            "--quiet",
        ):
            assert opt in result.output


def test_option_choices_are_the_library_choices():
    """The CLI's choice lists are written out for Typer; they must not drift from the library's."""
    from typing import get_args

    from sketchcolor.cli.app import Device, Precision, Sampler
    from sketchcolor.config import PRECISIONS, SamplerName
    from sketchcolor.device import DeviceName

    assert [p.value for p in Precision] == list(PRECISIONS)
    assert [s.value for s in Sampler] == list(get_args(SamplerName))
    assert [d.value for d in Device] == list(get_args(DeviceName))


def test_colorize_writes_png_of_sketch_size(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, hints = sketch_files
    out = tmp_path / "out.png"
    code, stdout, err = run(
        capsys,
        "colorize",
        sketch,
        "--hints",
        hints,
        "-m",
        tiny_checkpoint,
        "-o",
        out,
        "--steps",
        3,
        "--seed",
        5,
        "--format",
        "json",
    )
    assert code == 0, err
    assert Image.open(out).size == Image.open(sketch).size
    record = json.loads(stdout)
    assert record["seed"] == 5 and record["output"] == str(out)
    embedded = json.loads(read_png_text(out)["sketchcolor"])
    assert embedded["seed"] == 5 and embedded["model_digest"] == record["model_digest"]


def test_existing_output_not_overwritten(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "colorize", sketch, "-m", tiny_checkpoint, "-o", out, "--steps", 2)
    assert code == 1
    assert "already exists" in one_line_error(err)
    assert out.read_bytes() == b"precious"
    code, _, err = run(
        capsys, "colorize", sketch, "-m", tiny_checkpoint, "-o", out, "--steps", 2, "--overwrite", "-q"
    )
    assert code == 0 and Image.open(out).size == (96, 64)


def _pickle_ckpt(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(1)}, path)
    return path


def _future_ckpt(tmp_path, tiny_checkpoint):
    meta = read_metadata(tiny_checkpoint)
    meta["format_version"] = str(FORMAT_VERSION + 1)
    path = tmp_path / "future.safetensors"
    save_file(load_file(str(tiny_checkpoint)), str(path), metadata=meta)
    return path


def _text_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    return path


def _truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "missing.png: file not found"),
        ("text", "notes.png: not an image file"),
        ("truncated", "cut.png: corrupt or truncated image"),
        ("pickle", "model.safetensors: is a PyTorch zip/pickle checkpoint"),
        ("future", f"future.safetensors: checkpoint format version {FORMAT_VERSION + 1} is newer"),
        ("sampler", "Invalid value for '--sampler'"),
        ("missing_model", "nope.safetensors: checkpoint not found"),
        ("missing_hints", "nohints.png: file not found"),
    ],
)
def test_bad_input_one_line_error(capsys, tmp_path, tiny_checkpoint, sketch_files, case, expected):
    sketch, _ = sketch_files
    args = ["colorize", sketch, "-m", tiny_checkpoint, "-o", tmp_path / "o.png", "--steps", 2]
    if case == "missing":
        args[1] = tmp_path / "missing.png"
    elif case == "text":
        args[1] = _text_png(tmp_path)
    elif case == "truncated":
        args[1] = _truncated_png(tmp_path)
    elif case == "pickle":
        args[3] = _pickle_ckpt(tmp_path)
    elif case == "future":
        args[3] = _future_ckpt(tmp_path, tiny_checkpoint)
    elif case == "sampler":
        args += ["--sampler", "euler"]
    elif case == "missing_model":
        args[3] = tmp_path / "nope.safetensors"
    elif case == "missing_hints":
        args += ["--hints", tmp_path / "nohints.png"]
    code, _, err = run(capsys, *args)
    assert code == (2 if case == "sampler" else 1)
    assert expected in one_line_error(err)
    assert not (tmp_path / "o.png").exists()


def test_unknown_device_and_unavailable_cuda(capsys, tiny_checkpoint, sketch_files, tmp_path):
    sketch, _ = sketch_files
    code, _, err = run(
        capsys, "colorize", sketch, "-m", tiny_checkpoint, "--device", "tpu", "-o", tmp_path / "o.png"
    )
    assert code == 2 and "--device" in one_line_error(err)
    if not torch.cuda.is_available():
        code, _, err = run(
            capsys, "colorize", sketch, "-m", tiny_checkpoint, "--device", "cuda", "-o", tmp_path / "o.png"
        )
        assert code == 1 and "CUDA is not available" in one_line_error(err)


def test_real_subprocess(tmp_path, tiny_checkpoint, sketch_files):
    sketch, hints = sketch_files
    out = tmp_path / "sub.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sketchcolor",
            "colorize",
            str(sketch),
            "--hints",
            str(hints),
            "--model",
            str(tiny_checkpoint),
            "-o",
            str(out),
            "--steps",
            "2",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (96, 64)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "sketchcolor",
            "colorize",
            str(tmp_path / "none.png"),
            "--model",
            str(tiny_checkpoint),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"sketchcolor: error: {tmp_path / 'none.png'}: file not found"
