"""`sketchcolor eval` and `sketchcolor.evaluation`: known answers, thresholds, failures kept visible."""

from __future__ import annotations

import csv
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sketchcolor import evaluation as ev
from sketchcolor.checkpoint import save_checkpoint
from sketchcolor.cli import main
from sketchcolor.compose import sketch_lightness
from sketchcolor.conditioning import LINE_LEVEL
from sketchcolor.config import HintConfig
from sketchcolor.errors import ConfigError
from sketchcolor.io import load_rgb
from sketchcolor.metrics import MetricUnavailableError
from sketchcolor.pipeline import derive_seed

from .conftest import random_model, tiny_config, write_dataset


@pytest.fixture(autouse=True)
def _offline_and_light(monkeypatch, tmp_path):
    """No network, an empty torch hub cache (no LPIPS/FID weights by default), one CPU thread."""

    def refuse(*args, **kwargs):
        raise AssertionError("eval tried to use the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--format", "json")
    return code, json.loads(out), err


def save_u8(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="RGB").save(path)
    return path


def psnr_u8(pred: np.ndarray, truth: np.ndarray) -> float:
    mse = np.mean((pred.astype(np.float64) / 255 - truth.astype(np.float64) / 255) ** 2)
    return 10 * math.log10(1 / mse)


# --- Mode A: known answers ----------------------------------------------------------------------


def test_known_pairs_give_the_known_psnr(capsys, tmp_path):
    rng = np.random.default_rng(0)
    truth_a = rng.integers(0, 200, (32, 40, 3))
    pred_a = truth_a + rng.integers(0, 50, (32, 40, 3))  # varied offsets, no clipping
    truth_b = np.zeros((32, 40, 3))
    pred_b = np.full((32, 40, 3), 51)  # 51/255 = 0.2 everywhere: 20 log10(5) dB
    for name, pred, truth in (("a", pred_a, truth_a), ("sub/b", pred_b, truth_b)):
        save_u8(tmp_path / "pred" / f"{name}.png", pred)
        save_u8(tmp_path / "truth" / f"{name}.png", truth)
    code, doc, _ = run_json(capsys, "eval", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth")
    assert code == 0
    items = {item["name"]: item for item in doc["items"]}
    assert items["a"]["psnr"] == pytest.approx(psnr_u8(pred_a, truth_a), rel=1e-6)
    assert items["sub/b"]["psnr"] == pytest.approx(20 * math.log10(5), rel=1e-6)
    (row,) = doc["rows"]
    expected_mean = (psnr_u8(pred_a, truth_a) + psnr_u8(pred_b, truth_b)) / 2
    assert row["psnr"] == pytest.approx(expected_mean, rel=1e-6)
    assert (row["n_scored"], row["n_failed"], row["n_items"]) == (2, 0, 2)
    assert doc["ok"] is True and doc["failures"] == []


def test_identical_images_have_zero_colour_error(capsys, tmp_path):
    picture = np.random.default_rng(1).integers(0, 256, (32, 32, 3))
    save_u8(tmp_path / "pred" / "x.png", picture)
    save_u8(tmp_path / "truth" / "x.png", picture)
    code, doc, _ = run_json(capsys, "eval", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth")
    assert code == 0
    (row,) = doc["rows"]
    assert row["ciede2000"] == 0.0
    assert row["ssim"] == pytest.approx(1.0)
    assert row["psnr"] == ev.PSNR_CAP_DB == 60.0  # capped, not +inf: a mean stays finite


@pytest.fixture
def offset_pair(tmp_path) -> tuple[Path, Path]:
    """One prediction at 51/255 from black: PSNR 13.98 dB, clearly non-zero colour error."""
    save_u8(tmp_path / "pred" / "p.png", np.full((32, 32, 3), 51))
    save_u8(tmp_path / "truth" / "p.png", np.zeros((32, 32, 3)))
    return tmp_path / "pred", tmp_path / "truth"


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["--fail-under", "psnr=13"], 0),
        (["--fail-under", "psnr=14"], 1),
        (["--fail-over", "ciede2000=100"], 0),
        (["--fail-over", "ciede2000=1"], 1),
        (["--fail-under", "ssim=0", "--fail-over", "ciede2000=1"], 1),
    ],
)
def test_thresholds_flip_the_exit_code(capsys, offset_pair, flags, code):
    pred, truth = offset_pair
    got, out, err = run(capsys, "eval", "--pred", pred, "--truth", truth, *flags)
    assert got == code
    if code:
        assert "sketchcolor: threshold not met: " in err
        assert ("psnr = 13.98 is under 14" in err) or ("ciede2000" in err and "is over 1" in err)
    else:
        assert "threshold not met" not in err


