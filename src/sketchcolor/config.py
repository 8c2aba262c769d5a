"""Frozen configuration records and their strict (de)serialisation.

Owns: every setting that shapes a model or a run, as frozen dataclasses validated in
``__post_init__``.

* :class:`ModelConfig`, :class:`ScheduleConfig`, :class:`ColorConfig`, :class:`ConditioningConfig`
  and the record that groups them, :class:`ColorizerConfig`, are what a checkpoint must carry: a
  model file alone is enough to rebuild the network, its noise schedule, its colour scaling, its
  conditioning layout, its prediction type and its working resolution.
* :class:`SampleConfig` holds run-time sampling settings and is never stored in a model file.

``from_dict`` is strict: unknown keys, wrong types and out-of-range values raise
:class:`~sketchcolor.errors.ConfigError` naming the key (diffusers only warns and drops unknown keys,
issue #12889; we refuse them). No configuration is ever executed as code.

Must not import anything from the package except :mod:`sketchcolor.errors`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import tomllib

from .errors import ConfigError

Prediction = Literal["eps", "v", "x0"]
ScheduleKind = Literal["linear", "cosine"]
ConditioningMode = Literal["lineart", "photo"]
SamplerName = Literal["ddim", "ddpm"]
Spacing = Literal["trailing", "linspace"]

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# Strict dict <-> dataclass conversion
# ----------------------------------------------------------------------------------------------


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON/TOML value to type ``tp``, raising ConfigError naming ``where``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}' must be a table/object, got {type(value).__name__}")
        return _from_mapping(tp, value, where + ".")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"config key '{where}' must be one of {choices}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{where}' must be a list, got {type(value).__name__}")
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{where}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {where}")  # a bug, not user input


def _from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"'{prefix}{k}'" for k in unknown)
        raise ConfigError(
            f"unknown config key {keys} for {cls.__name__}",
            hint=f"valid keys: {', '.join(sorted(names))}",
        )
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build the frozen config ``cls`` from a plain mapping, strictly.

    Args:
        cls: A config dataclass of this module.
        data: Nested mapping as produced by :func:`to_dict`, JSON or TOML.

    Returns:
        The validated config.

    Raises:
        ConfigError: Unknown key, wrong type, missing required key or invalid value.
    """
    return _from_mapping(cls, data)


def to_dict(config: Any) -> dict[str, Any]:
    """Convert a config dataclass to JSON-compatible nested dicts (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(config)


def load_config_file(cls: type[T], path: str | Path) -> T:
    """Read a TOML or JSON file into the config ``cls`` (strict, see :func:`from_dict`).

    Raises:
        ConfigError: The file is missing, unparsable, or holds an invalid config.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})"
        ) from None
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", hint=exc.hint) from None


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


