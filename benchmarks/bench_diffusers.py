"""Side by side with diffusers: the same-sized denoiser and the same DDIM steps, timed in one run.

Usage:
    python benchmarks/bench_diffusers.py [--model PATH] [--steps 20] [--batch 1] [--repeat 5]

Needs the ``bench`` extra (diffusers). Like with like:

* the network: diffusers' ``UNet2DModel`` built with the bundled model's shape — the same widths per
  level, one ResNet block per level on the way down and two on the way up, self-attention at the
  deepest level and in the middle block, GroupNorm groups, input channels = sample + conditioning
  (the conditioning is concatenated to the noisy sample, as sketchcolor does) — so the parameter
  counts nearly agree (both are printed);
* the sampler: diffusers' ``DDIMScheduler`` (``timestep_spacing="trailing"``, the same cosine
  schedule given as betas, v-prediction) against ``sketchcolor.samplers.sample_ddim``;
* the same resolution (the model's working resolution), batch, steps, threads and input.

Weights are random for both (speed does not depend on them). Reported: the median wall time of a
full sampling loop for each, and the ratio. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def diffusers_unet(config):  # noqa: ANN001, ANN201
    from diffusers import UNet2DModel

    m = config.model
    widths = tuple(m.base_channels * k for k in m.channel_mults)
    down = tuple("AttnDownBlock2D" if i in m.attention_levels else "DownBlock2D" for i in range(len(widths)))
    up = tuple(
        "AttnUpBlock2D" if i in m.attention_levels else "UpBlock2D" for i in reversed(range(len(widths)))
    )
    return UNet2DModel(
        sample_size=config.resolution,
        in_channels=m.in_channels + m.cond_channels,
        out_channels=m.out_channels,
        block_out_channels=widths,
        layers_per_block=m.num_res_blocks,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=m.head_channels,
        norm_num_groups=m.norm_groups,
        add_attention=bool(m.attention_levels),
        resnet_time_scale_shift="scale_shift",  # as sketchcolor's ResBlock: time as scale and shift
    ).eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from diffusers import DDIMScheduler

    from sketchcolor.pipeline import load_model
    from sketchcolor.samplers import sample_ddim

    bundle = load_model(args.model, "cpu")
    config = bundle.config
    r, n = config.resolution, args.batch
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(n, config.model.cond_channels, r, r, generator=gen)
    noise = torch.randn(n, config.model.in_channels, r, r, generator=gen)

    ours_params = sum(p.numel() for p in bundle.model.parameters())
    peer = diffusers_unet(config)
    peer_params = sum(p.numel() for p in peer.parameters())
    scheduler = DDIMScheduler(
        num_train_timesteps=config.schedule.num_train_steps,
        trained_betas=bundle.schedule.betas.clamp(max=0.999).numpy().tolist(),
        prediction_type="v_prediction"
        if config.prediction == "v"
        else "epsilon"
        if config.prediction == "eps"
        else "sample",
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
    )

    def run_ours() -> torch.Tensor:
        cl = cond.contiguous(memory_format=torch.channels_last)
        ts = bundle.schedule.timesteps(args.steps)
        with torch.inference_mode():
            return sample_ddim(
                bundle.denoiser, noise.contiguous(memory_format=torch.channels_last), bundle.schedule, ts, cl
            )

    def run_peer(model: torch.nn.Module, memory_format: torch.memory_format) -> torch.Tensor:
        scheduler.set_timesteps(args.steps)
        x = noise.clone().contiguous(memory_format=memory_format)
        c = cond.contiguous(memory_format=memory_format)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                out = model(torch.cat([x, c], dim=1), t).sample
                x = scheduler.step(out, t, x).prev_sample
        return x

    def timed(fn) -> float:  # noqa: ANN001
        fn()  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    ours = timed(run_ours)
    theirs = timed(lambda: run_peer(peer, torch.contiguous_format))
    peer_cl = peer.to(memory_format=torch.channels_last)
    theirs_cl = timed(lambda: run_peer(peer_cl, torch.channels_last))
    print(f"threads {torch.get_num_threads()}, resolution {r} px, batch {n}, DDIM {args.steps} steps")
    print()
    print("| denoiser + sampler | parameters | sampling time (s) |")
    print("| --- | --- | --- |")
    print(f"| sketchcolor UNet + sample_ddim | {ours_params:,} | {ours:.3f} |")
    print(f"| diffusers UNet2DModel + DDIMScheduler | {peer_params:,} | {theirs:.3f} |")
    print(f"| diffusers, channels-last | {peer_params:,} | {theirs_cl:.3f} |")
    print()
    print(
        f"diffusers / sketchcolor time ratio: {theirs / ours:.2f} (channels-last diffusers: {theirs_cl / ours:.2f})"
    )


if __name__ == "__main__":
    main()
