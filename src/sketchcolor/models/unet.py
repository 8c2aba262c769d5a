"""The U-Net denoiser network, in one file, readable top-down.

``UNet(config)(x_t, t, cond) -> prediction`` with the channel count of ``x_t``.

* The conditioning channels are concatenated to ``x_t`` at the input (improved-diffusion's
  super-resolution model and Diffusart concatenate the sketch the same way).
* ``t`` enters through one sinusoidal embedding and an MLP (:meth:`UNet.embed_time`), the only
  place the network handles time; residual blocks apply it as a per-channel scale and shift.
* Levels halve the resolution; self-attention runs on the levels listed in
  ``config.attention_levels`` and in the middle block.
* Optionally (``config.reference_channels`` > 0) a reference picture is encoded by a small CNN
  (:class:`ReferenceEncoder`) into a set of tokens, one per 4 x 4 patch; blocks on
  ``config.reference_levels`` and in the middle cross-attend to them, so colours are found by
  content wherever they are in the reference, and their mean joins the time embedding (the
  overall palette). A per-item flag switches this path off exactly (reference dropout, guidance).
* The network does not know whether it predicts eps, v or x0, nor what colour space it works in.

Built from :class:`~sketchcolor.config.ModelConfig` only; imports nothing from the package but
``config``.
"""

from __future__ import annotations

import math
import typing

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) steps ``t`` (N,) -> (N, dim).

    Frequencies are geometric from 1 to 1/max_period (Vaswani et al. 2017, as in DDPM).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so its residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding as scale and shift in the middle."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_ch, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all pixels, with a residual connection."""

    def __init__(self, ch: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        # (N, heads, HW, d) layout for scaled_dot_product_attention.
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class CrossAttention(nn.Module):
    """Multi-head attention from every pixel to the reference tokens, with a residual connection.

    The residual branch is scaled per item by ``keep`` (1: use the reference, 0: the block acts
    exactly as if there were no cross-attention).
    """

    def __init__(self, ch: int, context_ch: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm = nn.GroupNorm(groups, ch)
        self.norm_context = nn.LayerNorm(context_ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Linear(context_ch, 2 * ch)
        # Not zero-initialised (unlike the self-attention output): trained from scratch, the
        # reference path learns several times faster when its queries and keys get gradients at
        # once; ``keep`` = 0 still switches it off exactly.
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x)).reshape(n, self.heads, d, h * w).transpose(-1, -2)  # (N, heads, HW, d)
        k, v = self.kv(self.norm_context(context)).reshape(n, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, HW, d)
        return x + keep * self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class ReferenceEncoder(nn.Module):
    """A reference picture (N, 4, S, S) -> tokens (N, (S/4)^2, width), one per 4 x 4 patch.

    Input channels: L, a, b in model space and the per-item presence plane (see
    :meth:`sketchcolor.conditioning.Conditioning.as_reference`). Two stride-2 stages of
    GroupNorm-SiLU-conv residual blocks describe each patch's content; because normalisation
    removes absolute levels (a flat red and a flat blue picture would look alike), each token
    also gets a linear projection of its patch's mean colour. No positional encoding, so the
    tokens say what colours go with what content, not where.
    """

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.colour = nn.Linear(4, width)
        self.conv_in = nn.Conv2d(4, width, 3, padding=1)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "norm": nn.GroupNorm(groups, width),
                        "conv": nn.Conv2d(width, width, 3, padding=1),
                        "down": nn.Conv2d(width, width, 3, stride=2, padding=1),
                    }
                )
            )
        self.norm_out = nn.GroupNorm(groups, width)

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(reference)
        for block in self.blocks:
            b = typing.cast(nn.ModuleDict, block)
            h = b["down"](h + b["conv"](F.silu(b["norm"](h))))
        h = F.silu(self.norm_out(h)).flatten(2).transpose(1, 2)  # (N, tokens, width)
        patch_colour = F.avg_pool2d(reference, 4).flatten(2).transpose(1, 2)  # (N, tokens, 4)
        return h + self.colour(patch_colour)