# ----------------------------------------------------------------------------------------------
# What a checkpoint carries
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the U-Net (see :mod:`sketchcolor.models.unet`).

    Attributes:
        in_channels: Channels of ``x_t`` (3 for L,a,b; 2 for a,b in photo mode).
        cond_channels: Conditioning channels concatenated to ``x_t`` at the input.
        out_channels: Channels of the prediction (equal to ``in_channels``).
        base_channels: Width of the first level.
        channel_mults: Width multiplier of each level; level ``i`` works at 1/2**i resolution.
        num_res_blocks: Residual blocks per level on the way down (one more on the way up).
        attention_levels: Levels (indices into ``channel_mults``) with self-attention; the
            middle block always has attention when this is non-empty.
        head_channels: Channels per attention head.
        norm_groups: Groups of every GroupNorm; must divide every level's width.
        dropout: Dropout probability inside residual blocks.
    """

    in_channels: int = 3
    cond_channels: int = 5
    out_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    head_channels: int = 32
    norm_groups: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check(self.in_channels >= 1, "model.in_channels must be >= 1")
        _check(self.cond_channels >= 0, "model.cond_channels must be >= 0")
        _check(self.out_channels >= 1, "model.out_channels must be >= 1")
        _check(self.base_channels >= 1, "model.base_channels must be >= 1")
        _check(len(self.channel_mults) >= 1, "model.channel_mults must have at least one level")
        _check(all(m >= 1 for m in self.channel_mults), "model.channel_mults must be positive")
        _check(self.num_res_blocks >= 1, "model.num_res_blocks must be >= 1")
        levels = len(self.channel_mults)
        _check(
            all(0 <= a < levels for a in self.attention_levels),
            f"model.attention_levels must be level indices in [0, {levels})",
        )
        _check(self.norm_groups >= 1, "model.norm_groups must be >= 1")
        for m in self.channel_mults:
            width = self.base_channels * m
            _check(
                width % self.norm_groups == 0,
                f"model.norm_groups={self.norm_groups} must divide every level width (got {width})",
            )
            if self.attention_levels:
                _check(
                    width % self.head_channels == 0 or width < self.head_channels,
                    f"model.head_channels={self.head_channels} must divide attention widths (got {width})",
                )
        _check(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")

    @property
    def size_multiple(self) -> int:
        """Height and width of inputs must be multiples of this (2**(levels-1))."""
        return 2 ** (len(self.channel_mults) - 1)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """A named noise schedule (see :mod:`sketchcolor.schedules`).

    Attributes:
        kind: ``"linear"`` (Ho et al. 2020) or ``"cosine"`` (Nichol & Dhariwal 2021).
        num_train_steps: T, the number of discrete training steps.
        beta_start: First beta of the linear schedule.
        beta_end: Last beta of the linear schedule.
        cosine_offset: The small offset ``s`` of the cosine schedule.
        zero_terminal_snr: Rescale so alpha_bar(T-1) is exactly 0 (Lin et al. 2024); needs v- or
            x0-prediction because eps is undefined there.
    """

    kind: ScheduleKind = "cosine"
    num_train_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_offset: float = 0.008
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        _check(self.num_train_steps >= 2, "schedule.num_train_steps must be >= 2")
        _check(0.0 < self.beta_start < 1.0, "schedule.beta_start must be in (0, 1)")
        _check(0.0 < self.beta_end < 1.0, "schedule.beta_end must be in (0, 1)")
        _check(self.beta_start <= self.beta_end, "schedule.beta_start must be <= schedule.beta_end")
        _check(0.0 <= self.cosine_offset < 1.0, "schedule.cosine_offset must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class ColorConfig:
    """Scaling between CIE LAB and model space (see :func:`sketchcolor.color.lab_to_model`).

    Model space: ``L' = (L - l_center) / l_scale``, ``a' = a / ab_scale``, ``b' = b / ab_scale``, so
    white paper (L = 100) is ``+1`` with the defaults and the sRGB gamut fits roughly in [-1, 1].
    """

    l_center: float = 50.0
    l_scale: float = 50.0
    ab_scale: float = 110.0

    def __post_init__(self) -> None:
        _check(self.l_scale > 0, "color.l_scale must be > 0")
        _check(self.ab_scale > 0, "color.ab_scale must be > 0")


@dataclasses.dataclass(frozen=True)
class ConditioningConfig:
    """Which conditioning channels the model sees, in which order.

    Attributes:
        mode: ``"lineart"``: the model predicts L, a and b from a sketch; ``"photo"``: L is known
            (a greyscale photo) and kept, only a and b are predicted (Color Diffusion's approach).
        region_fill: Add four channels holding the hint colours spread over each line-enclosed
            region of the sketch (the classical flat-fill), and whether a region was filled.
    """

    mode: ConditioningMode = "lineart"
    region_fill: bool = False

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the conditioning channels, in the order the model receives them."""
        names = ("sketch", "hint_L", "hint_a", "hint_b", "hint_mask")
        if self.region_fill:
            names += ("fill_L", "fill_a", "fill_b", "fill_mask")
        return names

    @property
    def target_channels(self) -> tuple[str, ...]:
        """Names of the channels the model generates (the channels of ``x0`` and ``x_t``)."""
        return ("L", "a", "b") if self.mode == "lineart" else ("a", "b")


@dataclasses.dataclass(frozen=True)
class ColorizerConfig:
    """Everything a model file carries besides its weights.

    Attributes:
        model: U-Net shape.
        schedule: Noise schedule the model was trained with.
        color: LAB <-> model-space scaling.
        conditioning: Conditioning layout.
        prediction: What the network predicts: ``"eps"`` (noise), ``"v"`` (Salimans & Ho 2022)
            or ``"x0"`` (the clean image).
        resolution: Working resolution in pixels: sketches are resized so their long side is this
            before sampling. A multiple of ``model.size_multiple``.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    color: ColorConfig = dataclasses.field(default_factory=ColorConfig)
    conditioning: ConditioningConfig = dataclasses.field(default_factory=ConditioningConfig)
    prediction: Prediction = "v"
    resolution: int = 64

    def __post_init__(self) -> None:
        n_target = len(self.conditioning.target_channels)
        _check(
            self.model.in_channels == n_target and self.model.out_channels == n_target,
            f"model.in_channels and model.out_channels must be {n_target} for conditioning.mode="
            f"'{self.conditioning.mode}' (got {self.model.in_channels} and {self.model.out_channels})",
        )
        n_cond = len(self.conditioning.channels)
        _check(
            self.model.cond_channels == n_cond,
            f"model.cond_channels must be {n_cond} for this conditioning layout "
            f"({', '.join(self.conditioning.channels)}), got {self.model.cond_channels}",
        )
        _check(
            not (self.schedule.zero_terminal_snr and self.prediction == "eps"),
            "schedule.zero_terminal_snr needs prediction 'v' or 'x0' (eps is undefined at the last step)",
        )
        m = self.model.size_multiple
        _check(
            self.resolution >= m and self.resolution % m == 0,
            f"resolution must be a positive multiple of {m} for this model, got {self.resolution}",
        )

    @staticmethod
    def for_layout(conditioning: ConditioningConfig | None = None, **kwargs: Any) -> ColorizerConfig:
        """Build a config whose model channel counts follow ``conditioning`` automatically.

        Args:
            conditioning: The conditioning layout (default: line art, no region fill).
            **kwargs: Other :class:`ColorizerConfig` fields; ``model`` may be a ModelConfig whose
                channel counts are replaced.
        """
        conditioning = conditioning or ConditioningConfig()
        model = kwargs.pop("model", ModelConfig())
        n_target = len(conditioning.target_channels)
        model = dataclasses.replace(
            model,
            in_channels=n_target,
            out_channels=n_target,
            cond_channels=len(conditioning.channels),
        )
        return ColorizerConfig(model=model, conditioning=conditioning, **kwargs)


# ----------------------------------------------------------------------------------------------
# Run-time settings (never stored in a model file)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How to sample.

    Attributes:
        sampler: ``"ddim"`` (Song et al. 2021) or ``"ddpm"`` (ancestral, Ho et al. 2020).
        steps: Number of network evaluations (timesteps in the list), 1 to T.
        eta: DDIM stochasticity: 0 is deterministic, 1 matches DDPM's posterior variance.
        guidance: Classifier-free guidance scale on the hints; 1 disables guidance.
        spacing: How the timestep list is spread over [0, T): ``"trailing"`` always starts at T-1.
    """

    sampler: SamplerName = "ddim"
    steps: int = 20
    eta: float = 0.0
    guidance: float = 1.0
    spacing: Spacing = "trailing"

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(0.0 <= self.eta <= 1.0, f"eta must be in [0, 1], got {self.eta}")
        _check(self.guidance >= 0.0, f"guidance must be >= 0, got {self.guidance}")
