import numpy as np
import pytest
import torch
from PIL import Image

from sketchcolor.conditioning import LINE_LEVEL, sample_training_hints
from sketchcolor.config import DataConfig, HintConfig, TrainConfig
from sketchcolor.data import (
    StreamSampler,
    TrainingSet,
    XDoGParams,
    find_items,
    prepare_data,
    split_indices,
    xdog,
)
from sketchcolor.errors import DataError

from .conftest import shapes_picture, write_dataset


def test_xdog_draws_dark_lines_at_edges_only():
    rgb = torch.ones(1, 3, 32, 32)
    rgb[..., 8:24, 8:24] = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1)
    lines = xdog(rgb, XDoGParams(sigma=0.8))
    assert lines.shape == (1, 1, 32, 32)
    assert lines[0, 0, 2, 2] == 1.0 and lines[0, 0, 16, 16] > 0.9  # flat areas stay white
    assert lines[0, 0, 7:10, 16].min() < 0.5  # the square's edge becomes a line
    binary = xdog(rgb, XDoGParams(sigma=0.8, binarize=True))
    assert set(binary.unique().tolist()) <= {0.0, 1.0}


def test_paired_layout_lists_unmatched(tmp_path):
    write_dataset(tmp_path, 5, paired=True)
    (tmp_path / "sketch" / "img000.png").unlink()
    Image.new("RGB", (8, 8)).save(tmp_path / "sketch" / "lonely.png")
    items, warnings = find_items(tmp_path)
    assert len(items) == 4
    assert any("1 sketches without a colour picture: lonely" in w for w in warnings)
    assert any("1 colour pictures without a sketch: img000" in w for w in warnings)


def test_images_layout_recursive_and_unreadable_skipped(tmp_path):
    write_dataset(tmp_path, 6)
    (tmp_path / "broken.png").write_text("not an image")
    cfg = DataConfig(path=str(tmp_path), cache_dir=str(tmp_path / "cache"), line_variants=2, load_size=20)
    prepared, warnings = prepare_data(cfg, 16)
    assert len(prepared.names) == 6 and "nested/img000" in prepared.names
    assert prepared.colour.shape == (6, 3, 20, 20) and prepared.sketch.shape == (6, 2, 20, 20)
    assert prepared.skipped[0][0] == "broken"
    assert any("skipped 1 unreadable picture(s) (broken:" in w for w in warnings)


def test_prepare_is_cached(tmp_path, monkeypatch):
    write_dataset(tmp_path / "d", 4, paired=True)
    cfg = DataConfig(path=str(tmp_path / "d"), cache_dir=str(tmp_path / "cache"))
    first, _ = prepare_data(cfg, 16)
    import sketchcolor.data as data

    def boom(*args):
        raise AssertionError("pictures decoded again")

    monkeypatch.setattr(data, "_prepare_item", boom)
    second, _ = prepare_data(cfg, 16)
    assert np.array_equal(np.asarray(first.colour), np.asarray(second.colour))
    assert first.digest == second.digest


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no training pictures found"):
        find_items(tmp_path)
    with pytest.raises(DataError, match="training data not found"):
        find_items(tmp_path / "nope")


def test_parquet_diffusart_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    rows = {"full_colour": [], "sketch": [], "sketch_and_scribbles_merged": []}
    for _ in range(3):
        colour, lines = shapes_picture(rng)
        for key, img in (("full_colour", colour), ("sketch", lines), ("sketch_and_scribbles_merged", lines)):
            import io

            buf = io.BytesIO()
            img.save(buf, format="PNG")
            rows[key].append({"bytes": buf.getvalue(), "path": None})
    path = tmp_path / "train-0000.parquet"
    pq.write_table(pa.table(rows), path)
    prepared, _ = prepare_data(DataConfig(path=str(path), cache_dir=str(tmp_path / "c")), 16)
    assert len(prepared.names) == 3 and prepared.sketch.shape[1] == 1


def _truth_and_sketch(seed=0):
    colour, lines = shapes_picture(np.random.default_rng(seed), 40)
    rgb = torch.from_numpy(np.asarray(colour).copy()).permute(2, 0, 1).float() / 255
    sketch = torch.from_numpy(np.asarray(lines.convert("L")).copy()).float()[None] / 255
    return rgb, sketch


def test_training_hints_use_truth_and_avoid_lines():
    rgb, sketch = _truth_and_sketch()
    cfg = HintConfig(p_none=0.0, max_strokes=8)
    for seed in range(20):
        hint_rgb, mask = sample_training_hints(rgb, sketch, cfg, torch.Generator().manual_seed(seed))
        assert mask.sum() > 0
        assert not (mask[0].bool() & (sketch[0] < LINE_LEVEL)).any()
        assert torch.allclose(hint_rgb * mask, rgb * mask)


def test_training_hints_distribution_and_determinism():
    rgb, sketch = _truth_and_sketch(1)
    cfg = HintConfig()
    empty = 0
    for seed in range(400):
        _, mask = sample_training_hints(rgb, sketch, cfg, torch.Generator().manual_seed(seed))
        empty += int(mask.sum() == 0)
    assert 0.1 * 400 * 0.7 < empty < 0.1 * 400 * 1.5  # p_none = 0.1 (some walks may also be empty)
    a = sample_training_hints(rgb, sketch, cfg, torch.Generator().manual_seed(7))
    b = sample_training_hints(rgb, sketch, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


def test_stream_sampler_deterministic_resumable_and_sharded():
    s = StreamSampler(10, 3, seed=5)
    it = iter(s)
    stream = [next(it) for _ in range(7)]
    later = iter(StreamSampler(10, 3, seed=5, start=4))
    assert [next(later) for _ in range(3)] == stream[4:]
    epoch0 = [p for batch in stream[:3] for p, _ in batch]
    assert len(set(epoch0)) == 9  # a permutation: no repeats within an epoch
    r0 = StreamSampler(10, 2, seed=5, rank=0, world_size=2).batch(0)
    r1 = StreamSampler(10, 2, seed=5, rank=1, world_size=2).batch(0)
    assert not {p for p, _ in r0} & {p for p, _ in r1}
    with pytest.raises(DataError, match="only 3 training pictures for a batch of 4"):
        StreamSampler(3, 4, seed=0)


def test_split_indices():
    train, val = split_indices(100, 10)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    assert split_indices(5, 0) == ([0, 1, 2, 3, 4], [])


def test_training_set_sample_consistent(tmp_path):
    write_dataset(tmp_path / "d", 4, paired=True)
    config = TrainConfig()
    dcfg = DataConfig(path=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"))
    prepared, _ = prepare_data(dcfg, 64)
    ds = TrainingSet(prepared, [0, 1, 2, 3], config.model, HintConfig(p_none=0.0, drop=0.0), dcfg)
    a = ds[(1, 123)]
    b = ds[(1, 123)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["x0"].shape == (3, 64, 64) and a["cond"].shape == (config.model.model.cond_channels, 64, 64)
    # Hints agree with the (augmented) target: the same crop and flip were applied to both.
    m = a["hint_mask"]
    assert m.sum() > 0 and torch.allclose(a["hint_rgb"] * m, a["rgb"] * m)


def test_exact_stroke_count_for_sweeps():
    rgb, sketch = _truth_and_sketch(2)
    cfg = HintConfig(p_dot=1.0, min_width=1, max_width=1)  # dots of one pixel: count = pixels
    for k in (0, 1, 4):
        _, mask = sample_training_hints(rgb, sketch, cfg, torch.Generator().manual_seed(3), num_strokes=k)
        assert 0 < mask.sum() <= k if k else mask.sum() == 0