def test_threshold_violations_are_in_the_json_report(capsys, offset_pair, tmp_path):
    pred, truth = offset_pair
    code, doc, _ = run_json(capsys, "eval", "--pred", pred, "--truth", truth, "--fail-under", "psnr=14")
    assert code == 1
    assert doc["ok"] is False
    assert doc["thresholds"] == {"fail_under": {"psnr": 14.0}, "fail_over": {}}
    assert doc["violations"] == [f"psnr = 13.98 is under 14 (predictions {pred})"]


def test_unknown_threshold_metric_is_a_usage_error_listing_valid_names(capsys, offset_pair):
    pred, truth = offset_pair
    code, _, err = run(capsys, "eval", "--pred", pred, "--truth", truth, "--fail-under", "psnrr=18")
    assert code == 2
    assert "unknown metric 'psnrr'" in err and "psnr, ssim, ciede2000, hint_ciede2000, lpips, fid" in err
    code, _, err = run(capsys, "eval", "--pred", pred, "--truth", truth, "--fail-over", "ciede2000")
    assert code == 2 and "NAME=VALUE" in err


def test_a_threshold_on_a_metric_not_computed_fails(capsys, offset_pair):
    pred, truth = offset_pair
    code, _, err = run(capsys, "eval", "--pred", pred, "--truth", truth, "--fail-over", "lpips=0.5")
    assert code == 1
    assert "lpips was not computed" in err


def test_colourfulness_per_item_and_the_ratio_of_means_in_the_rows(capsys, tmp_path):
    # An output of about half the truth's chroma: red (255, 0, 0) against (255, 128, 128), which
    # has opponent values rg = 127, yb = 63.5; a grey output of a grey truth adds 0 to both.
    save_u8(tmp_path / "pred" / "a.png", np.tile(np.array([255, 128, 128]), (32, 32, 1)))
    save_u8(tmp_path / "truth" / "a.png", np.tile(np.array([255, 0, 0]), (32, 32, 1)))
    save_u8(tmp_path / "pred" / "g.png", np.full((32, 32, 3), 90))
    save_u8(tmp_path / "truth" / "g.png", np.full((32, 32, 3), 128))
    table = tmp_path / "rows.csv"
    code, doc, out = run_json(
        capsys, "eval", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth", "--csv", table
    )
    assert code == 0
    items = {item["name"]: item for item in doc["items"]}
    red = 0.3 * math.hypot(255, 127.5)
    pale = 0.3 * math.hypot(127, 63.5)
    # (images are read as float32, hence the tolerance)
    assert items["a"]["colourfulness_truth"] == pytest.approx(red, rel=1e-6)
    assert items["a"]["colourfulness"] == pytest.approx(pale, rel=1e-6)
    assert items["g"]["colourfulness"] == items["g"]["colourfulness_truth"] == 0.0
    (row,) = doc["rows"]
    assert row["colourfulness"] == pytest.approx(pale / 2)
    assert row["colourfulness_truth"] == pytest.approx(red / 2)
    assert row["colourfulness_ratio"] == pytest.approx(pale / red)  # mean over mean
    # The older fields are all still there; in the CSV the new columns come after them.
    for key in ("psnr", "ssim", "ciede2000", "n_scored", "n_failed"):
        assert key in row
    header = table.read_text().splitlines()[0].split(",")
    assert header[-3:] == ["colourfulness", "colourfulness_truth", "colourfulness_ratio"]
    # Thresholds take the new names.
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    code, _, err = run(
        capsys, "eval", "--pred", pred, "--truth", truth, "--fail-under", "colourfulness_ratio=0.7"
    )
    assert code == 1 and f"colourfulness_ratio = {pale / red:.4g} is under 0.7" in err
    code, _, err = run(
        capsys, "eval", "--pred", pred, "--truth", truth, "--fail-under", "colourfulness_ratio=0.4"
    )
    assert code == 0, err


