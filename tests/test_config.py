import json

import pytest

from sketchcolor.config import (
    ColorizerConfig,
    ConditioningConfig,
    ModelConfig,
    SampleConfig,
    ScheduleConfig,
    from_dict,
    load_config_file,
    to_dict,
)
from sketchcolor.errors import ConfigError


def test_round_trip():
    cfg = ColorizerConfig.for_layout(ConditioningConfig(region_fill=True), prediction="x0", resolution=48)
    data = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(ColorizerConfig, data) == cfg


def test_unknown_key_is_error_naming_it():
    data = to_dict(ColorizerConfig())
    data["model"]["base_channel"] = 3
    with pytest.raises(ConfigError, match="'model.base_channel'"):
        from_dict(ColorizerConfig, data)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"prediction": "score"}, "must be one of"),
        ({"resolution": "64"}, "must be an integer"),
        ({"resolution": True}, "must be an integer"),
        ({"model": {"channel_mults": 3}}, "must be a list"),
        ({"schedule": {"zero_terminal_snr": 1}}, "true or false"),
        ({"resolution": 30}, "multiple of 4"),
        ({"prediction": "eps", "schedule": {"zero_terminal_snr": True}}, "needs prediction"),
        ({"model": {"cond_channels": 3}}, "cond_channels must be 5"),
        ({"model": {"norm_groups": 7}}, "norm_groups"),
    ],
)
def test_invalid_values(patch, message):
    data = to_dict(ColorizerConfig())
    for k, v in patch.items():
        if isinstance(v, dict):
            data[k].update(v)
        else:
            data[k] = v
    with pytest.raises(ConfigError, match=message):
        from_dict(ColorizerConfig, data)


def test_for_layout_sets_channels():
    cfg = ColorizerConfig.for_layout(ConditioningConfig(mode="photo", region_fill=True))
    assert cfg.model.in_channels == 2 and cfg.model.out_channels == 2
    assert cfg.model.cond_channels == 9
    assert cfg.conditioning.channels[:5] == ("sketch", "hint_L", "hint_a", "hint_b", "hint_mask")


def test_sample_config_validation():
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        SampleConfig(steps=0)
    with pytest.raises(ConfigError, match="eta"):
        SampleConfig(eta=2.0)


def test_load_toml_and_errors(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('kind = "linear"\nnum_train_steps = 100\n')
    assert load_config_file(ScheduleConfig, good) == ScheduleConfig(kind="linear", num_train_steps=100)
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = \n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config_file(ScheduleConfig, bad)
    unknown = tmp_path / "u.toml"
    unknown.write_text("kin = 'linear'\n")
    with pytest.raises(ConfigError, match="u.toml: unknown config key 'kin'"):
        load_config_file(ScheduleConfig, unknown)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(ScheduleConfig, tmp_path / "missing.toml")


def test_frozen():
    with pytest.raises(AttributeError):
        ModelConfig().base_channels = 3  # type: ignore[misc]
