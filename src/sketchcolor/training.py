"""The training loop, as a generator of step records (the caller decides what to show).

Owns: building the model, optimiser, EMA and data stream from a :class:`TrainConfig`; the
optimisation step (AdamW, fused where available, warm-up and cosine decay, gradient accumulation
and clipping, mixed precision, optional ``torch.compile``); resumable checkpoints written
atomically; the validation loss; sample grids; DistributedDataParallel under ``torchrun``.

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
from .conditioning import Conditioning, ModelCond, hints_to_lab
from .config import SampleConfig, TrainConfig, dumps_toml, load_config_file, to_dict
from .data import PreparedData, StreamSampler, TrainingSet, item_seed, prepare_data, split_indices
from .denoiser import Denoiser
from .device import (
    fused_adamw_ok,
    pin_memory_ok,
    resolve_device,
    torch_compile_problem,
    train_autocast_dtype,
)
from .errors import CheckpointError, ConfigError, DataError, SketchcolorError
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
        data_wait: Seconds this step waited for its micro-batches: the whole sample synthesis
            (augmentation, line styles, hints, references) with ``run.num_workers = 0``, only the
            hand-over from the workers otherwise.
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
    data_wait: float = 0.0


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
    """Autocast dtype of the training step (None: fp32); see :func:`~sketchcolor.device.train_autocast_dtype`."""
    return train_autocast_dtype(config.optim.precision, device)


def _use_fused(config: TrainConfig, device: torch.device) -> bool:
    """Whether AdamW runs its fused kernel (``optim.fused``).

    Raises:
        ConfigError: ``optim.fused = true`` on a device this torch has no fused AdamW for.
    """
    choice = config.optim.fused
    if choice == "auto":
        return fused_adamw_ok(device)
    if choice and not fused_adamw_ok(device):
        raise ConfigError(
            f"optim.fused = true: torch {torch.__version__} has no fused AdamW for device '{device.type}'",
            hint='set optim.fused = "auto" or false',
        )
    return bool(choice)


def _make_optimizer(model: nn.Module, config: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    """AdamW over ``model``'s parameters; ``fused=False`` keeps torch's default kernel choice."""
    o = config.optim
    return torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
        fused=True if fused else None,
    )  # fmt: skip


def _compile(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` for the optimisation step (``run.compile``).

    Raises:
        ConfigError: torch.compile cannot work here (no C++ compiler, no Triton, an unsupported
            Python); failures during compilation itself are reported by :func:`_compile_failure`.
    """
    problem = torch_compile_problem(device)
    if problem is not None:
        raise ConfigError(f"run.compile = true: {problem}", hint="set run.compile = false")
    return typing.cast(nn.Module, torch.compile(model))


def _compile_failure(exc: BaseException, step: int) -> ConfigError | None:
    """A one-line error for an exception raised by torch.compile's machinery, else None."""
    module = type(exc).__module__ or ""
    if not module.startswith(("torch._dynamo", "torch._inductor")):
        return None
    text = " ".join(str(exc).split()) or type(exc).__name__
    return ConfigError(
        f"run.compile = true: torch.compile failed at step {step + 1} ({type(exc).__name__}: {text[:200]})",
        hint="set run.compile = false (e.g. --set run.compile=false); TORCH_LOGS=+dynamo shows why",
    )


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