def test_colourfulness_ratio_is_nan_when_every_truth_is_grey():
    item = ev.ItemResult("x", {"psnr": 20.0, "colourfulness": 5.0, "colourfulness_truth": 0.0})
    means = ev.EvalReport((item,)).means()
    assert means["colourfulness"] == 5.0 and math.isnan(means["colourfulness_ratio"])
    assert "colourfulness_ratio" not in ev.EvalReport((ev.ItemResult("y", error="bad"),)).means()


# --- Bad input: listed, counted, not dropped --------------------------------------------------


def test_bad_items_are_listed_counted_and_left_out_of_the_means(capsys, tmp_path):
    good = np.full((32, 32, 3), 60)
    save_u8(tmp_path / "pred" / "good.png", good)
    save_u8(tmp_path / "truth" / "good.png", np.zeros((32, 32, 3)))
    save_u8(tmp_path / "pred" / "orphan.png", good)  # no ground truth
    save_u8(tmp_path / "pred" / "small.png", np.zeros((16, 16, 3)))  # size mismatch
    save_u8(tmp_path / "truth" / "small.png", np.zeros((32, 32, 3)))
    (tmp_path / "pred" / "broken.png").write_bytes(b"this is not a PNG")  # unreadable
    save_u8(tmp_path / "truth" / "broken.png", np.zeros((32, 32, 3)))
    save_u8(tmp_path / "truth" / "extra.png", np.zeros((32, 32, 3)))  # truth without prediction
    report = tmp_path / "report.json"
    table = tmp_path / "rows.csv"
    code, doc, err = run_json(
        capsys, "eval", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
        "--json", report, "--csv", table,
    )  # fmt: skip
    assert code == 1
    (row,) = doc["rows"]
    assert (row["n_items"], row["n_scored"], row["n_failed"], row["n_unmatched_truths"]) == (5, 1, 4, 1)
    assert row["psnr"] == pytest.approx(psnr_u8(good, np.zeros_like(good)), rel=1e-6)
    reasons = {f["name"]: f["error"] for f in doc["failures"]}
    assert set(reasons) == {"orphan", "small", "broken", "extra"}
    assert "no prediction extra.* in" in reasons["extra"]
    assert "no ground truth" in reasons["orphan"]
    assert "16x16" in reasons["small"] and "32x32" in reasons["small"]
    assert "not an image" in reasons["broken"]
    for name in ("orphan", "small", "broken", "extra"):
        assert name in err
    assert "sketchcolor: failed: " in err
    # The files say the same.
    assert json.loads(report.read_text())["rows"][0]["n_failed"] == 4
    (csv_row,) = list(csv.DictReader(table.open()))
    assert (csv_row["n_scored"], csv_row["n_failed"]) == ("1", "4")
    assert float(csv_row["psnr"]) == pytest.approx(row["psnr"])


