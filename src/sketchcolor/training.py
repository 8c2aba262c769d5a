"""The training loop, as a generator of step records (the caller decides what to show).

Owns: building the model, optimiser, EMA and data stream from a :class:`TrainConfig`; the
optimisation step (AdamW, warm-up and cosine decay, gradient accumulation and clipping, mixed
precision on CUDA); resumable checkpoints written atomically; the validation loss; sample grids;
DistributedDataParallel under ``torchrun``.

Run folder layout::

    RUN/config.toml                       the resolved configuration
    RUN/metrics.jsonl                     one JSON object per logged step / validation
    RUN/samples/step-000500.png           sketch | hints | output | truth, per row
    RUN/checkpoints/step-000500/          model.safetensors (EMA weights) + state.pt
    RUN/last.safetensors                  EMA weights of the newest checkpoint
    RUN/best.safetensors                  EMA weights with the lowest validation loss

Exact resumption: every random draw of step ``s`` (data order, augmentation, hints, timesteps,
noise, dropout) is seeded from (run seed, s, rank), and the model, EMA and optimiser states are
saved. A resumed run therefore repeats an uninterrupted run's losses bit for bit on the same
machine and thread count. ``state.pt`` holds only tensors and primitive types and is loaded with
``torch.load(weights_only=True)``.

Library code: no printing; progress is yielded as :class:`StepInfo`, warnings go to ``logging``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import ModelBundle, load_checkpoint, load_state_strict, save_checkpoint, unwrap_model
from .conditioning import Conditioning, hints_to_lab
from .config import SampleConfig, TrainConfig, dumps_toml, load_config_file, to_dict
from .data import PreparedData, StreamSampler, TrainingSet, item_seed, prepare_data, split_indices
from .denoiser import Denoiser
from .device import pin_memory_ok, resolve_device
from .errors import CheckpointError, DataError, SketchcolorError
from .io import atomic_write, save_image, tensor_to_image
from .models.unet import UNet
from .pipeline import sample
from .schedules import NoiseSchedule

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MODEL_FILE = "model.safetensors"


class TrainingDiverged(SketchcolorError, RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving."""


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What happened in one optimiser step (yielded by :func:`train`).

    Attributes:
        step: Steps completed (1-based).
        total_steps: The run's ``optim.steps``.
        loss: This step's training loss (mean over processes).
        lr: Learning rate used.
        images_per_s: Training throughput over the recent steps (all processes).
        elapsed: Seconds since this process started training.
        val_loss: Validation loss, when computed at this step.
        checkpoint: Folder of the checkpoint written at this step, if any.
        sample_grid: PNG written at this step, if any.
    """

    step: int
    total_steps: int
    loss: float
    lr: float
    images_per_s: float
    elapsed: float
    val_loss: float | None = None
    checkpoint: Path | None = None
    sample_grid: Path | None = None


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group started by ``torchrun`` (env ``WORLD_SIZE`` > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate at (0-based) ``step``: linear warm-up, then constant or cosine decay."""
    o = config.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.decay == "constant":
        return o.lr
    span = max(1, o.steps - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / span)
    return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _precision(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    p = config.optim.precision
    if p == "fp32" or (p == "auto" and device.type != "cuda"):
        return None
    if p == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if p == "bf16" else torch.float16


def checkpoints_in(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved configuration saved in a run folder.

    Raises:
        DataError: The folder has no run configuration.
    """
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise DataError(f"{run_dir}: not a training run folder (no config.toml)")
    return load_config_file(TrainConfig, path)


class _EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_params: list[torch.Tensor] = list(self.model.parameters())
        params: list[torch.Tensor] = [p.detach() for p in unwrap_model(model).parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)


def _write_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (by a run that was killed after its checkpoint)."""
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


def _collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


def train(
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    recipe: str = "",
    on_prepare: Callable[[int, int], None] | None = None,
) -> Iterator[StepInfo]:
    """Train a colouriser, yielding a :class:`StepInfo` after every optimiser step.

    Args:
        config: Every setting of the run (``config.data.path`` names the pictures).
        output_dir: Run folder (created; must not hold checkpoints unless ``resume``).
        resume: Continue from the newest checkpoint in ``output_dir``.
        init_from: Start from the weights of this model file (fine-tuning); its model config
            replaces ``config.model``.
        recipe: Free text stored in exported model files (e.g. the command line).
        on_prepare: ``callable(done, total)`` while pictures are prepared.

    Raises:
        DataError: Missing, empty or too small data; a run folder that already has checkpoints.
        CheckpointError: Nothing to resume from, or a checkpoint of another architecture.
        TrainingDiverged: The loss became NaN or infinite.
    """
    run_dir = Path(output_dir)
    dist_info = init_distributed(config.run.device)
    device = resolve_device(config.run.device)
    if device.type == "cuda" and dist_info.world_size > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)

    existing = checkpoints_in(run_dir)
    if resume and not existing:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    if not resume and existing:
        raise DataError(
            f"{run_dir}: already holds checkpoints of a run",
            hint=f"continue it with --resume {run_dir}, or choose another --out",
        )
    init_bundle: ModelBundle | None = None
    if init_from is not None and not resume:
        init_bundle = load_checkpoint(init_from)
        if init_bundle.config != config.model:
            log.warning("using the model configuration of %s (fine-tuning keeps its architecture)", init_from)
            config = dataclasses.replace(config, model=init_bundle.config)

    # Data: prepared once (cached), split into train and validation by a fixed rule.
    model_cfg = config.model
    if dist_info.main:
        prepared, warnings = prepare_data(
            config.data, model_cfg.resolution, need_sketch=model_cfg.conditioning.mode == "lineart",
            workers=config.run.num_workers, seed=config.run.seed, progress=on_prepare,
        )  # fmt: skip
        for w in warnings:
            log.warning(w)
    if dist_info.world_size > 1:
        dist.barrier()  # rank 0 filled the cache; the others now read it
        if not dist_info.main:
            prepared, _ = prepare_data(
                config.data,
                model_cfg.resolution,
                need_sketch=model_cfg.conditioning.mode == "lineart",
                seed=config.run.seed,
            )
    train_idx, val_idx = split_indices(len(prepared.names), config.data.val_count)
    if dist_info.main and len(val_idx) < config.data.val_count:
        log.warning(
            "%s: %d pictures: validation uses %d of them, not data.val_count = %d (at most half the set)",
            config.data.path, len(prepared.names), len(val_idx), config.data.val_count,
        )  # fmt: skip
    micro = config.optim.batch_size // config.optim.grad_accum
    if len(train_idx) < config.optim.batch_size * dist_info.world_size:
        raise DataError(
            f"{config.data.path}: only {len(train_idx)} training pictures for a batch of "
            f"{config.optim.batch_size} x {dist_info.world_size} process(es)",
            hint="add pictures or lower --batch-size",
        )

    # Model, EMA, optimiser. Initial weights come from the run seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        model = UNet(model_cfg.model)
    if init_bundle is not None:
        model.load_state_dict(unwrap_model(init_bundle.model).state_dict())
    memory_format = torch.channels_last if config.run.channels_last else torch.contiguous_format
    model.to(device).to(memory_format=memory_format)
    schedule = NoiseSchedule(model_cfg.schedule)
    ema = _EMA(model, config.optim.ema_decay)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, betas=(config.optim.beta1, config.optim.beta2),
        weight_decay=config.optim.weight_decay,
    )  # fmt: skip
    amp_dtype = _precision(config, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    start_step = 0
    best_val = math.inf
    if resume:
        start_step, best_val = _load_state(existing[-1], model, ema, optimizer, scaler, device)
    train_model: nn.Module = model
    if dist_info.world_size > 1:
        ddp_kwargs: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
        train_model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    denoiser = Denoiser(train_model, schedule, model_cfg.prediction)

    # Run folder (rank 0 alone writes).
    metrics_path = run_dir / "metrics.jsonl"
    tb = None
    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "config.toml", overwrite=True) as tmp:
            tmp.write_text(dumps_toml(to_dict(config)))
        if resume:
            _truncate_metrics(metrics_path, start_step)
        tb = _tensorboard(run_dir)

    dataset = TrainingSet(prepared, train_idx, model_cfg, config.hints, config.data)
    sampler = StreamSampler(
        len(train_idx), micro, config.run.seed, rank=dist_info.rank, world_size=dist_info.world_size,
        start=start_step * config.optim.grad_accum,
    )  # fmt: skip
    workers = config.run.num_workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=_collate,
        pin_memory=pin_memory_ok(device), persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )  # fmt: skip
    val_set = (
        TrainingSet(prepared, val_idx, model_cfg, config.hints, config.data, augment=False)
        if val_idx
        else None
    )
    batches = iter(loader)
    started = time.perf_counter()
    recent: list[tuple[float, int]] = []
    window_losses: list[float] = []
    non_blocking = device.type == "cuda"

    for step in range(start_step, config.optim.steps):
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_model.train()
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for m in range(config.optim.grad_accum):
            batch = next(batches)
            x0 = batch["x0"].to(device, non_blocking=non_blocking).contiguous(memory_format=memory_format)
            cond = batch["cond"].to(device, non_blocking=non_blocking).contiguous(memory_format=memory_format)
            # Timesteps, noise and dropout of this micro-batch are seeded from (seed, step, rank, m).
            gen = torch.Generator().manual_seed(item_seed(config.run.seed, 2, step, dist_info.rank, m))
            t = torch.randint(0, schedule.num_train_steps, (x0.shape[0],), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device, non_blocking=non_blocking)
            noise = noise.contiguous(memory_format=memory_format)
            torch.manual_seed(item_seed(config.run.seed, 3, step, dist_info.rank, m))
            last_micro = m == config.optim.grad_accum - 1
            sync = (
                contextlib.nullcontext()
                if (last_micro or dist_info.world_size == 1)
                else typing.cast(nn.parallel.DistributedDataParallel, train_model).no_sync()
            )
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = denoiser.loss(x0, t, noise, cond) / config.optim.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
            step_loss += loss.detach()
        if dist_info.world_size > 1:
            dist.all_reduce(step_loss)
            step_loss /= dist_info.world_size
        loss_value = float(step_loss)
        if not math.isfinite(loss_value):
            last = checkpoints_in(run_dir)
            where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"loss became {loss_value} at step {step + 1}; stopped without saving ({where})",
                hint="resume with a lower learning rate, e.g. --resume RUN --set optim.lr=...",
            )
        if scaler:
            scaler.unscale_(optimizer)
        if config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        ema.update(model, step)

        done = step + 1
        now = time.perf_counter()
        recent.append((now, config.optim.batch_size * dist_info.world_size))
        recent = recent[-20:]
        span = recent[-1][0] - recent[0][0]
        images_per_s = sum(n for _, n in recent[1:]) / span if span > 0 else 0.0
        window_losses.append(loss_value)

        val_loss = None
        checkpoint_dir = None
        grid = None
        at_checkpoint = done % config.run.checkpoint_every == 0 or done == config.optim.steps
        at_eval = at_checkpoint or (config.run.eval_every and done % config.run.eval_every == 0)
        if at_eval and val_set is not None:
            val_loss = _validation_loss(
                ema.model, schedule, model_cfg.prediction, val_set, micro, device, config.run.seed
            )
        if dist_info.main:
            if done % config.run.log_every == 0 or done == config.optim.steps:
                record = {
                    "step": done, "loss": sum(window_losses) / len(window_losses), "lr": lr,
                    "images_per_s": round(images_per_s, 2), "time": round(now - started, 2),
                }  # fmt: skip
                _write_metrics(metrics_path, record)
                if tb is not None:
                    tb.add_scalar("train/loss", record["loss"], done)
                    tb.add_scalar("train/lr", lr, done)
                window_losses = []
            if val_loss is not None:
                _write_metrics(metrics_path, {"step": done, "val_loss": val_loss})
                if tb is not None:
                    tb.add_scalar("val/loss", val_loss, done)
            if config.run.sample_every and (
                done % config.run.sample_every == 0 or done == config.optim.steps
            ):
                grid = _sample_grid(
                    ema.model, config, val_set or dataset, run_dir / "samples" / f"step-{done:06d}.png"
                )
            if at_checkpoint:
                improved = val_loss is not None and val_loss < best_val
                if improved:
                    best_val = val_loss  # type: ignore[assignment]
                checkpoint_dir = _save(
                    run_dir,
                    done,
                    model,
                    ema,
                    optimizer,
                    scaler,
                    best_val,
                    config,
                    prepared,
                    recipe,
                    improved or val_set is None,
                )
        elif at_checkpoint and val_loss is not None and val_loss < best_val:
            best_val = val_loss
        if at_checkpoint and dist_info.world_size > 1:
            dist.barrier()
        yield StepInfo(
            done,
            config.optim.steps,
            loss_value,
            lr,
            images_per_s,
            now - started,
            val_loss,
            checkpoint_dir,
            grid,
        )
    if tb is not None:
        tb.close()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


