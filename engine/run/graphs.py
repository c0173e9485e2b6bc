"""The whole training step (forward, backward, optimizer, EMA, accumulators) as one CUDA graph.

`CudaGraphStep(step_fn)` is called like the step itself. Its first `warmup` calls run the
step eagerly on a side stream (as the CUDA-graph docs require: this allocates the optimizer
state, runs cuDNN autotuning and, with `--compile`, compiles); they are real training
steps, so a graphed run trains on exactly the batches an eager run does. The next call
captures the step on static input buffers and replays it for that batch; every later call
copies the loader's batch into the buffers and replays. Learning rate and EMA decay are read
on the device from tables at the device step counter, so one graph replays the schedule.

Why manual capture and not `torch.compile(mode="reduce-overhead")`: inductor's CUDA graphs
cover the model's forward and backward only (the optimizer, EMA and accumulators still launch
kernel by kernel) and inductor quietly falls back to no graphs on mutated inputs, CPU tensors
or dynamic shapes. `cudagraph_skips()` reads that counter so callers (bench/step.py) can report it.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("medtrain.graphs")


class CudaGraphStep:
    def __init__(self, step_fn, warmup: int = 3):
        self.step_fn, self.warmup, self.calls = step_fn, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_images: torch.Tensor | None = None
        self.static_labels: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.graph is not None:
            # Same shapes every step (the batch contract, docs/design.md); a different one would be a bug.
            self.static_images.copy_(images, non_blocking=True)
            self.static_labels.copy_(labels, non_blocking=True)
            self.graph.replay()
        elif self.calls < self.warmup:
            self._eager_on_side_stream(images, labels)
        else:
            self._capture(images, labels)
        self.calls += 1

    def _eager_on_side_stream(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step_fn(images, labels)
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.static_images = images.clone(memory_format=torch.preserve_format)  # keeps channels_last
        self.static_labels = labels.clone()
        torch.cuda.synchronize()  # sync point: once, before capture
        graph = torch.cuda.CUDAGraph()
        # thread_local: loader threads may allocate pinned memory meanwhile; only this thread's
        # calls must be capture-safe.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.step_fn(self.static_images, self.static_labels)
        self.graph = graph
        graph.replay()  # capture records the step without running it: run it for this batch
        log.info("captured the training step as one CUDA graph after %d eager warm-up steps", self.warmup)


def cudagraph_skips() -> int:
    """How many times inductor silently ran compiled code without its CUDA graphs."""
    from torch._dynamo.utils import counters
    return int(counters["inductor"]["cudagraph_skips"])
