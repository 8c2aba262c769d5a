"""Threads for CPU work that releases the GIL: one shared pool and an ordered parallel map.

Owns: how many threads CPU-side picture work uses by default (:func:`compose_threads`, as many as
torch uses), the shared pool of worker threads, and :func:`parallel_map`. numpy, scipy and
scikit-image release the GIL in their large loops, so plain threads share such work out over the
cores with no processes and no copies of the picture. Used by the region labelling
(:mod:`sketchcolor.conditioning`) and the full-size composition (:mod:`sketchcolor.compose`).
Imports nothing from the package.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def compose_threads() -> int:
    """Threads the composition uses by default: as many as torch uses (``torch.get_num_threads``).

    ``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) therefore makes the whole of
    colourising single-threaded.
    """
    return max(1, torch.get_num_threads())


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The shared pool of composition threads (created on first use; never waits on itself)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="sketchcolor-compose"
            )
        return _pool


def _forget_pool() -> None:
    # A forked child (a DataLoader worker, say) has none of the parent's threads.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def parallel_map(fn: Callable[[Any], T], items: Sequence[Any], threads: int | None = None) -> list[T]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads, the calling one included.

    Items are taken in order by whichever thread is free, so a thread the OS sets aside does not
    hold the others up. The first exception is raised once every running item has finished.
    Safe to nest: a caller waits only for work that has started.
    """
    n = min(compose_threads() if threads is None else threads, len(items))
    if n <= 1:
        return [fn(x) for x in items]
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)

    def work() -> None:
        while not errors:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                errors.append(exc)

    helpers = [_executor().submit(work) for _ in range(n - 1)]
    work()
    for helper in helpers:
        if not helper.cancel():  # not started yet: nothing left for it to do
            helper.result()
    if errors:
        raise errors[0]
    return results