@torch.no_grad()
def _validation_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    prediction: Any,
    val_set: TrainingSet,
    batch: int,
    device: torch.device,
    seed: int,
) -> float:
    """Mean loss of the EMA model on the validation pictures, with fixed hints, steps and noise."""
    denoiser = Denoiser(model, schedule, prediction)
    total, count = 0.0, 0
    for start in range(0, len(val_set), batch):
        items = [val_set[(i, item_seed(seed, 4, i))] for i in range(start, min(len(val_set), start + batch))]
        b = _collate(items)
        gen = torch.Generator().manual_seed(item_seed(seed, 5, start))
        n = b["x0"].shape[0]
        # Evenly spread timesteps so the estimate covers the whole noise range at every evaluation.
        t = (
            ((torch.arange(n) + 0.5) / n * schedule.num_train_steps)
            .long()
            .clamp(max=schedule.num_train_steps - 1)
        )
        noise = torch.randn(b["x0"].shape, generator=gen)
        loss = denoiser.loss(b["x0"].to(device), t.to(device), noise.to(device), b["cond"].to(device))
        total += float(loss) * n
        count += n
    return total / max(count, 1)


@torch.no_grad()
def _sample_grid(
    model: nn.Module, config: TrainConfig, source: TrainingSet, path: Path, rows: int = 4
) -> Path:
    """Rows of sketch | hints | output | truth from the EMA model, written as one PNG."""
    from .color import lab_to_rgb, model_to_lab

    rows = min(rows, len(source))
    items = _collate([source[(i, item_seed(config.run.seed, 6, i))] for i in range(rows)])
    bundle = ModelBundle.from_model(model, config.model)
    sketch, hint_rgb, hint_mask = items["sketch"], items["hint_rgb"], items["hint_mask"]
    cond = Conditioning(sketch, hints_to_lab(hint_rgb, hint_mask), hint_mask)
    if config.model.conditioning.region_fill:
        cond = cond.with_region_fill()
    gens = [torch.Generator().manual_seed(item_seed(config.run.seed, 7, i)) for i in range(rows)]
    x0 = sample(bundle, cond, SampleConfig(steps=config.run.sample_steps), gens).cpu()
    if config.model.conditioning.mode == "photo":
        lab = torch.cat([sketch * 100.0, x0 * config.model.color.ab_scale], dim=1)
    else:
        lab = model_to_lab(x0, config.model.color)
    out = lab_to_rgb(lab)
    if config.model.conditioning.mode == "lineart":
        out = out * sketch
    hints_view = hint_rgb * hint_mask + (1 - hint_mask)  # hints on white
    tiles = torch.cat([sketch.expand(-1, 3, -1, -1), hints_view, out, items["rgb"]], dim=3)
    grid = torch.cat(list(tiles), dim=1)
    save_image(tensor_to_image(grid), path, overwrite=True)
    return path