def test_failures_show_in_the_human_table(capsys, tmp_path):
    save_u8(tmp_path / "pred" / "a.png", np.zeros((32, 32, 3)))
    save_u8(tmp_path / "pred" / "b.png", np.zeros((32, 32, 3)))
    save_u8(tmp_path / "truth" / "a.png", np.full((32, 32, 3), 10))
    code, out, err = run(capsys, "eval", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth")
    assert code == 1
    assert "failed" in out and "scored" in out and "psnr" in out
    assert "b: no ground truth" in err


def test_empty_folder_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / "pred").mkdir()
    save_u8(tmp_path / "truth" / "a.png", np.zeros((32, 32, 3)))
    code, _, err = run(capsys, "eval", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("sketchcolor: error: ") and "no prediction images found" in lines[0]


def test_side_files_are_skipped_and_hints_give_the_hint_error(tmp_path):
    truth = np.full((32, 32, 3), 200)
    save_u8(tmp_path / "truth" / "a.png", truth)
    save_u8(tmp_path / "pred" / "a.png", truth)
    save_u8(tmp_path / "pred" / "a.flats.png", truth)  # colorize --save-flats side file
    hints = np.zeros((32, 32, 4), np.uint8)
    hints[4:8, 4:8] = (200, 200, 200, 255)  # hinted with the exact colour
    Image.fromarray(hints, mode="RGBA").save((tmp_path / "hints").mkdir() or tmp_path / "hints" / "a.png")
    report = ev.evaluate_outputs(tmp_path / "pred", tmp_path / "truth", hints_dir=tmp_path / "hints")
    (item,) = report.items
    assert item.hints == "given" and item.hint_pixels == 16
    assert item.metrics["hint_ciede2000"] == pytest.approx(0.0, abs=1e-9)
    assert any("side files" in note for note in report.notes)


# --- Synthetic hints --------------------------------------------------------------------------


def test_synthetic_hints_are_fixed_by_seed_off_the_lines_and_truth_coloured(tmp_path):
    root = write_dataset(tmp_path / "set", n=1, paired=True, size=64)
    truth = load_rgb(root / "color" / "img000.png")
    sketch = load_rgb(root / "sketch" / "img000.png")
    config = HintConfig(max_strokes=8, p_none=0.0)

    def draw(key: str, strokes: int | None = None):
        seed = derive_seed(0, f"hints/{key}")
        return ev.synthetic_hints(truth, sketch, config, seed, resolution=32, num_strokes=strokes)

    first, again, other = draw("img000"), draw("img000"), draw("img001")
    assert torch.equal(first.mask, again.mask) and torch.equal(first.rgb, again.rgb)
    assert not torch.equal(first.mask, other.mask)
    assert first.size == (64, 64) and first.mask.sum() > 0
    assert not first.mask.bool()[sketch_lightness(sketch) < LINE_LEVEL].any()
    hinted = first.mask.bool().expand_as(truth)
    assert torch.equal(first.rgb[hinted], truth[hinted])
    assert set(first.mask.unique().tolist()) <= {0.0, 1.0}
    # A sweep adds strokes to the same picture: 2 strokes are the first 2 of 4.
    two, four = draw("img000", 2), draw("img000", 4)
    assert (two.mask <= four.mask).all() and two.mask.sum() < four.mask.sum()
    assert draw("img000", 0).is_empty


# --- Mode B: running models -------------------------------------------------------------------


@pytest.fixture
def test_set(tmp_path) -> Path:
    return write_dataset(tmp_path / "test", n=3, paired=True, size=40)


def test_model_eval_scores_every_item(capsys, test_set, tiny_checkpoint):
    code, doc, _ = run_json(
        capsys, "eval", "--data", test_set, "--model", tiny_checkpoint, "--steps", "2", "--device", "cpu"
    )
    assert code == 0
    (row,) = doc["rows"]
    assert (row["n_scored"], row["n_failed"], row["step"]) == (3, 0, 0)
    for metric in ("psnr", "ssim", "ciede2000"):
        assert math.isfinite(row[metric])
    assert all(item["hints"] == "synthetic" and item["status"] == "scored" for item in doc["items"])
    assert row["hints"] == "synthetic" and row["max_strokes"] == 8
    # The same seed gives the same scores; the seed per item comes from the name.
    assert [i["seed"] for i in doc["items"]] == [derive_seed(0, f"img{k:03d}") for k in range(3)]


def test_hint_sweep_gives_one_row_per_stroke_count(capsys, test_set, tiny_checkpoint, tmp_path):
    out = tmp_path / "sweep.csv"
    code, doc, _ = run_json(
        capsys, "eval", "--data", test_set, "-m", tiny_checkpoint, "--steps", "1", "--device", "cpu",
        "--hints-sweep", "0,2", "--csv", out,
    )  # fmt: skip
    assert code == 0
    assert [r["strokes"] for r in doc["rows"]] == [0, 2]
    no_hints, two = doc["rows"]
    assert no_hints["hint_ciede2000"] is None and no_hints["n_hinted"] == 0
    assert math.isfinite(two["hint_ciede2000"]) and two["n_hinted"] == 3
    assert [r["strokes"] for r in csv.DictReader(out.open())] == ["0", "2"]


def test_several_checkpoints_give_one_row_each_and_a_plot(capsys, test_set, tiny_checkpoint, tmp_path):
    config = tiny_config()
    later = save_checkpoint(tmp_path / "step-100.safetensors", random_model(config, seed=1), config, step=100)
    plot = tmp_path / "curve.png"
    code, doc, _ = run_json(
        capsys, "eval", "--data", test_set, "-m", tiny_checkpoint, "-m", later, "--steps", "1",
        "--device", "cpu", "--plot", plot,
    )  # fmt: skip
    assert code == 0
    assert [r["step"] for r in doc["rows"]] == [0, 100]
    assert [Path(r["model"]).name for r in doc["rows"]] == ["tiny.safetensors", "step-100.safetensors"]
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.width > 100


def test_model_eval_counts_a_sketch_without_truth_and_a_size_mismatch(capsys, test_set, tiny_checkpoint):
    save_u8(test_set / "sketch" / "lonely.png", np.full((40, 40, 3), 255))
    save_u8(test_set / "sketch" / "odd.png", np.full((40, 40, 3), 255))
    save_u8(test_set / "color" / "odd.png", np.full((40, 48, 3), 255))
    code, doc, err = run_json(capsys, "eval", "--data", test_set, "-m", tiny_checkpoint, "--steps", "1")
    assert code == 1
    (row,) = doc["rows"]
    assert (row["n_scored"], row["n_failed"]) == (3, 2)
    assert {f["name"] for f in doc["failures"]} == {"lonely", "odd"}
    assert "lonely" in err and "odd" in err


def test_model_eval_names_the_item_whose_sketch_is_blank(capsys, test_set, tiny_checkpoint):
    save_u8(test_set / "sketch" / "empty.png", np.full((40, 40, 3), 255))
    save_u8(test_set / "color" / "empty.png", np.full((40, 40, 3), 200))
    code, doc, err = run_json(
        capsys, "eval", "--data", test_set, "-m", tiny_checkpoint, "--steps", "1", "--no-lpips"
    )
    assert code == 0 and doc["rows"][0]["n_scored"] == 4
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == ["sketchcolor: warning: empty has no lines (a blank page?): the colours are the model's "
                        "guess, with nothing to follow"]  # fmt: skip


def test_model_eval_needs_a_test_set_layout(capsys, tmp_path, tiny_checkpoint):
    (tmp_path / "flat").mkdir()
    code, _, err = run(capsys, "eval", "--data", tmp_path / "flat", "-m", tiny_checkpoint)
    assert code == 1 and "sketch/ and color/" in err


def test_usage_errors_exit_2(capsys, offset_pair, tiny_checkpoint, tmp_path):
    pred, truth = offset_pair
    assert run(capsys, "eval")[0] == 2
    assert run(capsys, "eval", "--pred", pred)[0] == 2
    assert run(capsys, "eval", "--pred", pred, "--truth", truth, "--data", tmp_path)[0] == 2
    assert run(capsys, "eval", "--pred", pred, "--truth", truth, "--hints-sweep", "0,2")[0] == 2
    code, _, err = run(capsys, "eval", "--data", tmp_path, "-m", tiny_checkpoint, "--hints-sweep", "1,x")
    assert code == 2 and "stroke counts" in err


# --- LPIPS -------------------------------------------------------------------------------------

# torchvision alexnet().features convolutions: (index, out_channels, in_channels, kernel).
_ALEXNET_CONVS = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    """A random torchvision-style AlexNet state dict, written in the test (fixed seed)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for index, out_ch, in_ch, k in _ALEXNET_CONVS:
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, k, k, generator=gen) * math.sqrt(
            2 / (in_ch * k * k)
        )
        state[f"features.{index}.bias"] = torch.zeros(out_ch)
    path = tmp_path_factory.mktemp("alexnet") / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    return path


def test_lpips_with_a_given_weight_file(capsys, offset_pair, alexnet_file):
    pred, truth = offset_pair
    code, doc, err = run_json(
        capsys,
        "eval",
        "--pred",
        pred,
        "--truth",
        truth,
        "--lpips-weights",
        alexnet_file,
        "--require",
        "lpips",
    )
    assert code == 0 and "lpips skipped" not in err
    (row,) = doc["rows"]
    assert math.isfinite(row["lpips"]) and row["lpips"] > 0
    assert doc["parameters"]["lpips_backbone"] == str(alexnet_file)


def test_lpips_without_weights_is_skipped_with_a_warning(capsys, offset_pair, tmp_path):
    pred, truth = offset_pair
    missing = tmp_path / "nowhere" / "alexnet.pth"
    code, doc, err = run_json(capsys, "eval", "--pred", pred, "--truth", truth, "--lpips-weights", missing)
    assert code == 0
    assert "lpips" not in doc["rows"][0]
    warning = [line for line in err.splitlines() if "lpips skipped" in line]
    assert warning and warning[0].startswith("sketchcolor: warning: lpips skipped: ")
    assert str(missing) in warning[0] and "download" in warning[0]


def test_required_lpips_without_weights_fails_naming_the_path(capsys, offset_pair, tmp_path):
    pred, truth = offset_pair
    missing = tmp_path / "nowhere" / "alexnet.pth"
    code, out, err = run(
        capsys, "eval", "--pred", pred, "--truth", truth, "--lpips-weights", missing, "--require", "lpips"
    )
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sketchcolor: error: ") and str(missing) in lines[0]


# --- FID ---------------------------------------------------------------------------------------


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    sigma = np.cov(a, rowvar=False)
    assert ev.frechet_distance(a.mean(0), sigma, a.mean(0), sigma) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    assert ev.frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(5.0)
    # Diagonal covariances: per-dimension sum of the 1-D answers.
    d = ev.frechet_distance([0, 0], np.diag([1.0, 9.0]), [1, 2], np.diag([4.0, 1.0]))
    assert d == pytest.approx((1 + 4) + (1 + 4))
    # Same covariance, shifted mean: only the mean term remains (singular covariance is fine).
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert ev.frechet_distance([0, 0], singular, [3, 4], singular) == pytest.approx(25.0, abs=1e-6)
    with pytest.raises(ValueError):
        ev.frechet_distance([0, 0], np.eye(2), [0], np.eye(1))


def test_fid_unavailable_says_how_to_provide_the_weights(tmp_path):
    expected = tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert ev.fid_weights_path() == expected
    assert not ev.fid_available()
    with pytest.raises(MetricUnavailableError) as info:
        ev.FidMetric()
    assert str(expected) in info.value.message and ev.FID_WEIGHTS_URL in info.value.message


def test_required_fid_unavailable_is_an_error_and_optional_fid_a_warning(capsys, offset_pair):
    pred, truth = offset_pair
    code, _, err = run(capsys, "eval", "--pred", pred, "--truth", truth, "--require", "fid")
    assert code == 1 and "sketchcolor: error: FID needs" in err
    code, doc, err = run_json(capsys, "eval", "--pred", pred, "--truth", truth, "--fid")
    assert code == 0 and "sketchcolor: warning: fid skipped: FID needs" in err
    assert "fid" not in doc["rows"][0]


def test_fid_metric_builds_from_the_local_weights_file_only(monkeypatch, tmp_path):
    """With a stand-in pytorch-fid, the network gets the hub-cache file and never the URL."""
    import sys
    import types

    path = ev.fid_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({"weight": torch.ones(5, 3, 1, 1)}, path)
    fake = types.ModuleType("pytorch_fid.inception")

    def download(url, *args, **kwargs):
        raise AssertionError("tried to download")

    class InceptionV3(torch.nn.Module):
        def __init__(self, blocks, resize_input=True, normalize_input=True):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 1, bias=False)
            self.conv.load_state_dict(fake.load_state_dict_from_url(ev.FID_WEIGHTS_URL))

        def forward(self, x):
            return [self.conv(x).mean(dim=(2, 3), keepdim=True)]

    fake.load_state_dict_from_url = download
    fake.InceptionV3 = InceptionV3
    package = types.ModuleType("pytorch_fid")
    package.inception = fake
    monkeypatch.setitem(sys.modules, "pytorch_fid", package)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", fake)
    metric = ev.FidMetric()
    assert fake.load_state_dict_from_url is download  # the stand-in loader was only borrowed
    features = metric.features(torch.full((2, 3, 8, 8), 0.5))
    assert features.shape == (2, 5) and np.allclose(features, 1.5)


class _MeanColour:
    """A stand-in feature extractor (mean RGB and its square) to check the FID plumbing."""

    def features(self, rgb: torch.Tensor) -> np.ndarray:
        m = rgb.mean(dim=(2, 3)).double()
        return torch.cat([m, m**2], dim=1).numpy()


def test_fid_is_a_set_metric_of_the_scored_items(tmp_path):
    rng = np.random.default_rng(3)
    preds, truths = [], []
    for k in range(4):
        truth = rng.integers(0, 256, (16, 16, 3))
        pred = np.clip(truth + 20, 0, 255)
        truths.append(save_u8(tmp_path / "truth" / f"{k}.png", truth))
        preds.append(save_u8(tmp_path / "pred" / f"{k}.png", pred))
    report = ev.evaluate_outputs(tmp_path / "pred", tmp_path / "truth", fid=_MeanColour())
    extractor = _MeanColour()
    expected = ev.fid_from_features(
        np.concatenate([extractor.features(load_rgb(p)) for p in preds]),
        np.concatenate([extractor.features(load_rgb(p)) for p in truths]),
    )
    assert report.summary()["fid"] == pytest.approx(expected)
    assert expected > 0


# --- Library pieces ----------------------------------------------------------------------------


def test_check_thresholds_skips_not_applicable_rows_but_never_passes_unchecked():
    rows = [
        {"mode": "model", "strokes": 0, "hint_ciede2000": math.nan},
        {"mode": "model", "strokes": 2, "hint_ciede2000": 3.0},
    ]
    assert ev.check_thresholds(rows, fail_over={"hint_ciede2000": 5}) == []
    assert ev.check_thresholds(rows, fail_over={"hint_ciede2000": 2}) == [
        "hint_ciede2000 = 3 is over 2 (model default, strokes 2)"
    ]
    (only_nan,) = ev.check_thresholds(rows[:1], fail_over={"hint_ciede2000": 5})
    assert "no value" in only_nan
    assert ev.parse_thresholds(["psnr=18", " SSIM = 0.5"]) == {"psnr": 18.0, "ssim": 0.5}
    with pytest.raises(ConfigError, match="given twice"):
        ev.parse_thresholds(["psnr=18", "psnr=19"])


def test_given_hints_are_used_where_present_and_synthesised_elsewhere(test_set, tiny_checkpoint):
    from sketchcolor.checkpoint import load_checkpoint

    hints = np.zeros((40, 40, 4), np.uint8)
    hints[2:5, 2:5] = (250, 20, 20, 255)
    (test_set / "hints").mkdir()
    Image.fromarray(hints, mode="RGBA").save(test_set / "hints" / "img001.png")
    bundle = load_checkpoint(tiny_checkpoint)
    report = ev.evaluate_model(bundle, test_set, sample_config=None, seed=3, batch_size=2)
    kinds = {item.name: item.hints for item in report.items}
    assert kinds == {"img000": "synthetic", "img001": "given", "img002": "synthetic"}
    assert report.summary()["hints"] == "given+synthetic"
    given = next(item for item in report.items if item.name == "img001")
    assert given.files["hints"].endswith("img001.png") and given.hint_pixels == 9
    # A sweep synthesises for every item and says that the given hints were not used.
    swept = ev.evaluate_model(bundle, test_set, num_strokes=1, batch_size=3)
    assert {item.hints for item in swept.items} == {"synthetic"}
    assert any("given hints not used" in note for note in swept.notes)


def test_help_shows_examples_and_options():
    from typer.testing import CliRunner

    from sketchcolor.cli import app

    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    assert "sketchcolor eval --pred coloured/ --truth test/color/" in result.output
    for option in ("--pred", "--truth", "--data", "--model", "--hints-sweep", "--fail-under", "--fail-over",
                   "--lpips-weights", "--require", "--json", "--csv", "--plot", "--format"):  # fmt: skip
        assert option in result.output
