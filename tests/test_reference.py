"""Reference-picture conditioning: config, network, conditioning record, warps, guidance, pipeline."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
from PIL import Image

from sketchcolor.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from sketchcolor.conditioning import (
    Conditioning,
    ModelCond,
    letterbox,
    make_conditioning,
    reference_lab_from_rgb,
    warp_reference,
)
from sketchcolor.config import (
    ColorConfig,
    ColorizerConfig,
    ConditioningConfig,
    ModelConfig,
    ReferenceConfig,
    SampleConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    to_dict,
)
from sketchcolor.denoiser import Denoiser, GuidedDenoiser
from sketchcolor.errors import ConfigError, ModelError
from sketchcolor.pipeline import Colorizer, colorize, colorize_batch, read_reference
from sketchcolor.schedules import NoiseSchedule

from .conftest import TINY_MODEL, draw_sketch, random_model, tiny_config

REF_LAYOUT = ConditioningConfig(reference=True, reference_size=16)


def ref_config(**kwargs) -> ColorizerConfig:
    return tiny_config(conditioning=kwargs.pop("conditioning", REF_LAYOUT), **kwargs)


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, rgb)


# --- config -------------------------------------------------------------------------------------


def test_reference_layout_derives_encoder_and_round_trips():
    config = ref_config()
    assert config.model.reference_channels == TINY_MODEL.base_channels
    assert config.model.reference_levels == TINY_MODEL.attention_levels
    assert from_dict(ColorizerConfig, to_dict(config)) == config
    # A file that leaves the encoder out gets it derived from the layout too.
    data = to_dict(config)
    del data["model"]["reference_channels"], data["model"]["reference_levels"]
    assert from_dict(ColorizerConfig, data) == config


def test_reference_layout_and_encoder_must_agree():
    with pytest.raises(ConfigError, match="conditioning.reference needs model.reference_channels"):
        ColorizerConfig(
            model=dataclasses.replace(TINY_MODEL, cond_channels=5),
            conditioning=ConditioningConfig(reference=True),
            resolution=32,
        )
    with pytest.raises(ConfigError, match="reference_levels needs model.reference_channels"):
        ModelConfig(reference_levels=(1,))
    with pytest.raises(ConfigError, match="reference_size"):
        ConditioningConfig(reference=True, reference_size=30)


def test_config_without_new_keys_loads_as_before():
    """Version-1 model configs (no reference, gap or normalisation keys) keep their meaning."""
    data = to_dict(tiny_config())
    for key in ("region_gap", "normalize_sketch", "reference", "reference_size"):
        del data["conditioning"][key]
    del data["model"]["reference_channels"], data["model"]["reference_levels"]
    config = from_dict(ColorizerConfig, data)
    assert not config.conditioning.reference and config.model.reference_channels == 0
    assert config.conditioning.region_gap == 0.0 and not config.conditioning.normalize_sketch


def test_override_switches_reference_on_and_off():
    base = TrainConfig(model=tiny_config())
    on = apply_overrides(base, {"model.conditioning.reference": "true"})
    assert on.model.model.reference_channels > 0 and on.model.conditioning.reference
    off = apply_overrides(on, {"model.conditioning.reference": "false"})
    assert off.model.model.reference_channels == 0 and off.model.model.reference_levels == ()


# --- network ------------------------------------------------------------------------------------


def _inputs(config: ColorizerConfig, n: int = 2, present: tuple[float, ...] = (1.0, 0.0)):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((n, 3, 32, 32), generator=gen)
    cond = torch.randn((n, config.model.cond_channels, 32, 32), generator=gen)
    size = config.conditioning.reference_size
    ref = torch.randn((n, 4, size, size), generator=gen)
    ref[:, 3] = torch.tensor(present).view(n, 1, 1)
    return x, torch.tensor([10, 500])[:n], cond, ref


def test_encoder_tokens_one_per_four_by_four_patch():
    config = ref_config()
    model = random_model(config)
    tokens = model.reference(torch.randn(3, 4, 16, 16))
    assert tokens.shape == (3, 16, config.model.reference_channels)


def test_reference_changes_output_only_where_present():
    config = ref_config()
    model = random_model(config)
    x, t, cond, ref = _inputs(config)
    with torch.no_grad():
        with_ref = model(x, t, cond, ref)
        without = model(x, t, cond)
    # Item 0 has a reference: its output depends on it. Item 1's presence plane is 0: exactly
    # the output without any reference (reference dropout and guidance rely on this).
    assert not torch.allclose(with_ref[0], without[0])
    assert torch.equal(with_ref[1], without[1])


def test_reference_colours_reach_output():
    config = ref_config()
    model = random_model(config)
    x, t, cond, ref = _inputs(config, present=(1.0, 1.0))
    other = ref.clone()
    other[:, :3] = -other[:, :3]
    with torch.no_grad():
        assert not torch.allclose(model(x, t, cond, ref), model(x, t, cond, other))


def test_network_without_encoder_refuses_reference():
    config = tiny_config()
    model = random_model(config)
    x, t, cond, ref = _inputs(config)
    with pytest.raises(ValueError, match="takes no reference"):
        model(x, t, cond, ref)


# --- conditioning record -------------------------------------------------------------------------


def _record(n: int = 1, reference: bool = True, size: int = 16) -> Conditioning:
    cond = make_conditioning(torch.ones(n, 1, 8, 8), None, None, REF_LAYOUT)
    if reference:
        cond = cond.with_reference(torch.full((1, 3, size, size), 50.0))
    return cond


def test_as_reference_layout():
    colour = ColorConfig()
    cond = _record()
    ref = cond.as_reference(REF_LAYOUT, colour)
    assert ref is not None and ref.shape == (1, 4, 16, 16)
    assert torch.allclose(ref[0, 0], torch.zeros(16, 16))  # L = 50 is 0 in model space
    assert torch.allclose(ref[0, 1:3], torch.full((2, 16, 16), 50.0 / colour.ab_scale))
    assert torch.equal(ref[0, 3], torch.ones(16, 16))
    assert _record(reference=False).as_reference(REF_LAYOUT, colour) is None
    with pytest.raises(ValueError, match="takes no reference"):
        cond.as_reference(ConditioningConfig(), colour)
    with pytest.raises(ValueError, match="16 px square"):
        _record(size=8).as_reference(REF_LAYOUT, colour)


def test_cat_gives_blank_references_to_items_without():
    mixed = Conditioning.cat([_record(), _record(reference=False), _record()])
    assert mixed.reference_mask is not None and mixed.reference_mask.tolist() == [1.0, 0.0, 1.0]
    ref = mixed.as_reference(REF_LAYOUT, ColorConfig())
    assert ref is not None and torch.count_nonzero(ref[1]) == 0
    model_cond = ModelCond.cat(
        [
            mixed.model_input(REF_LAYOUT, ColorConfig()),
            _record(reference=False).model_input(REF_LAYOUT, ColorConfig()),
        ]
    )
    assert model_cond.reference is not None and model_cond.reference.shape[0] == 4
    assert torch.count_nonzero(model_cond.reference[3]) == 0


def test_hint_and_reference_removal_are_independent():
    hinted = make_conditioning(
        torch.ones(1, 1, 8, 8), torch.full((1, 3, 8, 8), 0.5), torch.ones(1, 1, 8, 8), REF_LAYOUT
    )
    cond = hinted.with_reference(torch.full((1, 3, 16, 16), 50.0))
    assert cond.without_hints().has_reference and not cond.without_hints().hint_mask.any()
    assert not cond.without_reference().has_reference and cond.without_reference().hint_mask.all()


# --- letterbox and warps -------------------------------------------------------------------------


def test_letterbox_keeps_aspect_on_white():
    rgb = torch.zeros(1, 3, 10, 40)  # a black strip, 4:1
    out = letterbox(rgb, 16)
    assert out.shape == (1, 3, 16, 16)
    assert torch.equal(out[0, :, 6:10], torch.zeros(3, 4, 16))  # 16 x 4 strip, centred
    assert torch.equal(out[0, :, :6], torch.ones(3, 6, 16)) and torch.equal(
        out[0, :, 10:], torch.ones(3, 6, 16)
    )


def test_reference_lab_of_a_flat_colour():
    lab = reference_lab_from_rgb(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 20, 20), 16)
    assert lab.shape == (1, 3, 16, 16)
    assert lab[0, 0].mean().item() == pytest.approx(53.24, abs=0.1)  # sRGB red: L = 53.24


IDENTITY = ReferenceConfig(rotate=0, scale_min=1, scale_max=1, shift=0, flip=0, elastic=0, jitter=0)


@pytest.mark.parametrize("warp", ["affine", "tps"])
def test_warp_without_deformation_is_identity(warp):
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 16, 16, generator=gen)
    out = warp_reference(rgb, dataclasses.replace(IDENTITY, warp=warp), 16, torch.Generator().manual_seed(1))
    assert torch.allclose(out, reference_lab_from_rgb(rgb[None], 16)[0], atol=1e-3)


def test_warp_moves_content_and_fills_with_paper():
    rgb = torch.zeros(3, 32, 32)  # black picture: anything white came from outside
    config = ReferenceConfig(rotate=40, scale_min=0.6, scale_max=0.6, shift=0, flip=0, elastic=0, jitter=0)
    lab = warp_reference(rgb, config, 32, torch.Generator().manual_seed(3))
    assert lab[0, 0, 0].item() == pytest.approx(100.0, abs=1e-3)  # corner: white paper
    assert lab[0, 16, 16].item() == pytest.approx(0.0, abs=1e-3)  # centre: still the picture


@pytest.mark.parametrize("warp", ["affine", "tps"])
def test_warp_is_a_function_of_the_generator(warp):
    rgb = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    config = ReferenceConfig(warp=warp)
    a = warp_reference(rgb, config, 16, torch.Generator().manual_seed(5))
    b = warp_reference(rgb, config, 16, torch.Generator().manual_seed(5))
    c = warp_reference(rgb, config, 16, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- guidance ------------------------------------------------------------------------------------


def test_guidance_with_separate_scales():
    class FromCond(torch.nn.Module):
        def forward(self, x_t, t, cond):
            return cond[:, :1].expand_as(x_t) * 1.0

    den = Denoiser(FromCond(), NoiseSchedule(ScheduleConfig()), "x0")
    x_t = torch.zeros(1, 3, 2, 2)
    t = torch.tensor([100])
    full, no_hints, no_ref = (torch.full((1, 2, 2, 2), v) for v in (1.0, 0.25, 0.5))
    for s_h, s_r in [(1.0, 1.0), (3.0, 1.0), (1.0, 2.0), (2.0, 4.0)]:
        x0, _ = GuidedDenoiser(den, [(no_hints, s_h), (no_ref, s_r)])(x_t, t, full)
        expected = 1.0 + (s_h - 1) * (1.0 - 0.25) + (s_r - 1) * (1.0 - 0.5)
        assert torch.allclose(x0, torch.full_like(x0, expected))


# --- checkpoints ---------------------------------------------------------------------------------


def test_reference_checkpoint_round_trip_and_version(tmp_path):
    config = ref_config()
    # In the state load_checkpoint leaves a model in: torch may pick other kernels (other last
    # bits) for weights that require gradients.
    model = random_model(config).eval().requires_grad_(False)
    path = save_checkpoint(tmp_path / "ref.safetensors", model, config)
    assert read_metadata(path)["format_version"] == "2"
    bundle = load_checkpoint(path, channels_last=False)
    assert bundle.config == config
    x, t, cond, ref = _inputs(config)
    with torch.no_grad():
        assert torch.equal(bundle.model(x, t, cond, ref), model(x, t, cond, ref))
    plain = save_checkpoint(tmp_path / "plain.safetensors", random_model(tiny_config()), tiny_config())
    assert read_metadata(plain)["format_version"] == "1"  # still readable by older releases
    assert json.loads(read_metadata(plain)["config"])["conditioning"]["reference"] is False


# --- pipeline ------------------------------------------------------------------------------------


@pytest.fixture
def ref_bundle(tmp_path):
    """A random reference model whose reference path is strong enough to show in 8-bit output."""
    config = ref_config()
    model = random_model(config, seed=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cross" in name or "reference" in name or "conv_out" in name:
                p.mul_(20.0)
    path = save_checkpoint(tmp_path / "ref.safetensors", model, config)
    return load_checkpoint(path)


def test_colorize_follows_reference(ref_bundle):
    sketch = draw_sketch((48, 32))
    plain = colorize(sketch, None, ref_bundle, seed=1).image
    red = colorize(sketch, None, ref_bundle, seed=1, reference=solid((220, 30, 30))).image
    blue = colorize(sketch, None, ref_bundle, seed=1, reference=solid((30, 30, 220))).image
    assert red.size == plain.size == (48, 32)
    assert red.tobytes() != blue.tobytes() and red.tobytes() != plain.tobytes()
    again = colorize(sketch, None, ref_bundle, seed=1, reference=solid((220, 30, 30))).image
    assert again.tobytes() == red.tobytes()


def test_record_names_the_reference(ref_bundle):
    sketch = draw_sketch((48, 32))
    result = colorize(
        sketch, None, ref_bundle, SampleConfig(reference_scale=2.0), reference=solid((0, 200, 0))
    )
    record = result.record
    assert record["reference_scale"] == 2.0 and len(record["reference_digest"]) == 16
    assert colorize(sketch, None, ref_bundle).record["reference_digest"] is None
    other = colorize(sketch, None, ref_bundle, reference=solid((200, 0, 0))).record["reference_digest"]
    assert other != record["reference_digest"]


def test_reference_scale_changes_result(ref_bundle):
    sketch = draw_sketch((48, 32))
    ref = solid((220, 120, 30))
    one = colorize(sketch, None, ref_bundle, SampleConfig(), seed=2, reference=ref).image
    three = colorize(sketch, None, ref_bundle, SampleConfig(reference_scale=3.0), seed=2, reference=ref).image
    assert one.tobytes() != three.tobytes()
    # Without a reference the reference scale has nothing to guide: same picture as scale 1.
    a = colorize(sketch, None, ref_bundle, SampleConfig(), seed=2).image
    b = colorize(sketch, None, ref_bundle, SampleConfig(reference_scale=3.0), seed=2).image
    assert a.tobytes() == b.tobytes()


def test_batch_with_references_matches_single(ref_bundle):
    sketches = [draw_sketch((48, 32)), draw_sketch((48, 32))]
    refs = [solid((220, 30, 30)), None]
    # fp32: bfloat16 rounds differently with other batch companions by more than one level.
    config = SampleConfig(precision="fp32")
    results = colorize_batch(sketches, [None, None], ref_bundle, config, [4, 5], references=refs)
    for sketch, ref, seed, result in zip(sketches, refs, [4, 5], results, strict=True):
        alone = colorize(sketch, None, ref_bundle, config, seed=seed, reference=ref).image
        diff = (torch.tensor(list(alone.tobytes())) - torch.tensor(list(result.image.tobytes()))).abs()
        assert int(diff.max()) <= 1  # batched arithmetic may round differently by one level


def test_a_reference_shared_by_a_batch_is_read_once(ref_bundle, tmp_path, monkeypatch):
    import sketchcolor.pipeline as pipeline

    solid((220, 30, 30), (300, 200)).save(tmp_path / "hero.png")
    sketches = [draw_sketch((48, 32)), draw_sketch((40, 40)), draw_sketch((48, 32))]
    config = SampleConfig(precision="fp32")
    prepared = read_reference(tmp_path / "hero.png", ref_bundle)
    calls = []
    real = pipeline.reference_palette
    monkeypatch.setattr(pipeline, "reference_palette", lambda rgb: calls.append(1) or real(rgb))
    # The same path three times (a chapter), given as str and as Path alike: one read.
    refs = [str(tmp_path / "hero.png"), tmp_path / "hero.png", str(tmp_path / "hero.png")]
    by_path = colorize_batch(sketches, [None] * 3, ref_bundle, config, [1, 2, 3], references=refs)
    assert len(calls) == 1
    # A prepared reference is used as it is: nothing read, the same pictures and records.
    by_prepared = colorize_batch(
        sketches, [None] * 3, ref_bundle, config, [1, 2, 3], references=[prepared] * 3
    )
    assert len(calls) == 1
    for a, b in zip(by_path, by_prepared, strict=True):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.records[0]["reference_digest"] == b.records[0]["reference_digest"] == prepared.digest
    # One PIL picture object for all: also one read.
    picture = solid((30, 200, 30))
    colorize_batch(sketches, [None] * 3, ref_bundle, config, [1, 2, 3], references=[picture] * 3)
    assert len(calls) == 2


def test_a_prepared_reference_is_for_models_of_its_size(ref_bundle, tmp_path):
    other = ref_config(
        conditioning=dataclasses.replace(REF_LAYOUT, reference_size=REF_LAYOUT.reference_size * 2)
    )
    bundle = load_checkpoint(save_checkpoint(tmp_path / "other.safetensors", random_model(other), other))
    prepared = read_reference(solid((220, 30, 30)), ref_bundle)
    with pytest.raises(ValueError, match="prepare it again with read_reference"):
        colorize(draw_sketch((48, 32)), None, bundle, reference=prepared)
    # The Colorizer prepares for its own model.
    colorizer = Colorizer(bundle)
    again = colorizer.read_reference(solid((220, 30, 30)))
    assert again.lab.shape[-1] == REF_LAYOUT.reference_size * 2
    assert colorizer(draw_sketch((48, 32)), reference=again).records[0]["reference_digest"] == again.digest


def test_model_without_reference_refuses_one(tmp_path):
    config = tiny_config()
    bundle = load_checkpoint(save_checkpoint(tmp_path / "plain.safetensors", random_model(config), config))
    with pytest.raises(ModelError, match="plain.safetensors: takes no reference picture"):
        colorize(draw_sketch(), None, bundle, reference=solid((200, 0, 0)))


def test_greyscale_reference_warns(ref_bundle, caplog):
    with caplog.at_level(logging.WARNING, logger="sketchcolor"):
        colorize(draw_sketch((48, 32)), None, ref_bundle, reference=solid((128, 128, 128)))
    assert any("greyscale" in r.getMessage() for r in caplog.records)


def test_rgba_and_any_aspect_reference(ref_bundle):
    rgba = Image.new("RGBA", (90, 20), (0, 0, 0, 0))  # transparent: goes onto white
    white = colorize(
        draw_sketch((48, 32)), None, ref_bundle, seed=0, reference=Image.new("RGB", (5, 70), "white")
    )
    clear = colorize(draw_sketch((48, 32)), None, ref_bundle, seed=0, reference=rgba)
    assert white.image.tobytes() == clear.image.tobytes()


def test_cross_attention_cost_is_skipped_without_reference():
    """A batch whose items have no reference never runs the encoder (None, not zeros)."""
    config = ref_config()
    calls = []
    model = random_model(config)
    model.reference.register_forward_hook(lambda *a: calls.append(1))
    cond = _record(reference=False).model_input(REF_LAYOUT, ColorConfig())
    assert cond.reference is None
    Denoiser(model, NoiseSchedule(config.schedule), "v")(torch.zeros(1, 3, 8, 8), torch.tensor([3]), cond)
    assert not calls


# --- learning ------------------------------------------------------------------------------------


def test_tiny_model_learns_to_use_the_reference(tmp_path):
    """A toy set where only the reference can tell the colour: one disc, a random colour per item.

    After a few hundred steps the loss at pure noise (where nothing but the conditioning tells
    the colour) is clearly lower with the item's warped reference than without it.
    """
    from PIL import ImageDraw

    from sketchcolor.data import TrainingSet, prepare_data, split_indices
    from sketchcolor.training import _batch_cond, _collate, train

    gen = torch.Generator().manual_seed(0)
    folder = tmp_path / "pics"
    (folder / "sketch").mkdir(parents=True)
    (folder / "color").mkdir()
    for i in range(24):
        rgb = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=gen))
        for kind, fill in (("sketch", "white"), ("color", rgb)):
            img = Image.new("RGB", (16, 16), "white")
            ImageDraw.Draw(img).ellipse((2, 2, 13, 13), fill=fill, outline="black", width=1)
            img.save(folder / kind / f"{i:02d}.png")
    config = TrainConfig(model=ref_config(resolution=16))
    config = apply_overrides(
        config,
        {
            "data.path": str(folder), "data.val_count": 0, "data.cache_dir": str(tmp_path / "cache"),
            "optim.steps": 300, "optim.batch_size": 8, "optim.lr": 3e-3, "optim.warmup_steps": 5,
            "optim.ema_decay": 0.0, "hints.p_none": 1.0, "hints.drop": 0.0, "reference.p_reference": 0.9,
            "reference.jitter": 0.0, "lines.enabled": "false", "run.checkpoint_every": 300,
            "run.sample_every": 0, "run.threads": 1,
        },
    )  # fmt: skip
    for _ in train(config, tmp_path / "run"):
        pass
    bundle = load_checkpoint(tmp_path / "run" / "last.safetensors")
    prepared, _ = prepare_data(config.data, 16)
    items, _ = split_indices(len(prepared.names), 0)
    always = dataclasses.replace(config.reference, p_reference=1.0)
    data = TrainingSet(
        prepared, items, bundle.config, config.hints, config.data, augment=False, reference=always
    )
    batch = _collate([data[(i, 1000 + i)] for i in range(len(items))])
    cond = _batch_cond(batch, torch.device("cpu"), torch.contiguous_format)
    t = torch.full((len(items),), 999)  # pure noise (zero terminal SNR): only the conditioning tells
    noise = torch.randn(batch["x0"].shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with_ref = float(bundle.denoiser.loss(batch["x0"], t, noise, cond))
        without = float(bundle.denoiser.loss(batch["x0"], t, noise, ModelCond(cond.channels)))
    assert with_ref < 0.85 * without, (with_ref, without)
