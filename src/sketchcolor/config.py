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
import math
import operator
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import ConfigError

Prediction = Literal["eps", "v", "x0"]
ScheduleKind = Literal["linear", "cosine"]
ConditioningMode = Literal["lineart", "photo"]
SamplerName = Literal["ddim", "ddpm", "dpmpp2m"]
Spacing = Literal["trailing", "linspace"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: The precision names of training (``optim.precision``) and sampling (``SampleConfig.precision``).
PRECISIONS: tuple[str, ...] = get_args(Precision)

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# Strict dict <-> dataclass conversion
# ----------------------------------------------------------------------------------------------


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON/TOML value to type ``tp``, raising ConfigError naming ``where``."""
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
    complete = getattr(cls, "complete_derived", None)
    if complete is not None:
        data = complete(data)
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
        reference_channels: Width of the reference-picture encoder; 0 means the network takes no
            reference (see :class:`ConditioningConfig.reference`).
        reference_levels: Levels whose blocks cross-attend to the reference tokens; the middle
            block does too when this is non-empty. Needs ``reference_channels`` > 0.
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
    reference_channels: int = 0
    reference_levels: tuple[int, ...] = ()

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
        _check(self.reference_channels >= 0, "model.reference_channels must be >= 0")
        _check(
            all(0 <= a < levels for a in self.reference_levels),
            f"model.reference_levels must be level indices in [0, {levels})",
        )
        _check(
            not self.reference_levels or self.reference_channels > 0,
            "model.reference_levels needs model.reference_channels > 0",
        )
        if self.reference_channels:
            _check(
                self.reference_channels % self.norm_groups == 0,
                f"model.norm_groups={self.norm_groups} must divide model.reference_channels",
            )
            _check(bool(self.reference_levels), "model.reference_channels needs model.reference_levels")

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
        region_gap: Close outline gaps of up to about twice this many pixels (per 128 px of the
            long side) before finding the regions of ``region_fill`` (0: plain labelling).
        normalize_sketch: Stretch each sketch's lightness so paper is white and the darkest lines
            black before anything else sees it (light or pencil lines, tinted paper; see
            :func:`sketchcolor.conditioning.normalize_sketch`).
        reference: The model also takes an optional reference picture whose colours it follows
            (reference-based colourisation, cross-attention; see docs/architecture.md).
        reference_size: The reference is letterboxed onto a white square of this many pixels
            (CIE LAB) before the model's reference encoder sees it.
    """

    mode: ConditioningMode = "lineart"
    region_fill: bool = False
    region_gap: float = 0.0
    normalize_sketch: bool = False
    reference: bool = False
    reference_size: int = 64

    def __post_init__(self) -> None:
        _check(self.region_gap >= 0.0, "conditioning.region_gap must be >= 0")
        _check(
            self.reference_size >= 8 and self.reference_size % 4 == 0,
            f"conditioning.reference_size must be a multiple of 4, at least 8 (got {self.reference_size})",
        )

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the conditioning channels, in the order the model receives them."""
        names: tuple[str, ...] = ("sketch", "hint_L", "hint_a", "hint_b", "hint_mask")
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
            self.conditioning.reference == (self.model.reference_channels > 0),
            "conditioning.reference needs model.reference_channels > 0 (and a model without a "
            "reference needs model.reference_channels = 0)",
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
    def complete_derived(data: Mapping[str, Any]) -> dict[str, Any]:
        """Fill ``model.in_channels``, ``out_channels`` and ``cond_channels`` from the conditioning
        layout when a config file leaves them out (they follow from it)."""
        data = dict(data)
        cond = data.get("conditioning", {})
        if not isinstance(cond, Mapping) or not isinstance(data.get("model", {}), Mapping):
            return data
        try:
            layout = _from_mapping(ConditioningConfig, cond, "conditioning.")
        except ConfigError:
            return data  # reported properly when the field itself is converted
        model = dict(data.get("model", {}))
        n_target = len(layout.target_channels)
        model.setdefault("in_channels", n_target)
        model.setdefault("out_channels", n_target)
        model.setdefault("cond_channels", len(layout.channels))
        if layout.reference:
            # A reference encoder as wide as the first level, attended to by the attention levels.
            base = model.get("base_channels", ModelConfig.base_channels)
            model.setdefault("reference_channels", base)
            levels = model.get("attention_levels", list(ModelConfig.attention_levels))
            model.setdefault("reference_levels", list(levels) or [len(model.get("channel_mults", [1])) - 1])
        data["model"] = model
        return data

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
        if conditioning.reference and not model.reference_channels:
            model = dataclasses.replace(
                model,
                reference_channels=model.base_channels,
                reference_levels=model.attention_levels or (len(model.channel_mults) - 1,),
            )
        elif not conditioning.reference:
            model = dataclasses.replace(model, reference_channels=0, reference_levels=())
        return ColorizerConfig(model=model, conditioning=conditioning, **kwargs)


# ----------------------------------------------------------------------------------------------
# Run-time settings (never stored in a model file)
# ----------------------------------------------------------------------------------------------


#: Default of :attr:`SampleConfig.reference_snap` (CIE LAB distance), chosen on the training
#: sources' validation split (docs/model-card.md, "With a reference picture").
REFERENCE_SNAP = 30.0


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How to sample.

    Attributes:
        sampler: ``"ddim"`` (Song et al. 2021), ``"ddpm"`` (ancestral, Ho et al. 2020) or
            ``"dpmpp2m"`` (DPM-Solver++(2M), Lu et al. 2022; deterministic, for few steps).
        steps: Number of network evaluations (timesteps in the list), 1 to T.
        eta: DDIM stochasticity: 0 is deterministic, 1 matches DDPM's posterior variance.
        guidance: Classifier-free guidance scale on the hints; 1 disables guidance.
        reference_scale: Classifier-free guidance scale on the reference picture (models with
            reference conditioning); 1 disables it.
        reference_snap: With a reference: a region painted in one colour whose colour is within
            this CIE LAB distance of one of the reference's flat colours takes that colour
            exactly (:func:`~sketchcolor.compose.reference_palette`); 0 keeps the model's
            colours. Applied when the colours are carried to full size, after sampling.
        spacing: How the timestep list is spread over [0, T): ``"trailing"`` always starts at T-1.
        pin_hints: Hold hinted pixels at their hint colour in every x0 estimate (line-art models),
            so the rest of the picture is denoised around the colours the user gave.
        precision: The network's arithmetic while sampling: ``"auto"`` (bfloat16 on a CPU with
            native bfloat16 and on CUDA, else fp32; see
            :func:`~sketchcolor.device.inference_dtype`), ``"fp32"``, ``"bf16"`` or ``"fp16"``
            (GPUs). The picture's record keeps the precision that was used.
    """

    # Defaults chosen from the v2 quality-versus-steps table of docs/performance.md: four DDIM
    # steps give clearly more colour without hints than one or two (colourfulness ratio 0.66
    # against 0.59 on OpenMoji) for a small rise in error (CIEDE2000 4.22 against 4.17 with hints).
    sampler: SamplerName = "ddim"
    steps: int = 4
    eta: float = 0.0
    guidance: float = 1.0
    spacing: Spacing = "trailing"
    pin_hints: bool = False
    reference_scale: float = 1.0
    reference_snap: float = REFERENCE_SNAP
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _check(0.0 <= self.eta <= 1.0, f"eta must be in [0, 1], got {self.eta}")
        _check(
            math.isfinite(self.guidance) and self.guidance >= 0.0,
            f"guidance must be finite and >= 0, got {self.guidance}",
        )
        _check(
            math.isfinite(self.reference_scale) and self.reference_scale >= 0.0,
            f"reference_scale must be finite and >= 0, got {self.reference_scale}",
        )
        _check(
            math.isfinite(self.reference_snap) and self.reference_snap >= 0.0,
            f"reference_snap must be finite and >= 0, got {self.reference_snap}",
        )


#: Seeds are integers in [0, SEED_LIMIT): everything a torch generator takes, in every command and
#: the Python API. Sample ``i`` of a run uses ``(seed + i) % SEED_LIMIT``.
SEED_LIMIT = 2**64


def check_seed(seed: int, what: str = "seed") -> int:
    """The one rule for seeds (see :data:`SEED_LIMIT`).

    Raises:
        ConfigError: Not an integer, negative, or 2**64 or more.
    """
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)  # ints, NumPy ints; not floats
    except TypeError:
        value = None
    _check(
        value is not None and 0 <= value < SEED_LIMIT,
        f"{what} must be an integer from 0 to 2**64 - 1 (18446744073709551615), got {seed!r}",
    )
    return int(seed)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

