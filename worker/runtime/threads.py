"""torch's CPU threads in a process that runs a model, and the guard that keeps a forked child safe.

``WORKER_TORCH_THREADS`` (environment) sets torch's intra-op thread count in the process that
loads a model; unset, torch's default (one per core) is kept. With a prefork pool of N processes
on C cores set it to C // N: oversubscribed OpenMP threads spin against each other. Measured with
benchmarks.runtime on the 2-core dev box while a training job kept it busy: one image through a
small ResNet-20 took a median 1.2 ms but p95 448 ms with 2 threads, 0.7 ms and p95 6 ms with one.
``WORKER_LONE_IMAGE_THREADS`` (environment; unset: off) is the thread count for a forward pass of
one image only. A lone job arrives when the machine is quiet (under load the worker takes batches),
so the cores the web side would need are idle while it runs: with 2 instead of 1 thread one image
through the default bundle took 16 ms instead of 31 (fp32, 2-core AMD EPYC with AVX2). Batches keep
``WORKER_TORCH_THREADS``, leaving the other cores to the web processes under load.

GNU OpenMP (torch's CPU thread pool on Linux) cannot be used in a child forked from a process
that already ran a parallel region: the child's first multi-threaded op hangs forever. A child
of such a parent is therefore kept at one thread (`os.register_at_fork`); `worker.runtime.predictor`
warns when it loads a model there. This module imports no Django.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

THREADS_ENV = "WORKER_TORCH_THREADS"
LONE_THREADS_ENV = "WORKER_LONE_IMAGE_THREADS"

_ran_multithreaded = False  # this process ran a prediction with more than one torch thread
_single_thread_after_fork = False  # this process was forked from one that had


def threads_from_env(name: str) -> int | None:
    """The positive thread count in environment variable ``name``, or None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return threads


def single_threaded_after_fork() -> bool:
    """True in a child forked from a process that had run a model on several threads."""
    return _single_thread_after_fork


def configure_threads() -> int:
    """Apply WORKER_TORCH_THREADS if set; return the thread count torch now uses."""
    if _single_thread_after_fork:
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        return 1
    threads = threads_from_env(THREADS_ENV)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextmanager
def threads_for(device: torch.device, images: int, lone_threads: int | None) -> Iterator[int]:
    """Run a forward pass of ``images`` images on ``lone_threads`` threads when it is one image on
    the CPU (`LONE_THREADS_ENV`), else on the process's threads; yields the count used. Marks the
    process as having run multi-threaded, for the fork guard."""
    global _ran_multithreaded
    before = torch.get_num_threads()
    switch = (
        device.type == "cpu" and images == 1 and lone_threads is not None and lone_threads != before
    ) and not _single_thread_after_fork
    if switch:
        torch.set_num_threads(lone_threads)
    try:
        if device.type == "cpu" and torch.get_num_threads() > 1:
            _ran_multithreaded = True
        yield torch.get_num_threads()
    finally:
        if switch:
            torch.set_num_threads(before)


def _after_fork_in_child() -> None:
    global _single_thread_after_fork
    if _ran_multithreaded or _single_thread_after_fork:
        _single_thread_after_fork = True
        torch.set_num_threads(1)


os.register_at_fork(after_in_child=_after_fork_in_child)