@dataclasses.dataclass
class _Run:
    """Everything the training loop works with, built once by :func:`_set_up`."""

    config: TrainConfig
    run_dir: Path
    dist: DistInfo
    device: torch.device
    model: nn.Module  # the plain network (weights saved from here)
    train_model: nn.Module  # the same, wrapped in DDP when several processes train
    ema: _EMA
    optimizer: torch.optim.Optimizer
    scaler: Any
    amp_dtype: torch.dtype | None
    schedule: NoiseSchedule
    denoiser: Denoiser
    memory_format: torch.memory_format
    prepared: PreparedData
    dataset: TrainingSet
    val_set: TrainingSet | None
    batches: Iterator[dict[str, torch.Tensor]]
    metrics_path: Path
    tb: Any
    start_step: int
    best_val: float
    recipe: str

    @property
    def micro_batch(self) -> int:
        return self.config.optim.batch_size // self.config.optim.grad_accum


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

    The loop reads top to bottom: set up (:func:`_set_up`), then per step one optimisation step
    (:func:`_optimisation_step`), the validation loss when due (:func:`_validation_loss`), and on
    the main process the log line, sample grid and checkpoint when due (:func:`_report`).

    Args:
        config: Every setting of the run (``config.data.path`` names the pictures).
        output_dir: Run folder (created; must not hold checkpoints unless ``resume``).
        resume: Continue from the newest checkpoint in ``output_dir``.
        init_from: Start from the weights of this model file (fine-tuning); its model config
            replaces ``config.model``.
        recipe: Free text stored in exported model files (e.g. the command line).
        on_prepare: ``callable(done, total)`` while pictures are prepared.

    ``config.run.threads`` sets torch's thread count for the run only: the caller's count is back
    once the generator is exhausted, closed or fails.

    Raises:
        DataError: Missing, empty or too small data; a run folder that already has checkpoints.
        CheckpointError: Nothing to resume from, or a checkpoint of another architecture.
        TrainingDiverged: The loss became NaN or infinite.
    """
    threads = torch.get_num_threads()  # run.threads applies to the run only (restored below)
    try:
        yield from _loop(
            _set_up(
                config,
                Path(output_dir),
                resume=resume,
                init_from=init_from,
                recipe=recipe,
                on_prepare=on_prepare,
            )
        )
    finally:
        torch.set_num_threads(threads)


def _loop(run: _Run) -> Iterator[StepInfo]:
    """The steps of :func:`train` after set-up."""
    config = run.config
    started = time.perf_counter()
    recent: list[tuple[float, int]] = []
    window_losses: list[float] = []
    for step in range(run.start_step, config.optim.steps):
        lr = learning_rate(step, config)
        loss_value, data_wait = _optimisation_step(run, step, lr)
        done = step + 1
        now = time.perf_counter()
        recent = (recent + [(now, config.optim.batch_size * run.dist.world_size)])[-20:]
        span = recent[-1][0] - recent[0][0]
        images_per_s = sum(n for _, n in recent[1:]) / span if span > 0 else 0.0
        window_losses.append(loss_value)

        at_checkpoint = done % config.run.checkpoint_every == 0 or done == config.optim.steps
        at_eval = at_checkpoint or (config.run.eval_every and done % config.run.eval_every == 0)
        val_loss = None
        if at_eval and run.val_set is not None:
            val_loss = _validation_loss(
                run.ema.model, run.schedule, config.model.prediction, run.val_set, run.micro_batch, run.device,
                config.run.seed,
            )  # fmt: skip
        checkpoint_dir = grid = None
        if run.dist.main:
            if done % config.run.log_every == 0 or done == config.optim.steps:
                _log(run, {"step": done, "loss": sum(window_losses) / len(window_losses), "lr": lr,
                           "images_per_s": round(images_per_s, 2), "time": round(now - started, 2)})  # fmt: skip
                window_losses = []
            if val_loss is not None:
                _log(run, {"step": done, "val_loss": val_loss})
            if config.run.sample_every and (
                done % config.run.sample_every == 0 or done == config.optim.steps
            ):
                grid = _sample_grid(
                    run.ema.model,
                    config,
                    run.val_set or run.dataset,
                    run.run_dir / "samples" / f"step-{done:06d}.png",
                )
        if at_checkpoint:
            improved = val_loss is not None and val_loss < run.best_val
            if improved:
                run.best_val = typing.cast(float, val_loss)
            if run.dist.main:
                checkpoint_dir = _save(run, done, improved or run.val_set is None)
            if run.dist.world_size > 1:
                dist.barrier()
        yield StepInfo(done, config.optim.steps, loss_value, lr, images_per_s, now - started, val_loss,
                       checkpoint_dir, grid, data_wait)  # fmt: skip
    if run.tb is not None:
        run.tb.close()


def _set_up(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    init_from: str | Path | None,
    recipe: str,
    on_prepare: Callable[[int, int], None] | None,
) -> _Run:
    """Device, data, model, EMA, optimiser, resumed state and run folder (see :func:`train`)."""
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
    need_sketch = model_cfg.conditioning.mode == "lineart"
    if dist_info.main:
        prepared, warnings = prepare_data(
            config.data, model_cfg.resolution, need_sketch=need_sketch, workers=config.run.num_workers,
            seed=config.run.seed, progress=on_prepare,
        )  # fmt: skip
        for w in warnings:
            log.warning(w)
    if dist_info.world_size > 1:
        dist.barrier()  # rank 0 filled the cache; the others now read it
        if not dist_info.main:
            prepared, _ = prepare_data(
                config.data, model_cfg.resolution, need_sketch=need_sketch, seed=config.run.seed
            )
    train_idx, val_idx = split_indices(len(prepared.names), config.data.val_count)
    if dist_info.main and len(val_idx) < config.data.val_count:
        log.warning(
            "%s: %d pictures: validation uses %d of them, not data.val_count = %d (at most half the set)",
            config.data.path, len(prepared.names), len(val_idx), config.data.val_count,
        )  # fmt: skip
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
    fused = _use_fused(config, device)
    optimizer = _make_optimizer(model, config, fused)
    amp_dtype = _precision(config, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    start_step, best_val = 0, math.inf
    if resume:
        start_step, best_val = _load_state(existing[-1], model, ema, optimizer, scaler, device)
    train_model: nn.Module = model
    if dist_info.world_size > 1:
        ddp_kwargs: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
        train_model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    if config.run.compile:
        # Only the optimisation step's forward (and so its backward) is compiled; weights are
        # saved from ``model`` itself, so no ``_orig_mod.`` prefix reaches a file.
        train_model = _compile(train_model, device)
    if dist_info.main:
        log.info(
            "training on %s: %s autocast, %s AdamW, torch.compile %s, %s, %d data worker(s)",
            device, "fp32 (no)" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
            "fused" if fused else "default", "on" if config.run.compile else "off",
            "channels-last" if config.run.channels_last else "NCHW", config.run.num_workers,
        )  # fmt: skip

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

    # The data stream: micro-batch b is a pure function of (seed, b), so resuming is exact.
    sets = {"hints": config.hints, "lines": config.lines, "reference": config.reference}
    dataset = TrainingSet(prepared, train_idx, model_cfg, data_config=config.data, **sets)  # type: ignore[arg-type]
    val_set = (
        TrainingSet(prepared, val_idx, model_cfg, data_config=config.data, augment=False, **sets)  # type: ignore[arg-type]
        if val_idx
        else None
    )
    micro = config.optim.batch_size // config.optim.grad_accum
    sampler = StreamSampler(
        len(train_idx), micro, config.run.seed, rank=dist_info.rank, world_size=dist_info.world_size,
        start=start_step * config.optim.grad_accum,
    )  # fmt: skip
    loader = _data_loader(dataset, sampler, config, device, dist_info.rank)
    return _Run(
        config=config, run_dir=run_dir, dist=dist_info, device=device, model=model, train_model=train_model,
        ema=ema, optimizer=optimizer, scaler=scaler, amp_dtype=amp_dtype, schedule=schedule,
        denoiser=Denoiser(train_model, schedule, model_cfg.prediction), memory_format=memory_format,
        prepared=prepared, dataset=dataset, val_set=val_set, batches=iter(loader), metrics_path=metrics_path,
        tb=tb, start_step=start_step, best_val=best_val, recipe=recipe,
    )  # fmt: skip


def _data_loader(
    dataset: torch.utils.data.Dataset[Any],
    sampler: torch.utils.data.Sampler[Any],
    config: TrainConfig,
    device: torch.device,
    rank: int,
) -> torch.utils.data.DataLoader[Any]:
    """The loader of the training stream, with ``run.num_workers`` worker processes.

    Samples never use a worker's global generator (each is drawn from its own generator seeded by
    its key, see :class:`~sketchcolor.data.TrainingSet`), so the stream is the same with any number
    of workers. The loader still gets an explicit generator seeded from (run seed, rank): the
    workers' base seed then comes from it rather than from a draw on the caller's global
    generator, so each worker's own torch, ``random`` and NumPy seeds are a fixed function of the
    run too, and building the loader leaves the global generator alone.
    """
    workers = config.run.num_workers
    generator = torch.Generator().manual_seed(item_seed(config.run.seed, 8, rank))
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=_collate,
        pin_memory=pin_memory_ok(device), persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None, generator=generator,
    )  # fmt: skip


def _batch_cond(
    batch: dict[str, torch.Tensor],
    device: torch.device,
    memory_format: torch.memory_format,
    *,
    skip_empty_reference: bool = True,
) -> ModelCond:
    """The network's conditioning of a collated batch, on ``device``.

    A batch in which no item has a reference passes None (the encoder is skipped) unless
    ``skip_empty_reference`` is False: a compiled network then keeps one graph, where None would
    make torch.compile build a second one; the presence flags switch the path off exactly.
    """
    non_blocking = device.type == "cuda"
    channels = batch["cond"].to(device, non_blocking=non_blocking).contiguous(memory_format=memory_format)
    reference = batch.get("reference")
    if reference is not None:
        if skip_empty_reference and not bool(reference[:, 3].any()):
            reference = None  # nobody in this batch has a reference: skip the encoder
        else:
            reference = reference.to(device, non_blocking=non_blocking).contiguous(
                memory_format=memory_format
            )
    return ModelCond(channels, reference)


def hint_loss_weight(channels: torch.Tensor, config: TrainConfig) -> torch.Tensor | None:
    """Per-pixel loss weights ``1 + optim.hint_weight * hint_mask`` (N, 1, H, W), or None at weight 0.

    Args:
        channels: (N, C, H, W) conditioning channels of a batch (:meth:`Conditioning.as_channels`).
        config: The run's configuration (its conditioning layout names the hint-mask channel).
    """
    if config.optim.hint_weight == 0:
        return None
    index = config.model.conditioning.channels.index("hint_mask")
    mask = channels[:, index : index + 1].float()
    return 1.0 + config.optim.hint_weight * mask


def _optimisation_step(run: _Run, step: int, lr: float) -> tuple[float, float]:
    """One optimiser step (all micro-batches).

    Timesteps, noise and dropout of micro-batch m are seeded from (run seed, step, rank, m).

    Returns:
        The step's loss, averaged over processes, and the seconds spent waiting for batches.

    Raises:
        TrainingDiverged: The loss is NaN or infinite (nothing is saved).
        ConfigError: ``run.compile`` is on and torch.compile failed.
    """
    config, device, memory_format = run.config, run.device, run.memory_format
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.train_model.train()
    run.optimizer.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), device=device)
    non_blocking = device.type == "cuda"
    data_wait = 0.0
    for m in range(config.optim.grad_accum):
        waited = time.perf_counter()
        batch = next(run.batches)
        data_wait += time.perf_counter() - waited
        x0 = batch["x0"].to(device, non_blocking=non_blocking).contiguous(memory_format=memory_format)
        cond = _batch_cond(batch, device, memory_format, skip_empty_reference=not config.run.compile)
        gen = torch.Generator().manual_seed(item_seed(config.run.seed, 2, step, run.dist.rank, m))
        t = torch.randint(0, run.schedule.num_train_steps, (x0.shape[0],), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device, non_blocking=non_blocking)
        noise = noise.contiguous(memory_format=memory_format)
        torch.manual_seed(item_seed(config.run.seed, 3, step, run.dist.rank, m))
        last_micro = m == config.optim.grad_accum - 1
        sync = (
            contextlib.nullcontext()
            if (last_micro or run.dist.world_size == 1)
            else typing.cast(nn.parallel.DistributedDataParallel, run.train_model).no_sync()
        )
        try:
            with sync:
                with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
                    weight = hint_loss_weight(cond.channels, config)
                    loss = run.denoiser.loss(x0, t, noise, cond, weight) / config.optim.grad_accum
                (run.scaler.scale(loss) if run.scaler else loss).backward()
        except Exception as exc:
            failure = _compile_failure(exc, step) if config.run.compile else None
            if failure is None:
                raise
            raise failure from None
        step_loss += loss.detach()
    if run.dist.world_size > 1:
        dist.all_reduce(step_loss)
        step_loss /= run.dist.world_size
    loss_value = float(step_loss)
    if not math.isfinite(loss_value):
        last = checkpoints_in(run.run_dir)
        where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"loss became {loss_value} at step {step + 1}; stopped without saving ({where})",
            hint="resume with a lower learning rate, e.g. --resume RUN --set optim.lr=...",
        )
    if run.scaler:
        run.scaler.unscale_(run.optimizer)
    if config.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.optim.grad_clip)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.ema.update(run.model, step)
    return loss_value, data_wait


def _log(run: _Run, record: dict[str, Any]) -> None:
    """Append a metrics line (and its TensorBoard scalars)."""
    _write_metrics(run.metrics_path, record)
    if run.tb is not None:
        for key, value in record.items():
            if key in ("loss", "lr", "val_loss"):
                run.tb.add_scalar(
                    ("val/" if key == "val_loss" else "train/") + key.removeprefix("val_"),
                    value,
                    record["step"],
                )


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
        cond = _batch_cond(b, device, torch.contiguous_format)
        loss = denoiser.loss(b["x0"].to(device), t.to(device), noise.to(device), cond)
        total += float(loss) * n
        count += n
    return total / max(count, 1)


@torch.no_grad()
def _sample_grid(
    model: nn.Module, config: TrainConfig, source: TrainingSet, path: Path, rows: int = 4
) -> Path:
    """Rows of sketch | hints | [reference |] output | truth from the EMA model, as one PNG."""
    import torch.nn.functional as F

    from .color import lab_to_rgb, model_to_lab

    rows = min(rows, len(source))
    items = _collate([source[(i, item_seed(config.run.seed, 6, i))] for i in range(rows)])
    bundle = ModelBundle.from_model(model, config.model)
    layout = config.model.conditioning
    sketch, hint_rgb, hint_mask = items["sketch"], items["hint_rgb"], items["hint_mask"]
    cond = Conditioning(sketch, hints_to_lab(hint_rgb, hint_mask), hint_mask)
    if layout.region_fill:
        cond = cond.with_region_fill(layout.region_gap)
    if layout.reference:
        cond = dataclasses.replace(
            cond, reference_lab=items["reference_lab"], reference_mask=items["reference"][:, 3, 0, 0]
        )
    gens = [torch.Generator().manual_seed(item_seed(config.run.seed, 7, i)) for i in range(rows)]
    x0 = sample(bundle, cond, SampleConfig(steps=config.run.sample_steps), gens).cpu()
    if layout.mode == "photo":
        lab = torch.cat([sketch * 100.0, x0 * config.model.color.ab_scale], dim=1)
    else:
        lab = model_to_lab(x0, config.model.color)
    out = lab_to_rgb(lab)
    if layout.mode == "lineart":
        out = out * sketch
    hints_view = hint_rgb * hint_mask + (1 - hint_mask)  # hints on white
    columns = [sketch.expand(-1, 3, -1, -1), hints_view]
    if layout.reference:
        ref = lab_to_rgb(items["reference_lab"]) * items["reference"][:, 3:4, :1, :1]  # black: no reference
        columns.append(F.interpolate(ref, size=sketch.shape[-2:], mode="bilinear", align_corners=False))
    tiles = torch.cat([*columns, out, items["rgb"]], dim=3)
    grid = torch.cat(list(tiles), dim=1)
    save_image(tensor_to_image(grid), path, overwrite=True)
    return path


def _save(run: _Run, step: int, is_best: bool) -> Path:
    """Write checkpoint ``step`` atomically (temporary folder renamed), update last/best, prune."""
    config = run.config
    folder = run.run_dir / "checkpoints" / f"step-{step:06d}"
    tmp = run.run_dir / "checkpoints" / f".step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    dtype = torch.float16 if config.run.export_dtype == "float16" else torch.float32
    save_checkpoint(
        tmp / MODEL_FILE, run.ema.model, config.model, step=step, data_digest=run.prepared.digest, dtype=dtype,
        recipe=run.recipe,
    )  # fmt: skip
    state = {
        "step": step,
        "best_val": run.best_val,
        "model": unwrap_model(run.model).state_dict(),
        "ema": run.ema.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else {},
    }
    torch.save(state, tmp / STATE_FILE)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    for name in ["last.safetensors"] + (["best.safetensors"] if is_best else []):
        with atomic_write(run.run_dir / name, overwrite=True) as t:
            shutil.copyfile(folder / MODEL_FILE, t)
    for old in checkpoints_in(run.run_dir)[: -config.run.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load AdamW's state saved by a run with any ``optim.fused`` setting into this one.

    The moments are the same tensors for every kernel, but ``load_state_dict`` would also bring
    back the saved run's kernel choice (``fused``/``foreach`` of its parameter groups): this
    run's setting is put back, and each ``step`` counter is moved to where this kernel keeps it
    (the parameter's device for the fused kernel, the CPU otherwise), as a fresh optimiser would.
    """
    kernels = [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, (fused, foreach) in zip(optimizer.param_groups, kernels, strict=True):
        group["fused"], group["foreach"] = fused, foreach
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                on_device = bool(fused or group.get("capturable"))
                optimizer.state[p]["step"] = (
                    step.to(device=p.device, dtype=torch.float32) if on_device else step.to("cpu")
                )


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
    _load_optimizer_state(optimizer, state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["step"]), float(state["best_val"])
