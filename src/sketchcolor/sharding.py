"""Splitting one batch over many processes: shards from the scheduler's environment, manifests merged.

A batch is split into N shards by position in the sorted input list (shard I of N takes inputs
I-1, I-1+N, ...). :func:`shard_from_environment` reads I and N from the engine that started the
process (a SLURM job array, a Kubernetes Indexed Job, torchrun); each shard writes its own
manifest (:func:`manifest_name`), and :func:`merge_manifests` joins them into the manifest one
unsharded run writes. See docs/scale.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import SketchcolorError

__all__ = ["SHARD_COUNT_ENV", "manifest_name", "merge_manifests", "shard_from_environment"]

#: Environment variable giving the number of shards of a Kubernetes Indexed Job (the pods see
#: their own ``JOB_COMPLETION_INDEX`` but not the Job's ``completions``).
SHARD_COUNT_ENV = "SKETCHCOLOR_SHARD_COUNT"


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise SketchcolorError(f"--shard auto: {name}={value!r} is not an integer") from None


def shard_from_environment(env: Mapping[str, str], count: int | None = None) -> tuple[int, int, str]:
    """The shard (I, N) a scheduler gave this process, and a line saying where it came from.

    Read, in this order (an array job of torchrun groups combines both levels):

    * a SLURM job array: ``SLURM_ARRAY_TASK_ID`` within ``SLURM_ARRAY_TASK_MIN`` ..
      ``SLURM_ARRAY_TASK_MAX`` (step ``SLURM_ARRAY_TASK_STEP``), checked against
      ``SLURM_ARRAY_TASK_COUNT`` (or the count alone, counting from 0);
    * a Kubernetes Indexed Job: ``JOB_COMPLETION_INDEX`` (from 0), with the number of shards from
      ``count`` (``--shard-count``) or :data:`SHARD_COUNT_ENV`;
    * torchrun (or any launcher setting them): ``RANK`` and ``WORLD_SIZE``.

    Nothing of these: one shard, the whole work.

    Raises:
        SketchcolorError: An inconsistent environment (an index outside its range, a SLURM array
            that is not an evenly spaced range, both SLURM and Kubernetes, a Kubernetes index
            without a count).
    """
    outer: tuple[int, int, str] | None = None  # (index from 0, count, description)
    task = _env_int(env, "SLURM_ARRAY_TASK_ID")
    index = _env_int(env, "JOB_COMPLETION_INDEX")
    if task is not None and index is not None:
        raise SketchcolorError(
            "--shard auto: both a SLURM array (SLURM_ARRAY_TASK_ID) and a Kubernetes job "
            "(JOB_COMPLETION_INDEX) are in the environment",
            hint="give the shard explicitly with --shard I/N",
        )
    if task is not None:
        low, high = _env_int(env, "SLURM_ARRAY_TASK_MIN"), _env_int(env, "SLURM_ARRAY_TASK_MAX")
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
        total = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        if low is None or high is None:
            if total is None:
                raise SketchcolorError(
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_MIN/MAX nor "
                    "SLURM_ARRAY_TASK_COUNT",
                    hint="give the shard explicitly with --shard I/N",
                )
            low, high, step = 0, total - 1, 1
        span = (high - low) // step + 1
        if step < 1 or (high - low) % step or (total is not None and total != span):
            raise SketchcolorError(
                f"--shard auto: the SLURM array {low}-{high}:{step} with {total} tasks is not an evenly "
                "spaced range, so its tasks cannot be numbered as shards",
                hint="submit the array as a range (--array=0-N), or give --shard I/N",
            )
        if not (low <= task <= high) or (task - low) % step:
            raise SketchcolorError(
                f"--shard auto: SLURM_ARRAY_TASK_ID={task} is not in the array {low}-{high}:{step}"
            )
        outer = (
            (task - low) // step,
            span,
            f"SLURM array task {task} of {low}-{high}" + (f":{step}" if step > 1 else ""),
        )
    elif index is not None:
        total = count if count is not None else _env_int(env, SHARD_COUNT_ENV)
        if total is None:
            raise SketchcolorError(
                f"--shard auto: JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) but no number of shards",
                hint=f"pass --shard-count N (the Job's completions) or set {SHARD_COUNT_ENV}",
            )
        if not 0 <= index < total:
            raise SketchcolorError(
                f"--shard auto: JOB_COMPLETION_INDEX={index} is not below the count {total}"
            )
        outer = (index, total, f"Kubernetes Indexed Job, completion index {index} of {total}")
    elif count is not None:
        raise SketchcolorError(
            "--shard-count is only for --shard auto in a Kubernetes Indexed Job (no JOB_COMPLETION_INDEX here)"
        )
    inner: tuple[int, int, str] | None = None
    world = _env_int(env, "WORLD_SIZE")
    if world is not None and world > 1:
        rank = _env_int(env, "RANK")
        if rank is None or not 0 <= rank < world:
            raise SketchcolorError(f"--shard auto: WORLD_SIZE={world} but RANK={env.get('RANK')!r}")
        inner = (rank, world, f"torchrun rank {rank} of {world}")
    if outer is None and inner is None:
        return (
            1,
            1,
            "no scheduler in the environment (torchrun, SLURM array, Kubernetes Indexed Job): one shard",
        )
    o_i, o_n, o_what = outer or (0, 1, "")
    i_i, i_n, i_what = inner or (0, 1, "")
    shard = o_i * i_n + i_i
    return shard + 1, o_n * i_n, " and ".join(w for w in (o_what, i_what) if w)


def manifest_name(shard_i: int, shard_n: int) -> str:
    """The manifest of shard I of N (``sketchcolor-manifest.json`` for the whole work)."""
    return (
        "sketchcolor-manifest.json"
        if shard_n == 1
        else f"sketchcolor-manifest.shard-{shard_i}-of-{shard_n}.json"
    )


def merge_manifests(output_dir: Path, *, require_complete: bool = True) -> tuple[Path, dict[str, Any]]:
    """Merge the shard manifests in ``output_dir`` into ``sketchcolor-manifest.json``.

    Every shard ``1..N`` of one run must be there, with the same parameters (apart from
    ``shard``) and, with ``require_complete``, no entry still ``pending``. The merged manifest
    is what one unsharded run writes: the parameters with ``"shard": "1/1"`` and
    ``"shards": N``, and every entry in input order.

    Returns:
        The merged manifest's path and its content.

    Raises:
        SketchcolorError: No shard manifests, a missing or unfinished shard, shards of different runs.
    """
    found: dict[int, dict[int, Path]] = {}
    for path in output_dir.glob("sketchcolor-manifest.shard-*-of-*.json"):
        try:
            i, n = (
                int(v)
                for v in path.name.removeprefix("sketchcolor-manifest.shard-")
                .removesuffix(".json")
                .split("-of-")
            )
        except ValueError:
            continue
        found.setdefault(n, {})[i] = path
    if not found:
        raise SketchcolorError(
            f"{output_dir}: no shard manifests (sketchcolor-manifest.shard-I-of-N.json) to merge"
        )
    if len(found) > 1:
        raise SketchcolorError(
            f"{output_dir}: shard manifests of runs with different shard counts ({', '.join(map(str, sorted(found)))})",
            hint="remove the manifests of the old run",
        )
    ((n, paths),) = found.items()
    missing = [i for i in range(1, n + 1) if i not in paths]
    if missing:
        raise SketchcolorError(
            f"{output_dir}: shard(s) {', '.join(map(str, missing))} of {n} have no manifest yet",
            hint="run them first (each shard writes its manifest as it goes)",
        )
    docs = [json.loads(paths[i].read_text()) for i in range(1, n + 1)]

    def same(params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in ("shard", "shard_source")}

    for i, doc in enumerate(docs[1:], start=2):
        if same(doc["parameters"]) != same(docs[0]["parameters"]):
            differing = sorted(
                k for k in set(doc["parameters"]) | set(docs[0]["parameters"])
                if k not in ("shard", "shard_source") and doc["parameters"].get(k) != docs[0]["parameters"].get(k)
            )  # fmt: skip
            raise SketchcolorError(
                f"{paths[i]}: made with other settings than shard 1 ({', '.join(differing)})",
                hint="rerun that shard with the run's settings",
            )
    # Shard I holds sketches I-1, I-1+N, ... of the sorted list: interleaving restores its order.
    lists = [doc["entries"] for doc in docs]
    entries = [lists[k % n][k // n] for k in range(sum(map(len, lists))) if k // n < len(lists[k % n])]
    if len(entries) != sum(map(len, lists)):
        raise SketchcolorError(
            f"{output_dir}: the shard manifests do not come from one run (their sizes disagree)"
        )
    pending = [e["input"] for e in entries if e["status"] == "pending"]
    if require_complete and pending:
        raise SketchcolorError(
            f"{output_dir}: {len(pending)} item(s) not done yet (e.g. {pending[0]})",
            hint="let every shard finish (or rerun the interrupted one) before merging",
        )
    params = {
        **{k: v for k, v in docs[0]["parameters"].items() if k != "shard_source"},
        "shard": "1/1",
        "shards": n,
    }
    merged = {"parameters": params, "entries": entries}
    from .io import write_bytes_atomic  # io imports torch: not at import time (cold start)

    target = output_dir / manifest_name(1, 1)
    write_bytes_atomic(target, json.dumps(merged, indent=2, default=str).encode(), overwrite=True)
    return target, merged