class Block(nn.Module):
    """A residual block optionally followed by self-attention and cross-attention to a reference."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_ch: int, cfg: ModelConfig, attention: bool, cross: bool = False
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_ch, cfg.norm_groups, cfg.dropout)
        self.attn = Attention(out_ch, cfg.head_channels, cfg.norm_groups) if attention else None
        self.cross = (
            CrossAttention(out_ch, cfg.reference_channels, cfg.head_channels, cfg.norm_groups)
            if cross
            else None
        )

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.cross is not None and context is not None:
            x = self.cross(x, *context)
        return x


def narrowest_feature_map(config: ModelConfig, size: tuple[int, int]) -> int:
    """The smallest side of any feature map the network makes for an (H, W) input.

    Each downsampling convolution (stride 2, padding 1) turns a side ``s`` into ``ceil(s / 2)``.
    """
    side = min(size)
    for _ in range(len(config.channel_mults) - 1):
        side = (side + 1) // 2
    return side


class UNet(nn.Module):
    """U-Net mapping (x_t, t, cond) to a prediction shaped like x_t.

    Args:
        config: The network's shape; nothing else is needed to build it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        base = config.base_channels
        emb_ch = 4 * base
        widths = [base * m for m in config.channel_mults]
        levels = len(widths)

        self.time_mlp = nn.Sequential(nn.Linear(base, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.conv_in = nn.Conv2d(config.in_channels + config.cond_channels, base, 3, padding=1)
        self.reference = (
            ReferenceEncoder(config.reference_channels, config.norm_groups)
            if config.reference_channels
            else None
        )
        # The reference's overall palette also enters every residual block through the time
        # embedding's scale and shift: GroupNorm removes spatially uniform offsets, so a global
        # "colour it like this" signal needs this path, while cross-attention places colours.
        self.reference_global = (
            nn.Linear(config.reference_channels, emb_ch) if config.reference_channels else None
        )
        cross_levels = set(config.reference_levels)

        # Encoder: every block's output is kept as a skip connection for the decoder.
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths = [base]
        ch = base
        for i, width in enumerate(widths):
            attn = i in config.attention_levels
            stage = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stage.append(Block(ch, width, emb_ch, config, attn, i in cross_levels))
                ch = width
                skip_widths.append(ch)
            self.down.append(stage)
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_widths.append(ch)

        use_mid_attn = len(config.attention_levels) > 0
        self.mid1 = Block(ch, ch, emb_ch, config, use_mid_attn, bool(cross_levels))
        self.mid2 = Block(ch, ch, emb_ch, config, False)

        # Decoder: one block more per level than the encoder, each eating one skip connection.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels)):
            width = widths[i]
            attn = i in config.attention_levels
            stage = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                stage.append(Block(ch + skip_widths.pop(), width, emb_ch, config, attn, i in cross_levels))
                ch = width
            self.up.append(stage)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))

        self.norm_out = nn.GroupNorm(config.norm_groups, ch)
        # With a reference, the output's normalisation is modulated by the embedding too (as DiT's
        # final layer): GroupNorm removes uniform offsets from the features, so without this the
        # reference's colours would reach the output only through second-order interactions,
        # which a small model learns slowly (tests/test_reference.py's toy set).
        self.out_emb = nn.Linear(emb_ch, 2 * ch) if config.reference_channels else None
        self.conv_out = _zero(nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """The one place time enters the network: (N,) steps -> (N, 4 * base_channels)."""
        return self.time_mlp(timestep_embedding(t, self.config.base_channels))

    def check_input(
        self, x_t: torch.Tensor, cond: torch.Tensor, reference: torch.Tensor | None = None
    ) -> None:
        """Raise ValueError with a clear message when inputs do not fit the network."""
        cfg = self.config
        if reference is not None:
            if self.reference is None:
                raise ValueError("this network takes no reference (config.reference_channels is 0)")
            if reference.dim() != 4 or reference.shape[0] != x_t.shape[0] or reference.shape[1] != 4:
                raise ValueError(f"reference must be (N, 4, S, S) matching x_t, got {tuple(reference.shape)}")
            if reference.shape[-1] % 4 or reference.shape[-2] % 4:
                raise ValueError(f"reference size must be a multiple of 4, got {tuple(reference.shape[-2:])}")
        if x_t.dim() != 4 or x_t.shape[1] != cfg.in_channels:
            raise ValueError(f"x_t must be (N, {cfg.in_channels}, H, W), got {tuple(x_t.shape)}")
        if (
            cond.shape[0] != x_t.shape[0]
            or cond.shape[1] != cfg.cond_channels
            or cond.shape[2:] != x_t.shape[2:]
        ):
            raise ValueError(
                f"cond must be (N, {cfg.cond_channels}, H, W) matching x_t {tuple(x_t.shape)}, got {tuple(cond.shape)}"
            )
        h, w = x_t.shape[-2:]
        m = cfg.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"input size {w}x{h} is not a multiple of {m} (this U-Net has {len(cfg.channel_mults)} levels); "
                "pad the input first (sketchcolor.io.pad_to_multiple)"
            )

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict from a noisy sample.

        Args:
            x_t: (N, in_channels, H, W), H and W multiples of ``config.size_multiple``.
            t: (N,) training steps (integers, or floats for continuous time).
            cond: (N, cond_channels, H, W) conditioning channels.
            reference: Optional (N, 4, S, S) reference input (model-space L, a, b and a presence
                plane; items whose plane is 0 are treated as having no reference), for networks
                with a reference encoder. None: no item has a reference.

        Returns:
            (N, out_channels, H, W).

        Raises:
            ValueError: Input shapes that the network cannot take.
        """
        self.check_input(x_t, cond, reference)
        emb = self.embed_time(t.to(x_t.device))
        context = None
        if reference is not None and self.reference is not None and self.reference_global is not None:
            reference = reference.to(x_t.dtype)
            keep = reference[:, 3:4, :1, :1]  # (N, 1, 1, 1): 1 where the item has a reference
            tokens = self.reference(reference)
            context = (tokens, keep)
            emb = emb + keep.view(-1, 1) * self.reference_global(tokens.mean(dim=1))
        h = self.conv_in(torch.cat([x_t, cond.to(x_t.dtype)], dim=1))
        skips = [h]
        for i, stage in enumerate(self.down):
            for block in typing.cast(nn.ModuleList, stage):
                h = block(h, emb, context)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid1(h, emb, context), emb)
        for i, stage in enumerate(self.up):
            for block in typing.cast(nn.ModuleList, stage):
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.norm_out(h)
        if self.out_emb is not None:
            scale, shift = self.out_emb(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.conv_out(F.silu(h))