DataFormat = Literal["auto", "images", "paired", "parquet"]
FusedChoice = Literal["auto", True, False]
LrDecay = Literal["constant", "cosine"]
ExportDtype = Literal["float32", "float16"]


@dataclasses.dataclass(frozen=True)
class HintConfig:
    """How synthetic colour hints are drawn from a ground-truth picture (training and eval).

    The number of strokes is 0 with probability ``p_none``; otherwise it is uniform in
    [1, ``max_strokes``]. Each stroke is a dot with probability ``p_dot``; otherwise a random walk
    of ``length`` pixels, uniform in [``min_length``, ``max_length``] (measured at the working
    resolution), with direction changes of up to ``max_turn`` radians per step. Its width (in pixels
    at the working resolution) is uniform in [``min_width``, ``max_width``]. Strokes take the
    ground-truth colour of each pixel they cover and never cover line pixels. With probability
    ``drop`` all hints of a sample are removed (hint dropout, which classifier-free guidance needs).
    """

    p_none: float = 0.1
    max_strokes: int = 8
    p_dot: float = 0.3
    min_length: int = 3
    max_length: int = 16
    max_turn: float = 0.6
    min_width: int = 1
    max_width: int = 3
    drop: float = 0.1

    def __post_init__(self) -> None:
        _check(0.0 <= self.p_none <= 1.0, "hints.p_none must be in [0, 1]")
        _check(self.max_strokes >= 0, "hints.max_strokes must be >= 0")
        _check(0.0 <= self.p_dot <= 1.0, "hints.p_dot must be in [0, 1]")
        _check(1 <= self.min_length <= self.max_length, "hints.min_length must be in [1, hints.max_length]")
        _check(self.max_turn >= 0.0, "hints.max_turn must be >= 0")
        _check(1 <= self.min_width <= self.max_width, "hints.min_width must be in [1, hints.max_width]")
        _check(0.0 <= self.drop < 1.0, "hints.drop must be in [0, 1)")