def _save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    ema: _EMA,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    best_val: float,
    config: TrainConfig,
    prepared: PreparedData,
    recipe: str,
    is_best: bool,
) -> Path:
    """Write checkpoint ``step`` atomically (temporary folder renamed), update last/best, prune."""
    folder = run_dir / "checkpoints" / f"step-{step:06d}"
    tmp = run_dir / "checkpoints" / f".step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    dtype = torch.float16 if config.run.export_dtype == "float16" else torch.float32
    save_checkpoint(
        tmp / MODEL_FILE,
        ema.model,
        config.model,
        step=step,
        data_digest=prepared.digest,
        dtype=dtype,
        recipe=recipe,
    )
    state = {
        "step": step,
        "best_val": best_val,
        "model": unwrap_model(model).state_dict(),
        "ema": ema.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
    }
    torch.save(state, tmp / STATE_FILE)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    for name in ["last.safetensors"] + (["best.safetensors"] if is_best else []):
        with atomic_write(run_dir / name, overwrite=True) as t:
            shutil.copyfile(folder / MODEL_FILE, t)
    for old in checkpoints_in(run_dir)[: -config.run.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_state(
    folder: Path,
    model: nn.Module,
    ema: _EMA,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    device: torch.device,
) -> tuple[int, float]:
    """Restore a checkpoint folder; returns (step, best validation loss)."""
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"{folder / STATE_FILE}: cannot read training state ({exc})") from None
    try:
        load_state_strict(model, state["model"], str(folder / STATE_FILE))
        load_state_strict(ema.model, state["ema"], str(folder / STATE_FILE))
    except CheckpointError as exc:
        raise CheckpointError(
            f"{folder}: checkpoint of another architecture than the run's config ({exc.message.split(': ', 1)[-1]})"
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["step"]), float(state["best_val"])
