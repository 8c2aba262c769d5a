"""Reference pictures on the command line: colorize, batch (one, by name, chapter), eval, --from-png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sketchcolor.checkpoint import save_checkpoint
from sketchcolor.cli import main

from .conftest import draw_sketch, random_model
from .test_reference import ref_config


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def ref_model(tmp_path: Path) -> Path:
    """A random reference model whose reference path shows in 8-bit output."""
    config = ref_config()
    model = random_model(config, seed=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cross" in name or "reference" in name or "conv_out" in name:
                p.mul_(20.0)
    return save_checkpoint(tmp_path / "ref.safetensors", model, config)


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_colorize_with_reference_and_record(capsys, tmp_path, ref_model):
    sketch = tmp_path / "s.png"
    draw_sketch((48, 32)).save(sketch)
    red, blue = solid(tmp_path / "red.png", (220, 30, 30)), solid(tmp_path / "blue.png", (30, 30, 220))
    outs = {}
    for name, ref in (("red", red), ("blue", blue), ("none", None)):
        args = ["colorize", sketch, "-m", ref_model, "-o", tmp_path / f"out-{name}.png", "--steps", 1]
        code, _, err = run(capsys, *args, *(["--reference", ref] if ref else []))
        assert code == 0, err
        outs[name] = pixels(tmp_path / f"out-{name}.png")
    assert np.abs(outs["red"] - outs["blue"]).max() > 0 and np.abs(outs["red"] - outs["none"]).max() > 0
    record = json.loads(Image.open(tmp_path / "out-red.png").text["sketchcolor"])
    refs = [e for e in record["inputs"] if e["role"] == "reference"]
    assert len(refs) == 1 and refs[0]["rel"] == "red.png" and len(refs[0]["digest"]) == 16
    assert record["reference_scale"] == 1.0 and record["reference_digest"]


def test_reference_snap_paints_one_colour_regions_in_the_reference_colours(capsys, tmp_path, ref_model):
    sketch = tmp_path / "s.png"
    draw_sketch((96, 64)).save(sketch)
    ref = tmp_path / "swatches.png"
    swatches = Image.new("RGB", (90, 30), (230, 190, 40))
    swatches.paste((40, 120, 200), (45, 0, 90, 30))
    swatches.save(ref)
    allowed = {(230, 190, 40), (40, 120, 200), (255, 255, 255)}

    def colours(out: Path) -> set[tuple[int, ...]]:
        # Pixels well inside the three regions (the outlines are 2 px wide).
        picture = pixels(out)
        samples = [picture[32, 25], picture[32, 70], picture[4, 4], picture[60, 92]]
        return {tuple(int(v) for v in px) for px in samples}

    common = ["colorize", sketch, "-m", ref_model, "--reference", ref, "--flat", "--steps", 1]
    code, _, err = run(capsys, *common, "--reference-snap", 1000, "-o", tmp_path / "snap.png")
    assert code == 0, err
    assert colours(tmp_path / "snap.png") <= allowed
    code, _, err = run(capsys, *common, "--reference-snap", 0, "-o", tmp_path / "off.png")
    assert code == 0, err
    assert not colours(tmp_path / "off.png") <= allowed  # the random model's own colours
    record = json.loads(Image.open(tmp_path / "snap.png").text["sketchcolor"])
    assert record["reference_snap"] == 1000.0
    code, _, err = run(capsys, "colorize", "--from-png", tmp_path / "snap.png", "-o", tmp_path / "again.png")
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "snap.png"), pixels(tmp_path / "again.png"))
    code, _, err = run(capsys, *common, "--reference-snap", -1, "-o", tmp_path / "bad.png")
    assert code == 2 and "--reference-snap" in err and not (tmp_path / "bad.png").exists()


def test_from_png_reproduces_a_reference_output_elsewhere(capsys, tmp_path, ref_model, monkeypatch):
    sketch = tmp_path / "s.png"
    draw_sketch((48, 32)).save(sketch)
    ref = solid(tmp_path / "refs" / "hero.png", (30, 160, 40))
    out = tmp_path / "out.png"
    code, _, err = run(
        capsys, "colorize", sketch, "-m", ref_model, "--reference", ref, "--reference-scale", 2.5,
        "--hint", "10,10,#d03030", "-o", out, "--steps", 2,
    )  # fmt: skip
    assert code == 0, err
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run(capsys, "colorize", "--from-png", out, "-o", "again.png")
    assert code == 0, err
    assert np.array_equal(pixels(out), pixels(elsewhere / "again.png"))
    # A changed reference is named, and nothing is written.
    solid(ref, (200, 10, 200))
    code, _, err = run(capsys, "colorize", "--from-png", out, "-o", "third.png")
    assert code == 1 and "hero.png: changed since" in err and not (elsewhere / "third.png").exists()
    # Options the record fixes cannot be given again.
    code, _, err = run(capsys, "colorize", "--from-png", out, "--reference-scale", 3, "-o", "x.png")
    assert code == 2 and "drop --reference-scale" in err


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("old-model", "takes no reference picture"),
        ("missing", "ghost.png: file not found"),
        ("corrupt", "not an image file"),
        ("scale", "--reference-scale"),
    ],
)
def test_bad_references_are_one_line_errors(capsys, tmp_path, ref_model, tiny_checkpoint, case, text):
    sketch = tmp_path / "s.png"
    draw_sketch((48, 32)).save(sketch)
    ref = solid(tmp_path / "r.png", (200, 0, 0))
    model = ref_model
    extra: list[object] = []
    if case == "old-model":
        model = tiny_checkpoint
    elif case == "missing":
        ref = tmp_path / "ghost.png"
    elif case == "corrupt":
        ref.write_bytes(b"not a picture at all")
    elif case == "scale":
        extra = ["--reference-scale", "-1"]
    code, out, err = run(
        capsys,
        "colorize",
        sketch,
        "-m",
        model,
        "--reference",
        ref,
        "-o",
        tmp_path / "o.png",
        "--steps",
        1,
        *extra,
    )
    assert code in (1, 2) and text in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("case", "text"), [("old-model", "takes no reference picture"), ("corrupt", "not an image file")]
)
def test_batch_refuses_a_bad_shared_reference_before_any_page(
    capsys, tmp_path, ref_model, tiny_checkpoint, case, text
):
    _pages(tmp_path / "in", n=3)
    ref = solid(tmp_path / "r.png", (200, 0, 0))
    model = tiny_checkpoint if case == "old-model" else ref_model
    if case == "corrupt":
        ref.write_bytes(b"not a picture at all")
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", model,
                       "--reference", ref, "--steps", 1)  # fmt: skip
    # One line, not the same failure once per page, and nothing written.
    assert code == 1 and text in err
    assert [line for line in err.splitlines() if line.strip()] == [
        next(ln for ln in err.splitlines() if text in ln)
    ]
    assert not (tmp_path / "out").exists()
    if case == "old-model":  # by name or by chapter alike
        (tmp_path / "refs").mkdir()
        solid(tmp_path / "refs" / "p1.png", (0, 0, 200))
        for extra in (["--reference-dir", tmp_path / "refs"], ["--chapter"]):
            code, _, err = run(
                capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", model, "--steps", 1, *extra
            )
            assert (
                code == 1 and err.count("takes no reference picture") == 1 and not (tmp_path / "out").exists()
            )


def test_batch_with_one_unreadable_reference_by_name_fails_that_page_only(capsys, tmp_path, ref_model):
    _pages(tmp_path / "in", n=3)
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "p1.png").write_bytes(b"broken")
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", ref_model,
                       "--reference-dir", tmp_path / "refs", "--steps", 1)  # fmt: skip
    assert code == 1 and "p1.png" in err and "not an image file" in err
    manifest = json.loads((tmp_path / "out" / "sketchcolor-manifest.json").read_text())
    assert {Path(e["input"]).name: e["status"] for e in manifest["entries"]} == {
        "p0.png": "done", "p1.png": "failed", "p2.png": "done"
    }  # fmt: skip


def test_greyscale_reference_warns(capsys, tmp_path, ref_model):
    sketch = tmp_path / "s.png"
    draw_sketch((48, 32)).save(sketch)
    grey = solid(tmp_path / "grey.png", (128, 128, 128))
    code, _, err = run(
        capsys, "colorize", sketch, "-m", ref_model, "--reference", grey, "-o", tmp_path / "o.png"
    )
    assert code == 0 and "grey.png is greyscale" in err
    # A small coloured figure on white (2 % of the picture, as many emoji) is not greyscale.
    figure = Image.new("RGB", (100, 100), "white")
    figure.paste((200, 40, 40), (45, 45, 59, 59))
    figure.save(tmp_path / "figure.png")
    code, _, err = run(
        capsys,
        "colorize",
        sketch,
        "-m",
        ref_model,
        "--reference",
        tmp_path / "figure.png",
        "-o",
        tmp_path / "f.png",
    )
    assert code == 0 and "greyscale" not in err


def _pages(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pages = []
    for i in range(n):
        path = folder / f"p{i}.png"
        draw_sketch((48, 32)).save(path)
        pages.append(path)
    return pages


def test_batch_reference_for_all_and_by_name(capsys, tmp_path, ref_model):
    _pages(tmp_path / "in")
    red = solid(tmp_path / "red.png", (220, 30, 30))
    solid(tmp_path / "refs" / "p1.jpg", (30, 30, 220))
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", ref_model,
                       "--reference", red, "--reference-dir", tmp_path / "refs", "--steps", 1)  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "sketchcolor-manifest.json").read_text())
    refs = {Path(e["input"]).name: Path(e["reference"]).name for e in manifest["entries"]}
    assert refs == {"p0.png": "red.png", "p1.png": "p1.jpg", "p2.png": "red.png"}
    # Same sketch, same reference -> same picture as colorize with that reference and seed.
    out = {p: pixels(tmp_path / "out" / f"{p}.png") for p in ("p0", "p1", "p2")}
    assert np.abs(out["p0"] - out["p1"]).max() > 0
    seed = next(e["seed"] for e in manifest["entries"] if e["input"].endswith("p1.png"))
    code, _, err = run(capsys, "colorize", tmp_path / "in" / "p1.png", "-m", ref_model, "--reference",
                       tmp_path / "refs" / "p1.jpg", "--seed", seed, "-o", tmp_path / "single.png", "--steps", 1)  # fmt: skip
    assert code == 0, err
    assert np.abs(pixels(tmp_path / "single.png") - out["p1"]).max() <= 1
    # Batch outputs reproduce with their reference, from their own record.
    code, _, err = run(
        capsys, "colorize", "--from-png", tmp_path / "out" / "p1.png", "-o", tmp_path / "re.png"
    )
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "re.png"), out["p1"])


def test_batch_reads_a_shared_reference_once(capsys, tmp_path, ref_model, monkeypatch):
    import sketchcolor.pipeline as pipeline

    _pages(tmp_path / "in", n=4)
    grey = solid(tmp_path / "grey.png", (128, 128, 128))
    calls = []
    real = pipeline.reference_palette
    monkeypatch.setattr(pipeline, "reference_palette", lambda rgb: calls.append(1) or real(rgb))
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", ref_model,
                       "--reference", grey, "--steps", 1, "--batch-size", 2, "--num-samples", 2)  # fmt: skip
    assert code == 0, err
    # Four pages, two samples each, one reference: read (and warned about) once.
    assert len(calls) == 1
    assert err.count("grey.png is greyscale") == 1
    # Every page's record still names it, with its digest, beside the pages.
    for page in range(4):
        record = json.loads(Image.open(tmp_path / "out" / f"p{page}-1.png").text["sketchcolor"])
        entry = next(e for e in record["inputs"] if e["role"] == "reference")
        assert entry["path"] == str(grey) and len(entry["digest"]) > 0 and entry["rel"] == "../grey.png"
    # The cache keeps the last files used, so a --reference-dir of one per page stays bounded.
    from sketchcolor.cli.colorize import ReferenceCache
    from sketchcolor.pipeline import load_model

    cache = ReferenceCache(load_model(str(ref_model), "cpu"), size=2)
    paths = [solid(tmp_path / f"r{i}.png", (200, 40 * i, 30)) for i in range(3)]
    for path in [*paths, paths[2], paths[0]]:
        cache.get(path)
    assert len(calls) == 1 + 4  # r0, r1, r2 read; r2 kept; r0 had been dropped and is read again
    # A file changed since it was read is read again, and its new colours are used.
    first, _ = cache.get(paths[0])
    solid(paths[0], (20, 200, 20), (41, 30))
    changed, _ = cache.get(paths[0])
    assert len(calls) == 6 and changed.digest != first.digest


def test_batch_chapter_mode(capsys, tmp_path, ref_model):
    _pages(tmp_path / "in", n=3)
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", ref_model,
                       "--chapter", "--steps", 1, "--batch-size", 2)  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "sketchcolor-manifest.json").read_text())
    refs = {Path(e["input"]).name: e["reference"] for e in manifest["entries"]}
    first = str(tmp_path / "out" / "p0.png")
    assert refs == {"p0.png": None, "p1.png": first, "p2.png": first}
    record = json.loads(Image.open(tmp_path / "out" / "p2.png").text["sketchcolor"])
    entry = next(e for e in record["inputs"] if e["role"] == "reference")
    assert entry["rel"] == "p0.png"  # the first page's result, beside it
    # A second shard can use the first page's result once it exists ...
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "-m", ref_model,
                       "--chapter", "--steps", 1, "--shard", "2/2", "--overwrite")  # fmt: skip
    assert code == 0, err
    # ... and says what to do when it does not.
    code, _, err = run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "fresh", "-m", ref_model,
                       "--chapter", "--steps", 1, "--shard", "2/2")  # fmt: skip
    assert code == 1 and "first page's result does not exist yet" in err and "shard 1" in err


def test_eval_self_warped_and_reference_dir(capsys, tmp_path, ref_model, tiny_checkpoint):
    data = tmp_path / "test"
    for i in range(3):
        for kind in ("sketch", "color"):
            (data / kind).mkdir(parents=True, exist_ok=True)
        draw_sketch((48, 32)).save(data / "sketch" / f"i{i}.png")
        solid(data / "color" / f"i{i}.png", (40 * i + 60, 90, 160), (48, 32))
        solid(data / "refs" / f"i{i}.png", (200, 40 * i, 40))
    base = ["eval", "--data", data, "-m", ref_model, "--steps", 1, "--no-lpips", "--format", "json"]
    results = {}
    for name, extra in (("none", []), ("warped", ["--reference-mode", "self-warped"]),
                        ("dir", ["--reference-dir", data / "refs"])):  # fmt: skip
        code, out, err = run(capsys, *base, *extra)
        assert code == 0, err
        row = json.loads(out)["rows"][0]
        assert row["n_scored"] == 3
        results[name] = row
    assert results["warped"]["reference"] == "self-warped" and results["dir"]["reference"] == "dir"
    assert results["warped"]["ciede2000"] != results["none"]["ciede2000"]
    assert results["dir"]["ciede2000"] != results["warped"]["ciede2000"]
    again = run(capsys, *base, "--reference-mode", "self-warped")[1]
    assert json.loads(again)["rows"][0]["ciede2000"] == results["warped"]["ciede2000"]  # fixed warps
    code, _, err = run(
        capsys, "eval", "--data", data, "-m", tiny_checkpoint, "--reference-mode", "self-warped"
    )
    assert code == 1 and "takes no reference picture" in err


def test_eval_names_the_item_whose_reference_is_greyscale(capsys, tmp_path, ref_model):
    data = tmp_path / "test"
    for name, colour in (("grey", (128, 128, 128)), ("red", (200, 40, 40))):
        for kind in ("sketch", "color", "refs"):
            (data / kind).mkdir(parents=True, exist_ok=True)
        draw_sketch((48, 32)).save(data / "sketch" / f"{name}.png")
        solid(data / "color" / f"{name}.png", colour, (48, 32))
        solid(data / "refs" / f"{name}.png", colour)
    base = ["eval", "--data", data, "-m", ref_model, "--steps", 1, "--no-lpips", "--format", "json"]
    code, _, err = run(capsys, *base, "--reference-mode", "self-warped")
    assert code == 0, err
    assert "the self-warped reference of grey is greyscale" in err and "of red" not in err
    code, _, err = run(capsys, *base, "--reference-dir", data / "refs")
    assert code == 0, err
    assert f"{data / 'refs' / 'grey.png'} is greyscale" in err and "red.png" not in err