WarpKind = Literal["affine", "tps"]


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """How reference pictures are made from the target picture itself (reference-based models).

    Reference-based colourisation papers train with a deformed copy of the target as the
    reference, so the model must find colours by content rather than by position. A reference is
    the whole colour picture (before the training crop) under a random warp, then lightly colour
    jittered and letterboxed onto a white square of ``conditioning.reference_size`` pixels.

    Attributes:
        p_reference: Probability that a training sample gets a reference (1 - this is the
            reference dropout that classifier-free guidance and reference-free use need).
        warp: ``affine`` (rotation, scale, shift, flip, plus a smooth random displacement field)
            for training; ``tps`` (a thin-plate-spline warp of a 3 x 3 grid of control points) is
            the held-out family ``sketchcolor eval --reference-mode self-warped`` uses.
        rotate: Largest rotation, degrees.
        scale_min, scale_max: Range of the zoom factor.
        shift: Largest translation, as a fraction of the picture's size.
        flip: Probability of a horizontal flip.
        elastic: Standard deviation of the smooth displacement (``affine``) or of the control
            point moves (``tps``), as a fraction of the picture's size.
        jitter: Largest relative change of lightness contrast and of saturation.
        p_paired: Probability of using an item's real reference (a ``reference/`` folder beside
            ``sketch/`` and ``color/``) instead of a warped copy, when it has one.
    """

    p_reference: float = 0.5
    warp: WarpKind = "affine"
    rotate: float = 25.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    shift: float = 0.15
    flip: float = 0.5
    elastic: float = 0.03
    jitter: float = 0.1
    p_paired: float = 0.8

    def __post_init__(self) -> None:
        _check(0.0 <= self.p_reference <= 1.0, "reference.p_reference must be in [0, 1]")
        _check(0.0 <= self.rotate <= 180.0, "reference.rotate must be in [0, 180]")
        _check(
            0.0 < self.scale_min <= self.scale_max, "reference.scale_min must be in (0, reference.scale_max]"
        )
        _check(0.0 <= self.shift <= 1.0, "reference.shift must be in [0, 1]")
        _check(0.0 <= self.flip <= 1.0, "reference.flip must be in [0, 1]")
        _check(0.0 <= self.elastic <= 0.5, "reference.elastic must be in [0, 0.5]")
        _check(0.0 <= self.jitter < 1.0, "reference.jitter must be in [0, 1)")
        _check(0.0 <= self.p_paired <= 1.0, "reference.p_paired must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class LineStyleConfig:
    """Random changes of line style applied to training sketches (line-art models).

    Each effect is applied independently with its own probability, at the stored resolution
    before the training crop, so the model sees the line art people actually have: thin and thick
    lines, grey or light lines, broken outlines, wobbly or blurred strokes, tinted or noisy paper
    and JPEG artefacts. ``enabled = false`` trains on the sketches as they are.

    Attributes:
        enabled: Apply the augmentation at all.
        p_any: Probability that a sketch is changed at all (the others are kept as they are).
        p_width: Probability of thinner or thicker lines (erosion or dilation of the ink by one
            pixel; ``max_width`` pixels at most).
        max_width: Largest width change in pixels.
        p_light: Probability of lighter lines: ink lightness raised to between ``light_min`` and
            its own level.
        light_min: Lightest ink level of light lines (lightness, 0 = black, 1 = paper).
        p_gaps: Probability of broken outlines: up to ``max_gaps`` discs of radius up to
            ``gap_radius`` pixels erased on the lines.
        max_gaps: Most gaps per sketch.
        gap_radius: Largest gap radius in pixels.
        p_jitter: Probability of wobbly lines (a smooth displacement of up to ``jitter`` pixels).
        jitter: Displacement scale in pixels.
        p_blur: Probability of a Gaussian blur with sigma up to ``blur``.
        blur: Largest blur sigma in pixels.
        p_paper: Probability of tinted paper: paper lightness down to ``paper_min``.
        paper_min: Darkest paper.
        p_noise: Probability of scan noise (Gaussian, standard deviation up to ``noise``).
        noise: Largest noise standard deviation (lightness units).
        p_jpeg: Probability of JPEG compression at a quality in [``jpeg_min``, 90].
        jpeg_min: Lowest JPEG quality.
        gap_hints: Probability that a sketch with gaps gets one hint stroke started next to a
            gap, so that some hints fall in regions whose outline is broken.
    """

    enabled: bool = True
    p_any: float = 0.75
    p_width: float = 0.3
    max_width: int = 1
    p_light: float = 0.25
    light_min: float = 0.7
    p_gaps: float = 0.35
    max_gaps: int = 6
    gap_radius: float = 2.5
    p_jitter: float = 0.15
    jitter: float = 1.0
    p_blur: float = 0.2
    blur: float = 0.8
    p_paper: float = 0.2
    paper_min: float = 0.85
    p_noise: float = 0.15
    noise: float = 0.04
    p_jpeg: float = 0.15
    jpeg_min: int = 40
    gap_hints: float = 0.7

    def __post_init__(self) -> None:
        for name in (
            "p_any",
            "p_width",
            "p_light",
            "p_gaps",
            "p_jitter",
            "p_blur",
            "p_paper",
            "p_noise",
            "p_jpeg",
            "gap_hints",
        ):
            _check(0.0 <= getattr(self, name) <= 1.0, f"lines.{name} must be in [0, 1]")
        _check(self.max_width >= 0, "lines.max_width must be >= 0")
        _check(0.0 <= self.light_min < 1.0, "lines.light_min must be in [0, 1)")
        _check(self.max_gaps >= 0, "lines.max_gaps must be >= 0")
        _check(self.gap_radius >= 0.0, "lines.gap_radius must be >= 0")
        _check(self.jitter >= 0.0, "lines.jitter must be >= 0")
        _check(self.blur >= 0.0, "lines.blur must be >= 0")
        _check(0.0 < self.paper_min <= 1.0, "lines.paper_min must be in (0, 1]")
        _check(0.0 <= self.noise <= 0.5, "lines.noise must be in [0, 0.5]")
        _check(1 <= self.jpeg_min <= 90, "lines.jpeg_min must be in [1, 90]")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where training pictures come from and how they are prepared.

    Attributes:
        path: A folder of colour images, a folder with ``sketch/`` and ``color/`` sub-folders, or a
            Parquet file/folder (Diffusart layout). Usually given on the command line.
        format: ``auto`` detects the layout; or ``images``, ``paired``, ``parquet``.
        val_count: Pictures held out (every k-th in sorted order) for the validation loss.
        load_size: Pictures are stored at this long side (padded square, white), before random
            crops; 0 means ``1.25 x resolution``.
        cache_dir: Where prepared arrays and extracted line art are cached ("" = the user cache,
            ``$XDG_CACHE_HOME/sketchcolor`` or ``~/.cache/sketchcolor``).
        line_variants: Line-art extractions per picture (``images`` format), each with random
            XDoG parameters, so the model sees varied line styles.
        flip: Random horizontal flips.
        min_crop: Random square crops cover between this fraction and all of each side.
    """

    path: str = ""
    format: DataFormat = "auto"
    val_count: int = 64
    load_size: int = 0
    cache_dir: str = ""
    line_variants: int = 3
    flip: bool = True
    min_crop: float = 0.8

    def __post_init__(self) -> None:
        _check(self.val_count >= 0, "data.val_count must be >= 0")
        _check(self.load_size >= 0, "data.load_size must be >= 0")
        _check(self.line_variants >= 1, "data.line_variants must be >= 1")
        _check(0.1 <= self.min_crop <= 1.0, "data.min_crop must be in [0.1, 1]")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimisation: AdamW with linear warm-up, optional cosine decay, clipping, EMA.

    Attributes:
        steps: Optimiser steps in total.
        batch_size: Pictures per optimiser step per process (split into ``grad_accum`` parts).
        grad_accum: Gradient accumulation: micro-batches per optimiser step.
        lr: Peak learning rate.
        min_lr: Learning rate at the end of the cosine decay.
        warmup_steps: Linear warm-up from 0 to ``lr``.
        decay: ``constant`` after warm-up, or ``cosine`` down to ``min_lr``.
        weight_decay: AdamW weight decay.
        beta1, beta2: AdamW betas.
        grad_clip: Clip the global gradient norm to this (0 = off).
        ema_decay: Decay of the exponential moving average of the weights (exported for inference).
        precision: ``auto`` (bf16 on CUDA when supported, else fp16 with loss scaling; fp32 on
            the CPU and MPS), or force ``fp32``, ``bf16``, ``fp16``. ``bf16`` is much faster on a
            CPU with native bfloat16 (AVX512-BF16 or AMX on x86, BF16 on Arm) but not the CPU
            default: its validation loss trailed fp32's by 3-4 % in docs/training.md's A/B.
            Autocast only: weights, optimiser state and EMA stay fp32.
        fused: Fused AdamW kernel (``torch.optim.AdamW(fused=True)``): ``auto`` uses it where this
            torch has one for the device (CUDA; the CPU in recent torch), ``true`` insists (an
            error where unsupported), ``false`` keeps torch's default kernel (foreach on CUDA,
            one tensor at a time on the CPU). The optimiser state is the same either way, so a
            run may be resumed with another setting (which it then uses).
        hint_weight: Extra loss weight at hinted pixels: a pixel the hints cover counts
            ``1 + hint_weight`` times in the training loss, the others once (0 = plain MSE). Hinted
            pixels are a few percent of a picture at most (with the default ``[hints]``, up to 8
            strokes of at most 16 x 3 working pixels on 64 x 64), so under plain MSE following a
            hint is a small part of the objective; docs/training.md measures what weighting them
            does. The validation loss
            stays unweighted, so it is comparable across settings.
    """

    steps: int = 10_000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-4
    min_lr: float = 2e-5
    warmup_steps: int = 200
    decay: LrDecay = "cosine"
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: Precision = "auto"
    fused: FusedChoice = "auto"
    hint_weight: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self.fused == "auto" or isinstance(self.fused, bool),
            f"optim.fused must be 'auto', true or false, got {self.fused!r}",
        )
        _check(self.steps >= 1, "optim.steps must be >= 1")
        _check(self.batch_size >= 1, "optim.batch_size must be >= 1")
        _check(self.grad_accum >= 1, "optim.grad_accum must be >= 1")
        _check(
            self.batch_size % self.grad_accum == 0, "optim.batch_size must be a multiple of optim.grad_accum"
        )
        _check(self.lr > 0, "optim.lr must be > 0")
        _check(0 <= self.min_lr <= self.lr, "optim.min_lr must be in [0, optim.lr]")
        _check(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        _check(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "optim.beta1/beta2 must be in [0, 1)")
        _check(self.grad_clip >= 0, "optim.grad_clip must be >= 0")
        _check(0.0 <= self.ema_decay < 1.0, "optim.ema_decay must be in [0, 1)")
        _check(
            math.isfinite(self.hint_weight) and self.hint_weight >= 0,
            "optim.hint_weight must be a finite number >= 0",
        )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Bookkeeping of a training run.

    Attributes:
        seed: Seed of every random draw (data order, augmentation, hints, noise, initial weights).
        checkpoint_every: Save a resumable checkpoint every this many steps (and at the end).
        keep_last: Keep this many step checkpoints (``best`` and ``last`` are always kept).
        eval_every: Compute the validation loss every this many steps (0 = at checkpoints only).
        sample_every: Save a sample grid PNG every this many steps (0 = never).
        sample_steps: DDIM steps of the sample grids.
        log_every: Append a metrics line every this many steps.
        num_workers: Data-loading worker processes (0 = load in the training process). Every
            sample is drawn from its own seeded generator, so the losses do not depend on it.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        threads: CPU threads for torch (0 = torch's default).
        export_dtype: Precision of exported inference files (``last``, ``best``, ``step-N``).
        channels_last: Keep activations in channels-last memory layout (about 6 % faster training
            on a 2-core CPU, see docs/training.md).
        compile: Wrap the network's forward pass in the optimisation step with ``torch.compile``
            (inductor). Needs a C++ compiler on the CPU and Triton on CUDA: a run that cannot
            compile stops with an error naming the problem (no silent fallback to eager, which
            would hide what is being measured). Saved weights never carry ``_orig_mod.``; the
            validation loss and sample grids use the uncompiled EMA model.
    """

    seed: int = 0
    checkpoint_every: int = 500
    keep_last: int = 2
    eval_every: int = 0
    sample_every: int = 1000
    sample_steps: int = 10
    log_every: int = 10
    num_workers: int = 0
    device: str = "auto"
    threads: int = 0
    export_dtype: ExportDtype = "float32"
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        _check(self.checkpoint_every >= 1, "run.checkpoint_every must be >= 1")
        _check(self.keep_last >= 1, "run.keep_last must be >= 1")
        _check(self.eval_every >= 0, "run.eval_every must be >= 0")
        _check(self.sample_every >= 0, "run.sample_every must be >= 0")
        _check(self.sample_steps >= 1, "run.sample_steps must be >= 1")
        _check(self.log_every >= 1, "run.log_every must be >= 1")
        _check(self.num_workers >= 0, "run.num_workers must be >= 0")
        _check(self.threads >= 0, "run.threads must be >= 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; what ``configs/*.toml`` files hold.

    Attributes:
        model: The model to train (saved inside every checkpoint).
        data: Data source and preparation.
        hints: Synthetic hint distribution.
        reference: How training references are made (models with reference conditioning).
        lines: Line-style augmentation of training sketches.
        optim: Optimisation.
        run: Seeds, checkpoints, logging, device.
    """

    model: ColorizerConfig = dataclasses.field(default_factory=ColorizerConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    hints: HintConfig = dataclasses.field(default_factory=HintConfig)
    reference: ReferenceConfig = dataclasses.field(default_factory=ReferenceConfig)
    lines: LineStyleConfig = dataclasses.field(default_factory=LineStyleConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def apply_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """Return ``config`` with dotted-key overrides applied, strictly.

    Args:
        config: A config dataclass instance.
        overrides: e.g. ``{"optim.lr": 1e-4, "model.model.base_channels": 32}``. Values may be
            Python values or strings, which are parsed as TOML values (``"1e-4"``, ``"true"``,
            ``"[1, 2]"``, ``"cosine"``).

    Raises:
        ConfigError: Unknown key or invalid value.
    """
    data = to_dict(config)
    for key, value in overrides.items():
        if isinstance(value, str):
            value = parse_value(value)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key '{key}'")
            node = node[part]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            raise ConfigError(f"unknown config key '{key}'")
        node[parts[-1]] = value
    if any(".conditioning." in f".{k}" for k in overrides):
        # Channel counts (and the reference encoder) follow the conditioning layout: re-derive
        # them from the new layout unless they were overridden too.
        derived = ["in_channels", "out_channels", "cond_channels"]
        if any(k.endswith("conditioning.reference") for k in overrides):
            derived += ["reference_channels", "reference_levels"]
        for node in _find_tables(data, "conditioning"):
            model = node.get("model", {})
            for k in derived:
                if not any(key.endswith(f"model.{k}") for key in overrides):
                    model.pop(k, None)
    return from_dict(type(config), data)


def _find_tables(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Tables (at any depth) that hold a sub-table named ``key``."""
    found = [data] if isinstance(data.get(key), dict) else []
    for v in data.values():
        if isinstance(v, dict):
            found += _find_tables(v, key)
    return found


def parse_value(text: str) -> Any:
    """Parse one TOML value (number, boolean, list, quoted string); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested dicts of scalars and lists (a :func:`to_dict` result) as TOML."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []

    def table(prefix: str, node: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in node.items() if isinstance(v, Mapping)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        if scalars:
            lines.append("")
        for k, v in tables.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"
