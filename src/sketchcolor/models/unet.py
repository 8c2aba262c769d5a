"""The U-Net denoiser network, in one file, readable top-down.

``UNet(config)(x_t, t, cond) -> prediction`` with the channel count of ``x_t``.

* The conditioning channels are concatenated to ``x_t`` at the input (improved-diffusion's
  super-resolution model and Diffusart concatenate the sketch the same way).
* ``t`` enters through one sinusoidal embedding and an MLP (:meth:`UNet.embed_time`), the only
  place the network handles time; residual blocks apply it as a per-channel scale and shift.
* Levels halve the resolution; self-attention runs on the levels listed in
  ``config.attention_levels`` and in the middle block.
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


class Block(nn.Module):
    """A residual block optionally followed by attention (one U-Net stage element)."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, cfg: ModelConfig, attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_ch, cfg.norm_groups, cfg.dropout)
        self.attn = Attention(out_ch, cfg.head_channels, cfg.norm_groups) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


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

        # Encoder: every block's output is kept as a skip connection for the decoder.
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths = [base]
        ch = base
        for i, width in enumerate(widths):
            attn = i in config.attention_levels
            stage = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stage.append(Block(ch, width, emb_ch, config, attn))
                ch = width
                skip_widths.append(ch)
            self.down.append(stage)
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_widths.append(ch)

        use_mid_attn = len(config.attention_levels) > 0
        self.mid1 = Block(ch, ch, emb_ch, config, use_mid_attn)
        self.mid2 = Block(ch, ch, emb_ch, config, False)

        # Decoder: one block more per level than the encoder, each eating one skip connection.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels)):
            width = widths[i]
            attn = i in config.attention_levels
            stage = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                stage.append(Block(ch + skip_widths.pop(), width, emb_ch, config, attn))
                ch = width
            self.up.append(stage)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))

        self.norm_out = nn.GroupNorm(config.norm_groups, ch)
        self.conv_out = _zero(nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """The one place time enters the network: (N,) steps -> (N, 4 * base_channels)."""
        return self.time_mlp(timestep_embedding(t, self.config.base_channels))

    def check_input(self, x_t: torch.Tensor, cond: torch.Tensor) -> None:
        """Raise ValueError with a clear message when inputs do not fit the network."""
        cfg = self.config
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

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict from a noisy sample.

        Args:
            x_t: (N, in_channels, H, W), H and W multiples of ``config.size_multiple``.
            t: (N,) training steps (integers, or floats for continuous time).
            cond: (N, cond_channels, H, W) conditioning channels.

        Returns:
            (N, out_channels, H, W).

        Raises:
            ValueError: Input shapes that the network cannot take.
        """
        self.check_input(x_t, cond)
        emb = self.embed_time(t.to(x_t.device))
        h = self.conv_in(torch.cat([x_t, cond.to(x_t.dtype)], dim=1))
        skips = [h]
        for i, stage in enumerate(self.down):
            for block in typing.cast(nn.ModuleList, stage):
                h = block(h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid1(h, emb), emb)
        for i, stage in enumerate(self.up):
            for block in typing.cast(nn.ModuleList, stage):
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
