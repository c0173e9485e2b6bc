"""Memory the run uses: the host allocator's policy, peak figures for metrics and benchmarks,
and a warning when a batch's activations will not fit.

Host allocator. glibc serves each allocation above its mmap threshold (32 MiB at most, by
default) with a fresh mmap and unmaps it on free, so a CPU batch of 64 x 3 x 224 x 224 floats
page-faults on every step (a third of the CPU augmentation's time). The engine used to raise
that threshold and the trim threshold to 1 GiB for good: every freed block stayed resident,
above the live peak, spread over the per-thread arenas the decode threads create (the figures:
bench/results/host-memory-threads.md). `bound_host_allocator` keeps the gain with a
bound: blocks up to `MMAP_BELOW` (a few batches, never an activation of a large layer) come
from the heap and are reused; the heap gives back free memory above `TRIM_ABOVE`; and the
number of arenas is capped so decode threads share them instead of each keeping its own.
"""
from __future__ import annotations

import ctypes
import logging
import resource
import sys

import torch

log = logging.getLogger("medtrain.memory")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc mallopt parameters (malloc.h)
# Chosen by peak RSS against glibc's defaults (bench/results/host-memory-threads.md): larger
# values only keep more freed activations.
MMAP_BELOW = 48 << 20   # > one float batch at 224 px, batch 64 (38.5 MB) and its uint8 source
TRIM_ABOVE = 64 << 20   # free heap beyond this goes back to the kernel
ARENAS = 2              # main thread + the loader threads, shared


def _libc():
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return None


def bound_host_allocator() -> bool:
    """Reuse freed batch-sized blocks without keeping every freed block resident (see above).
    Linux glibc only; elsewhere a no-op (False)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return all(bool(libc.mallopt(param, value)) for param, value in
               ((M_MMAP_THRESHOLD, MMAP_BELOW), (M_TRIM_THRESHOLD, TRIM_ABOVE), (M_ARENA_MAX, ARENAS)))


def release_freed_host_memory() -> bool:
    """Give free heap pages back to the kernel now (glibc `malloc_trim(0)`). The trim threshold
    alone only returns memory at the top of the heap: one live block allocated above the freed
    batches keeps them all resident. Called once per epoch (and by tests), never per step: it
    walks the arenas, a few milliseconds. False where there is no glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB); DataLoader workers are separate processes."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (2**20 if sys.platform == "darwin" else 2**10)


def peak_device_mb(device: torch.device | str | None) -> float:
    """Peak memory torch allocated on a CUDA device (MiB); 0 on the CPU (counted in the RSS)."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return 0.0
    return torch.cuda.max_memory_allocated(device) / 2**20


def peak_memory(device: torch.device | str | None) -> dict[str, float]:
    """The `memory.*` keys of metrics.json and every benchmark's JSON line."""
    return {"memory.peak_rss_mb": round(peak_rss_mb(), 1), "memory.peak_device_mb": round(peak_device_mb(device), 1)}


def available_mb(device: torch.device) -> float:
    """Memory a batch may still take: free device memory on CUDA, available RAM on the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    import psutil  # a declared dependency; imported here so the module stays cheap
    return psutil.virtual_memory().available / 2**20


def activation_mb(model: torch.nn.Module, batch: torch.Tensor, *extra: torch.Tensor) -> float:
    """Memory autograd keeps for one training step of `model` on `batch` (and `extra` inputs, such
    as tabular metadata): the tensors saved for backward, counted by storage (saved_tensors_hooks)
    while a forward pass runs. The pass runs on the batch given: call it with a small batch and
    scale, or with the real one once. Random state and BatchNorm statistics are left as found, so
    a deterministic run trains the same with or without this check."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics: left as found
    devices = [batch.device] if batch.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch, *extra)  # dropout draws from the forked generator, not the run's
    del out
    with torch.no_grad():
        for saved, live in zip(buffers, model.buffers()):
            live.copy_(saved)
    return sum(seen.values()) / 2**20


def warn_if_batch_will_not_fit(model: torch.nn.Module, example: torch.Tensor, batch_size: int,
                               device: torch.device, *extra: torch.Tensor) -> bool:
    """Log one line when `batch_size` samples' activations exceed the memory available.
    `example` is a small batch (2 samples is enough) of the training input, `extra` the model's
    other inputs for it. Returns whether it fits."""
    need = activation_mb(model, example, *extra) * batch_size / example.shape[0]
    have = available_mb(device)
    if need <= have:
        log.info("activations of batch %d: ~%.0f MiB of %.0f MiB available", batch_size, need, have)
        return True
    log.warning("batch %d needs ~%.0f MiB of activations for this model but %.0f MiB are available "
                "(%s): expect swapping or an out-of-memory error; lower --batch-size or --image-size",
                batch_size, need, have, "free device memory" if device.type == "cuda" else "available RAM")
    return False
